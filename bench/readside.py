"""Case 5: the read side, against moto server on loopback (a free 127.0.0.1 port, resources provisioned from
template.yaml through AWS_ENDPOINT_URL). Every rate is relative to a bare write or read through the same
endpoint in the same run, so moto's own speed divides out as far as it can.

- stream consumer: the events function (functions/events), warm, fed the table's own stream records for a
  bounded sample of raw opens (60 of 15 copies: moto's transactions are slow, and slower as the table
  grows), in the template's batch size; against a bare BatchWriteItem of the event items it wrote, and
  against its own transactions sent bare to a twin table in the same state. A replay stores and counts
  nothing new;
- events API: GET /v3/{domain}/events through the API handler (auth, domain, paging) until the last page,
  against bare Query pages of the same index;
- raw open writes: the pixel handler recording opens, against a bare BatchWriteItem (25 a request) and a
  bare PutItem loop.

Each case is a function in CASES taking the running `ReadSide` (endpoint, stack, budget) and returning rows
and raw figures. moto server runs in this process (its own threads): rates are wall time, and the
consumer's own CPU is this thread's time.
"""

from __future__ import annotations

import contextlib
import cProfile
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bench import stubs
from bench.env import BASE_ENV, captured_output, environment, lambda_context
from bench.pixel import pixel_event
from bench.report import row
from devstack.template import Stack

FUNCTION = "PixelFunction"


@dataclass
class ReadSide:
    endpoint: str
    stack: Stack
    env: dict[str, str]
    budget_s: float
    min_items: int
    sample_opens: int  # raw opens the stream consumer processes (bounded: moto transactions are slow)
    sample_copies: int  # the message copies they belong to (repeat opens of a copy are not unique)
    profiles: dict[str, cProfile.Profile] | None = None  # set by bench.profiles: cProfile the timed loops

    def function_env(self, logical_id: str) -> dict[str, str]:
        return {**self.stack.function_environment(logical_id), **BASE_ENV, "AWS_ENDPOINT_URL": self.endpoint}


@contextlib.contextmanager
def _profiled(side: ReadSide, name: str) -> Iterator[None]:
    """cProfile what runs inside, when bench.profiles asked for it (this thread only: not moto server's)."""
    if side.profiles is None:
        yield
        return
    profiler = side.profiles.setdefault(name, cProfile.Profile())
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_stack(*, tiny: bool) -> Iterator[ReadSide]:
    """moto server on 127.0.0.1 with the template's resources, and the pixel's environment pointing at it."""
    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    from devstack.provision import provision

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    access_log = logging.getLogger("werkzeug")
    level = access_log.level
    access_log.setLevel(logging.ERROR)  # one line per request otherwise
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its state per process, not per server: start from nothing (a second stack in one run)
    requests.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()
    try:
        with environment({**BASE_ENV, "AWS_ENDPOINT_URL": endpoint}):
            stack = provision(Stack(name="opentracking-bench"), boto3.session.Session(), endpoint)
        env = {**stack.function_environment(FUNCTION), **BASE_ENV, "AWS_ENDPOINT_URL": endpoint}
        yield ReadSide(
            endpoint,
            stack,
            env,
            budget_s=0.1 if tiny else 4.0,
            min_items=10 if tiny else 200,
            sample_opens=12 if tiny else 60,
            sample_copies=4 if tiny else 15,
        )
    finally:
        server.stop()
        access_log.setLevel(level)


def _open_items(count: int, now: float) -> list[dict]:
    """Raw opens as the pixel writes them (DynamoDB wire format), for the bare baselines."""
    from opentracking.tracking import pixel, tokens

    return [
        pixel.open_item(
            tokens.OpenClaims(copy_id=f"{i:032x}", domain=stubs.BENCH_DOMAIN, key_id=1),
            request_id=f"bench{i:015d}",
            source_ip="198.51.100.7",
            user_agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15",
            method="GET",
            expires_at=int(now) + 30 * 86400,
            now=now,
        )
        for i in range(count)
    ]


def _rate(call: Callable[[int], int], *, budget_s: float, min_items: int) -> dict:
    """Items per second of call(i) -> items written, run until budget and minimum are both reached."""
    done = 0
    started = time.perf_counter()
    i = 0
    while done < min_items or time.perf_counter() - started < budget_s:
        done += call(i)
        i += 1
    elapsed = time.perf_counter() - started
    return {"items": done, "seconds": elapsed, "per_second": done / elapsed}


def raw_open_writes(side: ReadSide) -> dict:
    import boto3

    from devstack.handlers import load_handler
    from opentracking.core.config import settings
    from opentracking.tracking import tokens

    with environment(side.env), stubs.AwsStub(answer=False) as counter, captured_output():
        handler = load_handler("functions/pixel")
        context = lambda_context(side.stack, FUNCTION)
        keyring = tokens.load_keyring(settings().token_secret_name, profile="pixel")
        table = settings().table_name
        events = [
            pixel_event(tokens.issue_token(keyring, i.to_bytes(16, "big"), stubs.BENCH_DOMAIN))
            for i in range(64)
        ]
        handler.lambda_handler(events[0], context)  # warm: key ring fetched, client connected
        counter.reset()

        def open_once(i: int) -> int:
            event = events[i % len(events)]
            event["requestContext"]["requestId"] = f"bench-{i:012d}"
            handler.lambda_handler(event, context)
            return 1

        pixel_rate = _rate(open_once, budget_s=side.budget_s, min_items=side.min_items)
        requests = counter.snapshot()
        ddb = boto3.client("dynamodb")
        items = _open_items(max(side.min_items, 25), time.time())

        def put_once(i: int) -> int:
            ddb.put_item(TableName=table, Item=items[i % len(items)])
            return 1

        def batch_once(i: int) -> int:
            start = (i * 25) % (len(items) - 24)
            batch = items[start : start + 25]
            ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": item}} for item in batch]})
            return len(batch)

        put_once(0), batch_once(0)  # warm: the plain client's connection
        put_rate = _rate(put_once, budget_s=side.budget_s, min_items=side.min_items)
        batch_rate = _rate(batch_once, budget_s=side.budget_s, min_items=side.min_items)
        # Every open the pixel answered is in the table (its request ids are ours: "bench-...").
        stored = sum(
            page["Count"]
            for page in ddb.get_paginator("scan").paginate(
                TableName=table,
                Select="COUNT",
                FilterExpression="contains(sk, :rid)",
                ExpressionAttributeValues={":rid": {"S": "#bench-"}},
            )
        )

    return {
        "rows": [
            row(
                "read side",
                "raw-open writes through the pixel (moto server)",
                pixel_rate["per_second"],
                "opens/s",
                baseline=batch_rate["per_second"],
                note=f"baseline: bare BatchWriteItem of 25, {requests['api_calls'] / pixel_rate['items']:g} "
                f"request(s) per open",
            ),
            row(
                "read side",
                "raw-open writes vs a bare PutItem loop",
                pixel_rate["per_second"],
                "opens/s",
                baseline=put_rate["per_second"],
            ),
        ],
        "raw": {
            "pixel": pixel_rate,
            "bare_put_item": put_rate,
            "bare_batch_write": batch_rate,
            "pixel_requests": requests,
            "opens_recorded": stored,
            # The pixel spills an open whose write took longer than its 0.2 s read timeout (a loaded moto
            # server can); the redrive writes it later, so a spilled open is kept, not lost.
            "opens_spilled": requests["by_operation"].get("sqs.SendMessage", 0),
            "opens_lost": max(
                pixel_rate["items"] - stored - requests["by_operation"].get("sqs.SendMessage", 0), 0
            ),
        },
    }


# --------------------------------------------------------------------------------------
# The stream consumer and the events API
# --------------------------------------------------------------------------------------

# Opens of every kind the consumer tells apart: people (Outlook, iOS Mail, Gmail's proxy), Apple's proxy (by
# address, and by its bare agent), a scanner's HEAD.
SAMPLE_LOADS = [
    ("GET", "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)", "198.51.100.7"),
    (
        "GET",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148",
        "203.0.113.20",
    ),
    (
        "GET",
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        "66.249.84.1",
    ),
    ("GET", "Mozilla/5.0", "17.58.63.1"),
    ("GET", "Mozilla/5.0", "198.51.100.44"),
    ("HEAD", "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)", "198.51.100.8"),
]
SAMPLE_TAG = "newsletter"
WARM_DOMAIN = "warm-up.example.org"
WARM_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0"
REPLAYED_RECORDS = 20


def _sample_copy_ids(count: int) -> list[str]:
    # Far from the ids raw_open_writes uses (0..63), so its opens (which have no copy records) stay out.
    return [f"{0xB0B0_0000 + i:032x}" for i in range(count)]


def _copy_item(copy_id: str, index: int, created_at: float) -> dict:
    """A copy record as the submission stores it (opentracking.messages.submission.store_submission)."""
    from opentracking.storage import store

    recipient = f"reader{index:04d}@example.net"
    return store.serialize(
        {
            "pk": f"COPY#{copy_id}",
            "sk": "COPY",
            "gsi1pk": f"COPIES#{stubs.BENCH_DOMAIN}#bench-read@{stubs.BENCH_DOMAIN}",
            "gsi1sk": recipient,
            "type": "copy",
            "s3_key": f"messages/{stubs.BENCH_DOMAIN}/bench/{copy_id}.eml",
            "tracked": True,
            "created_at": str(created_at),
            "domain": stubs.BENCH_DOMAIN,
            "submission_id": "bench-read",
            "message_id": f"bench-read@{stubs.BENCH_DOMAIN}",
            "recipient": recipient,
            "recipient_domain": "example.net",
            "tags": [SAMPLE_TAG],
            "user_variables": '{"plan": "pro"}',
            "expires_at": int(created_at) + 30 * 86400,
        }
    )


def _batch_write(ddb, table: str, items: list[dict]) -> None:
    for start in range(0, len(items), 25):
        request = {table: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]}
        for _ in range(10):  # bounded: moto does not throttle, but unprocessed items are retried as AWS asks
            request = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
            if not request:
                break


def _stream_batches(side: ReadSide, pks: set[str], batch_size: int) -> list[dict]:
    """The stream records of the sample's raw opens, in Lambda's event shape, cut in the template's batches
    (the template's filter passes raw opens and accepted events; only raw opens are in the sample)."""
    from devstack.streams import read_all

    records = [
        record
        for record in read_all(side.stack.get_att("DataTable", "StreamArn"))["Records"]
        if record["eventName"] == "INSERT"
        and record["dynamodb"]["NewImage"].get("type", {}).get("S") == "open"
        and record["dynamodb"]["NewImage"]["pk"]["S"] in pks
    ]
    return [{"Records": records[i : i + batch_size]} for i in range(0, len(records), batch_size)]


def _opened_items(ddb, table: str) -> list[dict]:
    """The opened events the consumer stored, through the events index."""
    items: list[dict] = []
    request = {
        "TableName": table,
        "IndexName": "gsi1",
        "KeyConditionExpression": "gsi1pk = :pk",
        "FilterExpression": "#event = :opened",
        "ExpressionAttributeNames": {"#event": "event"},
        "ExpressionAttributeValues": {
            ":pk": {"S": f"EVENTS#{stubs.BENCH_DOMAIN}"},
            ":opened": {"S": "opened"},
        },
    }
    for _ in range(1000):  # bounded paging
        page = ddb.query(**request)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return items


def _write_units(transactions: list[list[dict]]) -> dict[str, int]:
    """Write units of the consumer's transactions as DynamoDB bills them: twice the item's KB for a
    transactional write, and once more for gsi1 (it projects ALL) when the item is indexed. Counter and tag
    updates touch items well under 1 KB. Cancelled transactions are counted too (an upper bound)."""
    from bench.cost import item_bytes, write_units

    table = index = 0
    for operations in transactions:
        for operation in operations:
            ((kind, body),) = operation.items()
            if kind == "Put":
                size = item_bytes(body["Item"])
                table += write_units(size, transactional=True)
                index += write_units(size) if "gsi1pk" in body["Item"] else 0
            else:
                table += write_units(1, transactional=True)
    return {"table": table, "gsi1": index}


def _item_sizes(items: list[dict]) -> list[int]:
    from bench.cost import item_bytes

    return [item_bytes(item) for item in items]


def _all_items(ddb, table: str) -> list[dict]:
    items: list[dict] = []
    request: dict = {"TableName": table}
    for _ in range(1000):  # bounded paging
        page = ddb.scan(**request)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return items


def _create_twin(ddb, stack: Stack, name: str) -> None:
    """A table with DataTable's keys and indexes from the template (no stream: nothing consumes it)."""
    props = stack.resources["DataTable"]["Properties"]
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        BillingMode=props["BillingMode"],
        GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
    )


def _counter_totals(ddb, table: str) -> dict[str, int]:
    """The bench domain's counters, every shard and hour summed (what the stats API would add up)."""
    from opentracking.reporting.consumer import ALL_TAGS, SHARDS

    totals: dict[str, int] = {}
    for shard in range(SHARDS):
        for item in ddb.query(
            TableName=table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"STATS#{stubs.BENCH_DOMAIN}#{ALL_TAGS}#{shard}"}},
        )["Items"]:
            for name, value in item.items():
                if name.startswith(("opened_", "accepted_")):
                    totals[name] = totals.get(name, 0) + int(value["N"])
    return dict(sorted(totals.items()))


def _stream_batch_size(stack: Stack) -> int:
    events = stack.functions()["EventsFunction"]["Properties"]["Events"]
    return int(
        next(e for e in events.values() if e["Type"] == "DynamoDB")["Properties"].get("BatchSize", 100)
    )


def stream_consumer_and_events_api(side: ReadSide) -> dict:
    import boto3

    from devstack.handlers import load_handler
    from opentracking.core.config import settings
    from opentracking.tracking import pixel, tokens

    now = time.time()
    copy_ids = _sample_copy_ids(side.sample_copies)
    batch_size = _stream_batch_size(side.stack)
    # GIVEN copies accepted an hour ago, and raw opens of them as the pixel writes them
    with environment(side.function_env("EventsFunction")), captured_output():
        table = settings().table_name
        ddb = boto3.client("dynamodb")
        _batch_write(ddb, table, [_copy_item(c, i, now - 3600) for i, c in enumerate(copy_ids)])
        opens = []
        for i in range(side.sample_opens):
            method, agent, ip = SAMPLE_LOADS[i % len(SAMPLE_LOADS)]
            claims = tokens.OpenClaims(
                copy_id=copy_ids[i % len(copy_ids)], domain=stubs.BENCH_DOMAIN, key_id=1
            )
            opens.append(
                pixel.open_item(
                    claims,
                    request_id=f"sample-{i:06d}",  # not "bench-...": raw_open_writes counts those
                    source_ip=ip,
                    user_agent=agent,
                    method=method,
                    expires_at=int(now) + 30 * 86400,
                    now=now - 1800 + i * 0.01,
                )
            )
        # one open of another domain's copy warms the consumer first (a warm container: ua-parser's rules
        # compiled, Apple's ranges loaded) without touching the bench domain's events and counters
        warm_copy = f"{0xBEEF:032x}"
        _batch_write(ddb, table, [{**_copy_item(warm_copy, 0, now - 3600), "domain": {"S": WARM_DOMAIN}}])
        _batch_write(ddb, table, opens)
        warm_claims = tokens.OpenClaims(copy_id=warm_copy, domain=WARM_DOMAIN, key_id=1)
        warm_load = {
            "request_id": "warm",
            "source_ip": "192.0.2.1",
            "user_agent": WARM_AGENT,
            "method": "GET",
        }
        warm_open = pixel.open_item(warm_claims, **warm_load, expires_at=int(now) + 86400, now=now - 1800)
        _batch_write(ddb, table, [warm_open])
        (warm_batch,) = _stream_batches(side, {f"COPY#{warm_copy}"}, batch_size)
        batches = _stream_batches(side, {f"COPY#{c}" for c in copy_ids}, batch_size)
        records = sum(len(b["Records"]) for b in batches)

    # WHEN the events function consumes them, batch by batch, as Lambda would deliver them
    with (
        environment(side.function_env("EventsFunction")),
        stubs.AwsStub(answer=False, record=frozenset({"TransactWriteItems"})) as counter,
        captured_output(),
    ):
        handler = load_handler("functions/events")
        context = lambda_context(side.stack, "EventsFunction")
        assert handler.lambda_handler(warm_batch, context) == {"batchItemFailures": []}
        # a twin of the table in the same state, for the bare replay of the consumer's transactions: moto
        # deep-copies a table for every operation of a transaction, so both must start equal and grow alike
        ddb = boto3.client("dynamodb")
        twin = f"{table}-baseline"
        snapshot = _all_items(ddb, table)
        _create_twin(ddb, side.stack, twin)
        _batch_write(ddb, twin, snapshot)
        counter.reset()
        failures = 0
        started, cpu_started = time.perf_counter(), time.thread_time()
        with _profiled(side, "stream consumer"):
            for batch in batches:
                failures += len(handler.lambda_handler(batch, context)["batchItemFailures"])
        consume_s = time.perf_counter() - started
        # this thread's CPU: the consumer and botocore, not moto server (its own threads)
        consume_cpu_s = time.thread_time() - cpu_started
        consumer_requests = counter.snapshot()
        transactions = [json.loads(json.dumps(params["TransactItems"])) for _, _, params in counter.recorded]
        units = _write_units(transactions)
        stored = _opened_items(boto3.client("dynamodb"), settings().table_name)
        counted = _counter_totals(boto3.client("dynamodb"), settings().table_name)
        # a replay (streams deliver at least once) must store and count nothing new; part of the first
        # batch is enough to show it, and keeps the case short
        replayed = {"Records": batches[0]["Records"][:REPLAYED_RECORDS]}
        counter.reset()
        started = time.perf_counter()
        handler.lambda_handler(replayed, context)
        replay_s = time.perf_counter() - started
        replay_requests = counter.snapshot()
        after_replay = len(_opened_items(boto3.client("dynamodb"), settings().table_name))
        counted_after_replay = _counter_totals(boto3.client("dynamodb"), settings().table_name)

        # THE BASELINE: a bare BatchWriteItem of the same event items, under other keys
        ddb = boto3.client("dynamodb")
        copies = [{**item, "pk": {"S": "BASELINE#" + item["pk"]["S"]}} for item in stored]
        for item in copies:
            item.pop("gsi1pk", None)  # kept out of the events index the API reads next
        started = time.perf_counter()
        _batch_write(ddb, settings().table_name, copies)
        bare_write_s = time.perf_counter() - started

        # AND the same transactions the consumer made, sent bare to the twin table: what is left between the
        # two is the consumer's own work (joining, classifying, parsing user agents, shaping the event)
        for operations in transactions:
            for operation in operations:
                (body,) = operation.values()
                body["TableName"] = twin
        cancelled = 0
        started = time.perf_counter()
        for operations in transactions:
            try:
                ddb.transact_write_items(TransactItems=operations)
            except ddb.exceptions.TransactionCanceledException:
                cancelled += 1  # as the consumer's were: a copy's second human open finds its unique marker
        bare_transact_s = time.perf_counter() - started

    api = events_api(side, expected=len(stored))
    consumer_rate = records / consume_s
    bare_rate = len(copies) / bare_write_s if copies else 0.0
    by_operation = consumer_requests["by_operation"]
    per_record = {op: round(n / records, 3) for op, n in sorted(by_operation.items())}
    rows = [
        row(
            "read side",
            f"stream consumer: raw opens -> opened events ({records} records, batches of {batch_size})",
            consumer_rate,
            "records/s",
            baseline=bare_rate,
            note="baseline: bare BatchWriteItem of the same event items; "
            f"{consumer_requests['api_calls'] / records:.2f} requests per record",
        ),
        row(
            "read side",
            "stream consumer vs the same transactions sent bare",
            consumer_rate,
            "records/s",
            baseline=records / bare_transact_s,
            note=f"baseline: its {len(transactions)} TransactWriteItems, bare, on a twin table; "
            f"consumer CPU {consume_cpu_s / records * 1000:.2f} ms per record",
        ),
        *api["rows"],
    ]
    return {
        "rows": rows,
        "raw": {
            "records": records,
            "batches": len(batches),
            "batch_size": batch_size,
            "copies": len(copy_ids),
            "table_items_before": len(snapshot),
            "consumer": {
                "seconds": consume_s,
                "per_second": consumer_rate,
                "failures": failures,
                "cpu_s": consume_cpu_s,
                "cpu_ms_per_record": consume_cpu_s / records * 1000,
            },
            "consumer_requests": consumer_requests,
            "requests_per_record": per_record,
            "write_units": units,
            "write_units_per_record": (units["table"] + units["gsi1"]) / records,
            "event_item_bytes": max(_item_sizes(stored)),
            "events_stored": len(stored),
            "events_after_replay": after_replay,
            "counters": counted,
            "counters_after_replay": counted_after_replay,
            "replay": {
                "records": len(replayed["Records"]),
                "seconds": replay_s,
                "requests": replay_requests,
            },
            "bare_batch_write": {"items": len(copies), "seconds": bare_write_s, "per_second": bare_rate},
            "bare_transactions": {
                "transactions": len(transactions),
                "cancelled": cancelled,
                "seconds": bare_transact_s,
                "records_per_second": records / bare_transact_s,
            },
            "events_api": api["raw"],
        },
    }


def events_api(side: ReadSide, *, expected: int) -> dict:
    """Every opened event of the bench domain through GET /v3/{domain}/events, page by page, against bare
    Query pages of the same index."""
    import base64
    from urllib.parse import urlsplit

    import boto3

    from devstack.events import make_http_event
    from devstack.handlers import load_handler
    from opentracking.core.config import settings

    limit = 100 if expected > 100 else max(1, expected // 3)  # several pages, as a client reads them
    with environment(side.function_env("ApiFunction")), captured_output():
        ddb = boto3.client("dynamodb")
        table = settings().table_name
        ddb.put_item(TableName=table, Item=stubs.DOMAIN_ITEM)
        secret = boto3.client("secretsmanager").get_secret_value(SecretId=settings().api_keys_secret_name)
        key = json.loads(secret["SecretString"])["account"]
    authorization = "Basic " + base64.b64encode(f"api:{key}".encode()).decode()

    def get(path: str, route: str, params: dict, query: str) -> dict:
        event = make_http_event(
            "GET",
            path,
            route_key=f"GET {route}",
            path_parameters=params,
            query=query,
            headers={"authorization": authorization, "host": "api.example.test"},
        )
        response = handler.lambda_handler(event, context)
        assert response["statusCode"] == 200, response
        return json.loads(response["body"])

    with (
        environment(side.function_env("ApiFunction")),
        stubs.AwsStub(answer=False) as counter,
        captured_output(),
    ):
        handler = load_handler("functions/api")
        context = lambda_context(side.stack, "ApiFunction")
        domain = stubs.BENCH_DOMAIN
        get(f"/v3/{domain}/events", "/v3/{domain}/events", {"domain": domain}, "limit=1")  # warm: key, domain
        counter.reset()
        listed, pages = 0, 0
        started = time.perf_counter()
        with _profiled(side, "events API"):
            page = get(
                f"/v3/{domain}/events",
                "/v3/{domain}/events",
                {"domain": domain},
                f"event=opened&limit={limit}",
            )
            for _ in range(1000):  # bounded: a page past the last is empty
                pages += 1
                listed += len(page["items"])
                if not page["items"]:
                    break
                path = urlsplit(page["paging"]["next"]).path
                token = path.rsplit("/", 1)[1]
                page = get(path, "/v3/{domain}/events/{page}", {"domain": domain, "page": token}, "")
        api_s = time.perf_counter() - started
        api_requests = counter.snapshot()

        # THE BASELINE: the same index read with bare Query pages of the same size
        ddb = boto3.client("dynamodb")
        request = {
            "TableName": settings().table_name,
            "IndexName": "gsi1",
            "KeyConditionExpression": "gsi1pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"EVENTS#{domain}"}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        bare_items = 0
        started = time.perf_counter()
        for _ in range(1000):
            response = ddb.query(**request)
            bare_items += len(response["Items"])
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        bare_s = time.perf_counter() - started

    api_rate = listed / api_s
    bare_rate = bare_items / bare_s
    return {
        "rows": [
            row(
                "read side",
                f"events API: GET /v3/{{domain}}/events, {listed} events in pages of {limit}",
                api_rate,
                "events/s",
                baseline=bare_rate,
                note=f"baseline: bare Query pages of the index; {pages} API calls, "
                f"{api_requests['api_calls']} AWS requests",
            )
        ],
        "raw": {
            "limit": limit,
            "pages": pages,
            "events_listed": listed,
            "events_expected": expected,
            "seconds": api_s,
            "per_second": api_rate,
            "requests": api_requests,
            "bare_query": {"items": bare_items, "seconds": bare_s, "per_second": bare_rate},
        },
    }


# name -> case, run in this order against one moto server. The consumer goes first: moto deep-copies a
# whole table for every operation of a transaction (its rollback), so its transactions slow down as the
# table grows, and the raw-open case writes thousands of items.
CASES: dict[str, Callable[[ReadSide], dict]] = {
    "stream consumer": stream_consumer_and_events_api,
    "raw open writes": raw_open_writes,
}


def profile(*, tiny: bool = False) -> dict[str, cProfile.Profile]:
    """cProfile of the stream consumer and the events API over a sample of opens (bench.profiles)."""
    with moto_stack(tiny=tiny) as side:
        side.profiles = {}
        stream_consumer_and_events_api(side)
        return side.profiles


def run(*, tiny: bool = False) -> dict:
    rows: list[dict] = []
    raw: dict[str, dict] = {}
    with moto_stack(tiny=tiny) as side:
        raw["endpoint"] = side.endpoint
        for name, case in CASES.items():
            result = case(side)
            rows += result["rows"]
            raw[name] = result["raw"]
    return {"rows": rows, "raw": raw}
