"""The local stack's DynamoDB stream poller, as Lambda's: records its filter drops are read past at once.

Under opens, most of the table's stream is the consumer's own writes (events and counters), which the
events function's filter drops. The poller used to wait a poll interval after every read that left it
nothing to deliver, so the read side spent most of its time asleep with records waiting."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from devstack.handlers import load_handler
from devstack.provision import provision
from devstack.runtime import functions
from devstack.template import Stack
from devstack.triggers import Triggers

WANTED = '{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"type": {"S": ["wanted"]}}}}'
TEMPLATE = {
    "Resources": {
        "Table": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "StreamSpecification": {"StreamViewType": "NEW_IMAGE"},
            },
        },
        "EchoFunction": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "CodeUri": "tests/integration/fixtures/echo",
                "Handler": "app.lambda_handler",
                "Runtime": "python3.13",
                "Events": {
                    "Stream": {
                        "Type": "DynamoDB",
                        "Properties": {
                            "Stream": {"Fn::GetAtt": ["Table", "StreamArn"]},
                            "StartingPosition": "TRIM_HORIZON",
                            "BatchSize": 100,
                            "FilterCriteria": {"Filters": [{"Pattern": WANTED}]},
                        },
                    }
                },
            },
        },
    }
}
POLL_INTERVAL = 60.0  # seconds: longer than the test waits, so one needless wait fails it


@pytest.fixture
def stack(monkeypatch):
    from moto import mock_aws

    monkeypatch.setenv("LOCAL_CONCURRENCY", "1")  # the echo module itself remembers what it received
    with mock_aws():
        yield provision(Stack(name="poller", template=TEMPLATE))


def delivered(echo, marker: str) -> list[str]:
    return [
        record["dynamodb"]["NewImage"]["pk"]["S"]
        for event in echo.RECEIVED
        for record in event.get("Records", [])
        if record.get("eventSource") == "aws:dynamodb" and marker in record["dynamodb"]["NewImage"]["pk"]["S"]
    ]


def test_records_the_filter_drops_are_read_past_without_waiting(stack):
    # GIVEN 350 records the filter drops (more than three batches), then one it wants
    ddb = boto3.client("dynamodb")
    table = stack.ref("Table")
    for n in range(350):
        ddb.put_item(TableName=table, Item={"pk": {"S": f"dropped-{n}"}, "type": {"S": "counter"}})
    ddb.put_item(TableName=table, Item={"pk": {"S": "poller-wanted"}, "type": {"S": "wanted"}})
    echo = load_handler("tests/integration/fixtures/echo")

    # WHEN the poller starts with a poll interval longer than this test waits
    triggers = Triggers(stack, functions(stack), log=print, poll_interval=POLL_INTERVAL)
    triggers.start()
    try:
        deadline = time.monotonic() + 15
        while not delivered(echo, "poller-") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        triggers.stop()

    # THEN the wanted record arrives, alone, without the poller sleeping on the dropped ones
    assert delivered(echo, "poller-") == ["poller-wanted"]
    assert not delivered(echo, "dropped-")
    json.dumps(echo.RECEIVED[-1])


def test_a_batch_holds_every_wanted_record_the_stream_already_has(stack):
    """As Lambda: the poller reads on until the batch is full or the stream has no more, before it
    invokes. Invoking with whatever the first read held made batches of a few records under load."""
    # GIVEN 150 records already in the stream, every other one wanted (75, under the batch size of 100)
    ddb = boto3.client("dynamodb")
    table = stack.ref("Table")
    for n in range(150):
        kind = "wanted" if n % 2 else "counter"
        ddb.put_item(TableName=table, Item={"pk": {"S": f"batch-{n}"}, "type": {"S": kind}})
    echo = load_handler("tests/integration/fixtures/echo")
    already = len(echo.RECEIVED)

    triggers = Triggers(stack, functions(stack), log=print, poll_interval=POLL_INTERVAL)
    triggers.start()
    try:
        deadline = time.monotonic() + 15
        while len(delivered(echo, "batch-")) < 75 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        triggers.stop()

    # THEN they arrive in one invocation, in stream order
    batches = [event for event in echo.RECEIVED[already:] if event.get("Records")]
    assert len(batches) == 1
    assert [r["dynamodb"]["NewImage"]["pk"]["S"] for r in batches[0]["Records"]] == [
        f"batch-{n}" for n in range(1, 150, 2)
    ]
