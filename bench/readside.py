"""Case 5: the read side, against moto server on loopback (a free 127.0.0.1 port, resources provisioned from
template.yaml through AWS_ENDPOINT_URL).

There is no stream consumer yet (a later issue adds the events function), so what exists is measured: the
raw-open write path, i.e. the pixel handler recording opens, as opens per second relative to writing the same
items with a bare BatchWriteItem (25 per request) and a bare PutItem loop through the same endpoint.

Each read-side case is a function in CASES taking the running `ReadSide` (endpoint, stack, environment,
budget) and returning rows and raw figures. The stream consumer is added as one more entry: feed it the
table's stream records for the opens written here and measure records per second and requests per record.
"""

from __future__ import annotations

import contextlib
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_stack(*, tiny: bool) -> Iterator[ReadSide]:
    """moto server on 127.0.0.1 with the template's resources, and the pixel's environment pointing at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    from devstack.provision import provision

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    access_log = logging.getLogger("werkzeug")
    level = access_log.level
    access_log.setLevel(logging.ERROR)  # one line per request otherwise
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        with environment({**BASE_ENV, "AWS_ENDPOINT_URL": endpoint}):
            stack = provision(Stack(name="opentracking-bench"), boto3.session.Session(), endpoint)
        env = {**stack.function_environment(FUNCTION), **BASE_ENV, "AWS_ENDPOINT_URL": endpoint}
        yield ReadSide(endpoint, stack, env, budget_s=0.1 if tiny else 4.0, min_items=10 if tiny else 200)
    finally:
        server.stop()
        access_log.setLevel(level)


def _open_items(count: int, now: float) -> list[dict]:
    """Raw opens as the pixel writes them (DynamoDB wire format), for the bare baselines."""
    from opentracking import pixel, tokens

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
    from opentracking import tokens
    from opentracking.config import settings

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
            "opens_lost": pixel_rate["items"] - stored,
        },
    }


# name -> case; the stream consumer (a later issue) registers here.
CASES: dict[str, Callable[[ReadSide], dict]] = {"raw open writes": raw_open_writes}


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
