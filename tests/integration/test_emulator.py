"""The local stack's API Gateway and trigger emulation, checked with a test function and template:
payload 2.0 events, binary round trips, form encodings, route precedence, schedules, streams, queues."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import boto3
import pytest
import requests

from devstack.handlers import load_handler
from devstack.process import free_port
from devstack.server import Config, LocalStack
from devstack.template import Stack
from tests.helpers.polling import wait_for

TEMPLATE = {
    "Globals": {
        "Function": {
            "Runtime": "python3.13",
            "Timeout": 10,
            "Environment": {"Variables": {"TABLE_NAME": {"Ref": "Table"}, "QUEUE_URL": {"Ref": "Queue"}}},
        }
    },
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
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"VisibilityTimeout": 1}},
        "EchoFunction": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "CodeUri": "tests/integration/fixtures/echo",
                "Handler": "app.lambda_handler",
                "MemorySize": 256,
                "Events": {
                    "Get": {"Type": "HttpApi", "Properties": {"Path": "/items/{id}", "Method": "GET"}},
                    "Post": {"Type": "HttpApi", "Properties": {"Path": "/items/{id}", "Method": "POST"}},
                    "Exact": {"Type": "HttpApi", "Properties": {"Path": "/items/special", "Method": "GET"}},
                    "Greedy": {"Type": "HttpApi", "Properties": {"Path": "/files/{path+}", "Method": "GET"}},
                    "Binary": {"Type": "HttpApi", "Properties": {"Path": "/binary", "Method": "POST"}},
                    "Plain": {"Type": "HttpApi", "Properties": {"Path": "/plain", "Method": "GET"}},
                    "Tick": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 hour)"}},
                    "Stream": {
                        "Type": "DynamoDB",
                        "Properties": {
                            "Stream": {"Fn::GetAtt": ["Table", "StreamArn"]},
                            "StartingPosition": "TRIM_HORIZON",
                            "BatchSize": 10,
                        },
                    },
                    "Jobs": {
                        "Type": "SQS",
                        "Properties": {"Queue": {"Fn::GetAtt": ["Queue", "Arn"]}, "BatchSize": 5},
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    saved = dict(os.environ)
    # One instance per function: the tests read what the echo function's module remembered.
    os.environ["LOCAL_CONCURRENCY"] = "1"
    config = Config(
        port=free_port(), aws_port=free_port(), state_file=tmp_path_factory.mktemp("emu") / "s.json"
    )
    stack = LocalStack(config, Stack(name="emulator", template=TEMPLATE))
    stack.start()
    import threading

    threading.Thread(target=stack.serve_forever, daemon=True).start()
    yield stack
    stack.stop()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def echo_module(emulator):
    return load_handler("tests/integration/fixtures/echo")


def echo(emulator, method: str, path: str, **kwargs) -> dict:
    response = requests.request(method, emulator.url + path, timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def test_event_has_the_payload_2_shape(emulator):
    got = echo(
        emulator,
        "GET",
        "/items/42?tag=a&tag=b&empty=&x=%2F",
        headers={"X-Custom": "1", "Cookie": "session=abc; theme=dark", "User-Agent": "probe/1"},
    )
    event = got["event"]
    assert got["function"] == "EchoFunction"
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /items/{id}"
    assert event["rawPath"] == "/items/42"
    assert event["rawQueryString"] == "tag=a&tag=b&empty=&x=%2F"
    assert event["queryStringParameters"] == {"tag": "a,b", "empty": "", "x": "/"}
    assert event["pathParameters"] == {"id": "42"}
    assert event["cookies"] == ["session=abc", "theme=dark"]
    assert event["headers"]["x-custom"] == "1"
    assert "cookie" not in event["headers"]
    http = event["requestContext"]["http"]
    assert http == {
        "method": "GET",
        "path": "/items/42",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "probe/1",
    }
    assert event["requestContext"]["routeKey"] == "GET /items/{id}"
    assert event["requestContext"]["stage"] == "$default"
    assert isinstance(event["requestContext"]["timeEpoch"], int)
    assert event["isBase64Encoded"] is False
    assert "body" not in event


def test_exact_routes_beat_parameters_and_greedy_parameters_take_the_rest(emulator):
    assert echo(emulator, "GET", "/items/special")["event"]["routeKey"] == "GET /items/special"
    greedy = echo(emulator, "GET", "/files/a/b/c.txt")["event"]
    assert greedy["routeKey"] == "GET /files/{path+}"
    assert greedy["pathParameters"] == {"path": "a/b/c.txt"}


@pytest.mark.parametrize(
    ("kwargs", "base64_encoded"),
    [
        ({"json": {"a": 1}}, False),
        ({"data": "plain text", "headers": {"Content-Type": "text/plain"}}, False),
        ({"data": [("to", "a@example.net"), ("to", "b@example.net"), ("o:tag", "x y")]}, True),
        (
            {"files": {"message": ("m.eml", b"\x00\xffbinary", "message/rfc822")}, "data": {"to": "a@b.c"}},
            True,
        ),
    ],
)
def test_bodies_are_base64_encoded_unless_text(emulator, kwargs, base64_encoded):
    prepared = requests.Request("POST", emulator.url + "/items/1", **kwargs).prepare()
    with requests.Session() as session:
        response = session.send(prepared, timeout=10)
    assert response.status_code == 200
    event = response.json()["event"]
    assert event["isBase64Encoded"] is base64_encoded
    body = base64.b64decode(event["body"]) if base64_encoded else event["body"].encode()
    sent = prepared.body if isinstance(prepared.body, bytes) else prepared.body.encode()
    assert body == sent


def test_form_encoding_as_the_sdk_sends_it_keeps_repeated_keys(emulator):
    event = echo(emulator, "POST", "/items/1", data=[("to", "a@example.net"), ("to", "b@example.net")])[
        "event"
    ]
    assert event["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert base64.b64decode(event["body"]) == b"to=a%40example.net&to=b%40example.net"


def test_binary_round_trip_with_cookies(emulator):
    payload = bytes(range(256)) * 10
    response = requests.post(
        emulator.url + "/binary",
        data=payload,
        headers={"Content-Type": "application/octet-stream"},
        timeout=10,
    )
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.content == payload
    assert response.headers["Set-Cookie"] == "a=1, b=2"


def test_handler_without_status_code_is_a_json_200(emulator):
    response = requests.get(emulator.url + "/plain", timeout=10)
    assert (response.status_code, response.json()) == (200, {"hello": "world"})


def test_function_environment_comes_from_the_template(emulator):
    assert os.environ["TABLE_NAME"] == emulator.stack.ref("Table")
    assert os.environ["QUEUE_URL"] == emulator.stack.ref("Queue")


def test_schedule_runs_on_demand(emulator, echo_module):
    before = len([e for e in echo_module.RECEIVED if e.get("source") == "aws.events"])
    response = requests.post(emulator.url + "/_local/schedules/EchoFunction", timeout=10)
    assert response.status_code == 200
    scheduled = [e for e in echo_module.RECEIVED if e.get("source") == "aws.events"]
    assert len(scheduled) == before + 1
    assert scheduled[-1]["detail-type"] == "Scheduled Event"
    assert scheduled[-1]["resources"][0].endswith("EchoFunction-Tick")


def test_dynamodb_stream_records_reach_the_function(emulator, echo_module):
    ddb = boto3.client("dynamodb")
    for key in ("s1", "s2", "s3"):
        ddb.put_item(TableName=emulator.stack.ref("Table"), Item={"pk": {"S": key}, "n": {"N": "1"}})

    def stream_keys():
        return [
            r["dynamodb"]["NewImage"]["pk"]["S"]
            for e in echo_module.RECEIVED
            for r in e.get("Records", [])
            if r.get("eventSource") == "aws:dynamodb"
        ]

    assert wait_for(lambda: {"s1", "s2", "s3"} <= set(stream_keys()))
    record = next(
        r
        for e in echo_module.RECEIVED
        for r in e.get("Records", [])
        if r.get("eventSource") == "aws:dynamodb"
    )
    assert record["eventName"] == "INSERT"
    assert record["eventSourceARN"] == emulator.stack.get_att("Table", "StreamArn")
    json.dumps(record)  # delivered as JSON-safe values, as Lambda delivers them


def test_stream_records_after_a_cancelled_transaction_still_arrive_once(emulator, echo_module):
    # GIVEN records already delivered, then a transaction that is cancelled (moto then puts back a copy of
    # the table, its stream included, and hands the cancelled records' sequence numbers out again)
    ddb = boto3.client("dynamodb")
    table = emulator.stack.ref("Table")
    ddb.put_item(TableName=table, Item={"pk": {"S": "t1"}})

    def delivered(key: str) -> int:
        return sum(
            1
            for e in echo_module.RECEIVED
            for r in e.get("Records", [])
            if r.get("eventSource") == "aws:dynamodb" and r["dynamodb"]["NewImage"]["pk"]["S"] == key
        )

    assert wait_for(lambda: delivered("t1") == 1)
    with pytest.raises(ddb.exceptions.TransactionCanceledException):
        ddb.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": table,
                        "Item": {"pk": {"S": "t1"}},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {"Put": {"TableName": table, "Item": {"pk": {"S": "cancelled"}}}},
            ]
        )
    # WHEN new items are written
    for key in ("t2", "t3"):
        ddb.put_item(TableName=table, Item={"pk": {"S": key}})
    # THEN they reach the function, once each, and nothing earlier is delivered again
    assert wait_for(lambda: delivered("t2") == 1 and delivered("t3") == 1)
    time.sleep(1.5)  # a few more polls
    assert (delivered("t1"), delivered("t2"), delivered("t3")) == (1, 1, 1)


def test_sqs_messages_are_delivered_and_failed_ones_redelivered(emulator, echo_module):
    sqs = boto3.client("sqs")
    queue = emulator.stack.ref("Queue")
    sqs.send_message(QueueUrl=queue, MessageBody="fail-once:retry-me")
    sqs.send_message(QueueUrl=queue, MessageBody="plain")

    def deliveries(body):
        return sum(1 for e in echo_module.RECEIVED for r in e.get("Records", []) if r.get("body") == body)

    # the failed message comes back after its visibility timeout; the other is deleted after one delivery
    assert wait_for(lambda: deliveries("fail-once:retry-me") == 2 and deliveries("plain") == 1)
    assert wait_for(
        lambda: (
            int(
                sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"][
                    "ApproximateNumberOfMessages"
                ]
            )
            == 0
        )
    )
    time.sleep(1.5)
    assert deliveries("plain") == 1


def test_unknown_paths_and_methods_are_404(emulator):
    assert requests.delete(emulator.url + "/items/1", timeout=10).status_code == 404
    assert requests.get(emulator.url + "/nothing", timeout=10).json() == {"message": "Not Found"}


def test_fixture_template_is_separate_from_ours(emulator):
    assert Path(emulator.stack.template["Resources"]["EchoFunction"]["Properties"]["CodeUri"]).name == "echo"
