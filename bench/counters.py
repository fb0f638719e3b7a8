"""Counter design at 100,000 opens a second: a simulation of per-key and per-partition DynamoDB write rates.

A synthetic peak: opens of messages whose popularity follows a Zipf law (big campaigns), sent by domains
whose volume follows a Zipf law (a big sender), tagged from a Zipf-distributed vocabulary (popular tags such
as "newsletter"). Every open writes its raw item (`COPY#{copy}`, random copy ids: spread evenly). Then:

- naive: every open also updates its counters synchronously (domain, each tag, message: `UpdateItem ADD`)
  and indexes its event under `EVENTS#{domain}` (gsi1);
- sharded and batched (what the stream consumer is to do): the DynamoDB stream delivers the raw opens in
  batches per stream shard (one per table partition); each batch adds its counts once per counter key, to
  one of S counter shards (`...#{stream shard mod S}`; readers sum the S items), and the event index key
  carries a shard suffix (`EVENTS#{domain}#{hash(event) mod S_events}`; the events API queries them in
  parallel and merges by time).

One DynamoDB partition, and so one item, takes at most 1,000 write units a second.
"""

from __future__ import annotations

import math
import random
import zlib
from collections import Counter
from itertools import accumulate

from bench.report import row

PARTITION_WCU = 1000
RATE = 100_000
DOMAINS, MESSAGES, TAGS = 2_000, 20_000, 1_000
DOMAIN_ZIPF, MESSAGE_ZIPF, TAG_ZIPF = 1.1, 1.07, 1.2
# The stream consumer: Lambda's DynamoDB stream event source.
BATCH_SIZE = 1_000
BATCH_WINDOW_S = 1.0
PARALLELIZATION = 1  # one concurrent batch per stream shard keeps per-copy order
COUNTER_SHARDS = 8
# Event index shards per domain, a power of two sized to the domain's open rate (kept on the domain item and
# only ever raised): small domains keep one key, the big sender gets enough for INDEX_SHARD_WCU each.
INDEX_SHARD_WCU = 100
MAX_INDEX_SHARDS = 1024
TABLE_UTILISATION = 0.5  # pre-warmed to twice the peak: partitions = total WCU / (1,000 * this)


def _zipf_cumulative(n: int, s: float) -> list[float]:
    return list(accumulate(1 / (k**s) for k in range(1, n + 1)))


def _workload(seconds: float, seed: int):
    """(copy partition, domain, message, tags) per open, in arrival order."""
    rng = random.Random(seed)  # noqa: S311  (a reproducible workload, not a secret)
    domain_weights = _zipf_cumulative(DOMAINS, DOMAIN_ZIPF)
    tag_weights = _zipf_cumulative(TAGS, TAG_ZIPF)
    message_domain = rng.choices(range(DOMAINS), cum_weights=domain_weights, k=MESSAGES)
    message_tags = [
        tuple(sorted(set(rng.choices(range(TAGS), cum_weights=tag_weights, k=rng.randint(0, 3)))))
        for _ in range(MESSAGES)
    ]
    count = int(RATE * seconds)
    messages = rng.choices(range(MESSAGES), cum_weights=_zipf_cumulative(MESSAGES, MESSAGE_ZIPF), k=count)
    return [(rng.getrandbits(32), m, message_domain[m], message_tags[m]) for m in messages]


def _counter_keys(domain: int, message: int, tags: tuple[int, ...]) -> list[str]:
    return [f"DSTAT#{domain}", f"MSTAT#{message}", *(f"TSTAT#{domain}#{tag}" for tag in tags)]


def _partition_rates(key_rates: Counter, partitions: int) -> list[float]:
    """Keys hashed onto partitions (a hot key cannot be split: its partition carries all of it)."""
    per_partition = [0.0] * partitions
    for key, rate in key_rates.items():
        per_partition[zlib.crc32(key.encode()) % partitions] += rate
    return per_partition


def simulate(*, seconds: float = 2.0, seed: int = 20261126) -> dict:
    opens = _workload(seconds, seed)
    count = len(opens)
    # Per open, in both designs: the raw open and the joined "opened" event, both under COPY#{random id},
    # so they spread evenly; the event is also written to gsi1 under its index key.
    spread_wcu = 2 * RATE
    # Stream shards follow the table's partitions; the raw opens alone need this many.
    partitions = max(1, math.ceil(RATE / (PARTITION_WCU * TABLE_UTILISATION)))

    naive_table: Counter = Counter()
    naive_index: Counter = Counter()
    for _copy, message, domain, tags in opens:
        for key in _counter_keys(domain, message, tags):
            naive_table[key] += 1
        naive_index[f"EVENTS#{domain}"] += 1

    # Sharded and batched: stream shard = the raw item's partition; batches of BATCH_SIZE or BATCH_WINDOW_S.
    sharded_table: Counter = Counter()
    sharded_index: Counter = Counter()
    domain_rates = Counter(d for _c, _m, d, _t in opens)
    index_shards = {
        domain: min(MAX_INDEX_SHARDS, 2 ** math.ceil(math.log2(max(1.0, n / seconds / INDEX_SHARD_WCU))))
        for domain, n in domain_rates.items()
    }
    per_shard: dict[int, list[tuple[float, int, int, tuple[int, ...]]]] = {}
    for i, (copy, message, domain, tags) in enumerate(opens):
        per_shard.setdefault(copy % partitions, []).append((i / RATE, message, domain, tags))
        shards = index_shards[domain]
        sharded_index[f"EVENTS#{domain}#{(copy >> 8) % shards}" if shards > 1 else f"EVENTS#{domain}"] += 1
    batches = 0
    for shard, records in per_shard.items():
        suffix = shard % COUNTER_SHARDS
        start = 0
        while start < len(records):
            first = records[start][0]
            end = start
            while (
                end < len(records) and end - start < BATCH_SIZE and records[end][0] - first < BATCH_WINDOW_S
            ):
                end += 1
            touched = {key for _t, m, d, tags in records[start:end] for key in _counter_keys(d, m, tags)}
            for key in touched:
                sharded_table[f"{key}#{suffix}"] += 1
            batches += 1
            start = end

    def rates(counter: Counter) -> Counter:
        return Counter({key: n / seconds for key, n in counter.items()})

    naive_rates, naive_index_rates = rates(naive_table), rates(naive_index)
    sharded_rates, sharded_index_rates = rates(sharded_table), rates(sharded_index)

    def summary(counter_rates: Counter, index_rates: Counter) -> dict:
        hottest_key, hottest = counter_rates.most_common(1)[0]
        hottest_index_key, hottest_index = index_rates.most_common(1)[0]
        table_wcu = spread_wcu + sum(counter_rates.values())
        table_partitions = max(1, math.ceil(table_wcu / (PARTITION_WCU * TABLE_UTILISATION)))
        table = _partition_rates(counter_rates, table_partitions)
        index_partitions = max(1, math.ceil(RATE / (PARTITION_WCU * TABLE_UTILISATION)))
        index = _partition_rates(index_rates, index_partitions)
        return {
            "counter_writes_per_s": round(sum(counter_rates.values())),
            "hottest_counter": hottest_key,
            "hottest_counter_wcu": round(hottest),
            "table_partitions": table_partitions,
            "hottest_partition_wcu": round(max(table) + spread_wcu / table_partitions),
            "hottest_index_key": hottest_index_key,
            "hottest_index_wcu": round(hottest_index),
            "hottest_index_partition_wcu": round(max(index)),
            "table_wcu_per_s": round(table_wcu),
            "index_wcu_per_s": RATE,
            "keys_over_limit": sum(1 for r in counter_rates.values() if r > PARTITION_WCU)
            + sum(1 for r in index_rates.values() if r > PARTITION_WCU),
        }

    top_domain_share = max(domain_rates.values()) / count
    top_message_share = max(Counter(m for _c, m, _d, _t in opens).values()) / count
    return {
        "opens_per_s": RATE,
        "simulated_seconds": seconds,
        "opens": count,
        "stream_shards": partitions,
        "consumer_batches_per_s": round(batches / seconds),
        "top_domain_share": round(top_domain_share, 3),
        "top_message_share": round(top_message_share, 3),
        "parameters": {
            "domains": DOMAINS,
            "messages": MESSAGES,
            "tags": TAGS,
            "zipf": {"domain": DOMAIN_ZIPF, "message": MESSAGE_ZIPF, "tag": TAG_ZIPF},
            "batch_size": BATCH_SIZE,
            "batch_window_s": BATCH_WINDOW_S,
            "parallelization_factor": PARALLELIZATION,
            "counter_shards": COUNTER_SHARDS,
            "index_shard_wcu": INDEX_SHARD_WCU,
            "index_shards_of_the_biggest_domain": max(index_shards.values()),
        },
        "naive": summary(naive_rates, naive_index_rates),
        "sharded": summary(sharded_rates, sharded_index_rates),
    }


def run(*, tiny: bool = False) -> dict:
    result = simulate(seconds=0.2 if tiny else 3.0)
    rows = []
    for design in ("naive", "sharded"):
        figures = result[design]
        label = "naive (per-open counters)" if design == "naive" else "sharded + batched"
        hottest = max(figures["hottest_counter_wcu"], figures["hottest_index_wcu"])
        rows.append(
            row(
                "counters @100k/s",
                f"{label}: hottest key",
                hottest,
                "WCU/s",
                baseline=PARTITION_WCU,
                target=f"<= {PARTITION_WCU} WCU/s" if design == "sharded" else None,
                met=(hottest <= PARTITION_WCU) if design == "sharded" else None,
                note=(
                    f"counter {figures['hottest_counter']} {figures['hottest_counter_wcu']:,}/s, "
                    f"index {figures['hottest_index_key']} {figures['hottest_index_wcu']:,}/s, "
                    f"{figures['keys_over_limit']} key(s) over the limit"
                ),
            )
        )
        rows.append(
            row(
                "counters @100k/s",
                f"{label}: hottest partition, keys hashed at random",
                max(figures["hottest_partition_wcu"], figures["hottest_index_partition_wcu"]),
                "WCU/s",
                baseline=PARTITION_WCU,
                note=(
                    f"table {figures['hottest_partition_wcu']:,}/s "
                    f"of {figures['table_partitions']} partitions, "
                    f"gsi1 {figures['hottest_index_partition_wcu']:,}/s; before any split for heat"
                ),
            )
        )
        rows.append(
            row(
                "counters @100k/s",
                f"{label}: table writes",
                figures["table_wcu_per_s"],
                "WCU/s",
                note=f"plus gsi1 {figures['index_wcu_per_s']:,} WCU/s",
            )
        )
    return {"rows": rows, "raw": result}
