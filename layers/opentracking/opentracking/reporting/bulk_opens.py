"""The stream consumer's fast path: a batch's raw opens recorded in a few transactions, not two each.

One by one (consumer.handle_open), an open costs a copy read, one transaction for its event and its "total"
counters and, for a human open, another for the copy's unique marker and "unique" counters: a batch of 100
opens was up to 200 transactions of 4 to 8 items. Here the batch's copies and unique markers are read in
two BatchGetItem calls, and its opens are written in transactions of up to 100 items: every event item
(put only if absent), each copy's unique marker when it has none yet, each counter once with the batch's
sum, and one check per copy that it still exists and is not being erased.

The guarantees are the one-by-one path's, because a transaction is all or nothing and the items are the
same: an event id comes from its raw open's key, so a replayed batch finds its events there and the
transaction is cancelled whole. Whatever the fast path does not finish (a cancelled transaction, an open
whose address must be truncated first, a copy erased or missing, a copy with a click in the same batch,
whose order against the open decides which of them is the unique one) is left to the one-by-one path,
in stream order: after a cancelled transaction, everything after it in the batch is left too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from opentracking.core.config import table_name
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count
from opentracking.privacy import policy
from opentracking.reporting import aggregates, consumer
from opentracking.storage import keys, store
from opentracking.webhooks import delivery

MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit for TransactWriteItems


@dataclass
class _Chunk:
    """One transaction's worth of opens, with the items it writes."""

    opens: list[tuple[str, consumer.PreparedOpen]] = field(default_factory=list)
    markers: dict[str, consumer.PreparedOpen] = field(default_factory=dict)  # copy pk -> its unique open
    counters: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)  # (pk, sk) -> increments
    counter_expiry: dict[tuple[str, str], int] = field(default_factory=dict)
    copies: set[str] = field(default_factory=set)

    def size_with(self, opened: consumer.PreparedOpen, claims_marker: bool) -> int:
        """The transaction's item count once `opened` is added."""
        size = len(self.opens) + len(self.markers) + len(self.counters) + len(self.copies)
        new_counters = sum(1 for key in _counter_keys(opened) if key not in self.counters)
        return size + 1 + int(claims_marker) + new_counters + int(opened.copy_pk not in self.copies)

    def add(self, key: str, opened: consumer.PreparedOpen, claims_marker: bool) -> None:
        self.opens.append((key, opened))
        self.copies.add(opened.copy_pk)
        if claims_marker:
            self.markers[opened.copy_pk] = opened
        for counter in _counter_keys(opened):
            fields = self.counters.setdefault(counter, defaultdict(int))
            fields["opened_total"] += 1
            fields["opened_machine_total"] += 1 if opened.verdict.bot else 0
            fields["opened_unique"] += 1 if claims_marker else 0
            for name, one in aggregates.increments(opened.event, "opened").items():
                fields[name] += one
            if claims_marker:
                for name, one in aggregates.increments(opened.event, "unique_opened").items():
                    fields[name] += one
            self.counter_expiry.setdefault(counter, int(opened.timestamp) + opened.stats_days * 86400)

    def operations(self, table: str) -> list[dict[str, Any]]:
        operations = [consumer.put_if_absent(table, opened.item) for _, opened in self.opens]
        operations += [
            consumer.put_if_absent(table, consumer.unique_marker(m)) for m in self.markers.values()
        ]
        for (pk, sk), fields in self.counters.items():
            key = {"pk": pk, "sk": sk}
            increments = {name: count for name, count in fields.items() if count}  # opened_total >= 1
            operations.append(consumer.counter_update(table, key, increments, self.counter_expiry[(pk, sk)]))
        operations += [consumer.copy_exists(table, copy_pk) for copy_pk in sorted(self.copies)]
        return operations


def _counter_keys(opened: consumer.PreparedOpen) -> list[tuple[str, str]]:
    """The (pk, sk) of each counter item the open adds to: all tags and each of its own, in its shard."""
    shard = consumer.counter_shard(opened.event_id)
    counters = [
        consumer.counter_key(opened.domain, tag, shard, opened.timestamp)
        for tag in [consumer.ALL_TAGS, *opened.tags]
    ]
    return [(key["pk"], key["sk"]) for key in counters]


def record(images: list[tuple[str, dict[str, Any]]], cache: dict[str, Any]) -> set[str]:
    """Record the raw opens among `images` ((record id, new image) in stream order, INSERTs only) in bulk;
    the ids of the records done. `cache`: the batch's copies and settings, shared with
    consumer.handle_image."""
    plain = [(key, consumer.plain_image(image)) for key, image in images]
    clicked = {image["pk"] for _, image in plain if image.get("type") == "click"}
    raw_opens = [(key, image) for key, image in plain if image.get("type") == "open"]
    if len(raw_opens) < 2:
        return set()  # nothing to gain over the one-by-one path
    table = table_name()
    _read_copies(table, [image["pk"] for _, image in raw_opens], cache)

    prepared: list[tuple[str, consumer.PreparedOpen]] = []
    for key, raw in raw_opens:
        copy = cache.get(raw["pk"])
        if (
            copy is None
            or copy.get("erasing")
            or raw["pk"] in clicked
            or consumer.needs_ip_rewrite(raw, copy, cache)
        ):
            break  # the one-by-one path takes it from here, in stream order
        prepared.append((key, consumer.prepare_open(raw, copy, policy.cached(copy["domain"], cache))))
    marked = _copies_with_a_unique_open(table, {o.copy_pk for _, o in prepared if not o.verdict.bot})

    done: set[str] = set()
    chunk = _Chunk()
    for key, opened in prepared:
        claims = not opened.verdict.bot and opened.copy_pk not in marked
        if chunk.opens and chunk.size_with(opened, claims) > MAX_TRANSACTION_ITEMS:
            if not _commit(table, chunk):
                return done
            done.update(k for k, _ in chunk.opens)
            chunk = _Chunk()
            claims = not opened.verdict.bot and opened.copy_pk not in marked
        chunk.add(key, opened, claims)
        if claims:
            marked.add(opened.copy_pk)
    if chunk.opens and _commit(table, chunk):
        done.update(k for k, _ in chunk.opens)
    return done


def _read_copies(table: str, copy_pks: list[str], cache: dict[str, Any]) -> None:
    wanted = sorted({pk for pk in copy_pks if pk not in cache})
    if not wanted:
        return
    found = {item["pk"]: item for item in store.batch_get(table, [keys.copy_key(pk) for pk in wanted])}
    for pk in wanted:
        cache[pk] = found.get(pk)


def _copies_with_a_unique_open(table: str, copy_pks: set[str]) -> set[str]:
    markers = [{"pk": pk, "sk": keys.UNIQUE_OPENED_SK} for pk in sorted(copy_pks)]
    return {item["pk"] for item in store.batch_get(table, markers)} if markers else set()


def _commit(table: str, chunk: _Chunk) -> bool:
    """Write the chunk in one transaction; False when it was cancelled (the one-by-one path decides)."""
    try:
        store.transact_write(chunk.operations(table))
    except store.TransactionCancelled:
        count(Metric.BULK_OPENS_FALLBACK)
        return False
    human = sum(1 for _, o in chunk.opens if not o.verdict.bot)
    if human:
        count(Metric.OPENED_EVENTS, human)
    if len(chunk.opens) - human:
        count(Metric.MACHINE_OPENED_EVENTS, len(chunk.opens) - human)
    if chunk.markers:
        count(Metric.UNIQUE_OPENS, len(chunk.markers))
    for _, opened in chunk.opens:
        delivery.enqueue(opened.domain, opened.event)
    return True
