"""Per-recipient erasure, end to end under moto: submit, open, consume, erase, then scan the table and
every object in the bucket for anything about the address."""

from __future__ import annotations

import json

import boto3
import pytest

from devstack.events import make_http_event, pixel_path
from devstack.handlers import load_handler
from opentracking.privacy import erasure
from opentracking.reporting import consumer

TARGET = "Erased.Person@example.net"
OTHER = "kept@example.net"
ROUTE = "/v3/{domain}/erasures"


@pytest.fixture
def erase(invoke, tracked_domain):
    def call(fields, domain="example.com"):
        return invoke(
            "privacy", "POST", f"/v3/{domain}/erasures", route=ROUTE, params={"domain": domain}, fields=fields
        )

    return call


def items(aws) -> list[dict]:
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))
    response = table.scan()
    found = response["Items"]
    while "LastEvaluatedKey" in response:
        response = table.scan(ExclusiveStartKey=response["LastEvaluatedKey"])
        found += response["Items"]
    return found


def objects(aws) -> dict[str, bytes]:
    s3, bucket = boto3.client("s3"), aws.ref("MessageBucket")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def copies_of(aws, recipient: str) -> list[dict]:
    return [i for i in items(aws) if i["sk"] == "COPY" and i["recipient"].lower() == recipient.lower()]


def token_of(aws, copy: dict) -> str:
    body = boto3.client("s3").get_object(Bucket=aws.ref("MessageBucket"), Key=copy["s3_key"])["Body"].read()
    return body.decode().split("/o/", 1)[1].split('"', 1)[0]


def open_copy(aws, copy: dict, lambda_context, ip="198.51.100.9", token: str | None = None) -> None:
    token = token or token_of(aws, copy)
    event = make_http_event(
        "GET",
        pixel_path(token),
        route_key="GET /o/{token}",
        path_parameters={"token": token},
        headers={"user-agent": "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"},
        source_ip=ip,
    )
    load_handler("functions/pixel").lambda_handler(event, lambda_context)


def mentions(aws, address: str) -> list[str]:
    """Every item and object that mentions the address (case-insensitively), or names an erased copy."""
    needle = address.lower()
    found = [f"item {i['pk']} {i['sk']}" for i in items(aws) if needle in json.dumps(i, default=str).lower()]
    found += [f"object {key}" for key, body in objects(aws).items() if needle.encode() in body.lower()]
    return found


@pytest.fixture
def history(world, aws, lambda_context):
    """Three messages: one to the target alone, a batch (recipient-variables: each copy shows only its
    own recipient) to the target and another recipient, and one to the other recipient alone. Every copy
    opened (the target's twice), the stream consumed."""
    world.send(recipients=TARGET)
    variables = json.dumps({TARGET: {"n": 1}, OTHER: {"n": 2}})
    world.send(recipients=f"{TARGET}, {OTHER}", extra=[("recipient-variables", variables)])
    world.send(recipients=OTHER)
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))
    for copy in copies_of(aws, TARGET) + copies_of(aws, OTHER):
        # accepted an hour ago, so the opens count as human ones (with unique markers)
        table.update_item(
            Key={"pk": copy["pk"], "sk": "COPY"},
            UpdateExpression="SET created_at = :t",
            ExpressionAttributeValues={":t": str(float(copy["created_at"]) - 3600)},
        )
    for copy in copies_of(aws, TARGET):
        open_copy(aws, copy, lambda_context)
        open_copy(aws, copy, lambda_context, ip="203.0.113.7")
    for copy in copies_of(aws, OTHER):
        open_copy(aws, copy, lambda_context)
    world.consume()
    assert mentions(aws, TARGET), "the history must mention the target before erasure"
    return world


def test_erasure_removes_everything_about_the_address_and_nothing_else(history, erase, aws):
    target_copies = {c["pk"] for c in copies_of(aws, TARGET)}
    other_before = [i for i in items(aws) if OTHER in json.dumps(i, default=str)]
    other_objects = {k: v for k, v in objects(aws).items() if OTHER.encode() in v}
    counters_before = history.counters()
    assert len(target_copies) == 2
    assert (counters_before["opened_total"], counters_before["opened_unique"]) == (6, 4)

    status, body = erase([("address", TARGET.upper())])  # addresses match case-insensitively

    assert status == 200
    assert body == {
        "message": "Recipient data has been erased",
        "address": TARGET.upper(),
        "complete": True,
        "erased": {"copies": 2, "objects": 2, "items": body["erased"]["items"], "list_records": 0},
    }
    # copy + accepted event + 2 raw opens + 2 opened events + unique marker + counted marker, per copy
    assert body["erased"]["items"] == 2 * 8
    assert mentions(aws, TARGET) == []
    assert not [i for i in items(aws) if i["pk"] in target_copies]
    # the other recipient keeps everything, and the counters stay the aggregates they were
    assert [i for i in items(aws) if OTHER in json.dumps(i, default=str)] == other_before
    assert {k: v for k, v in objects(aws).items() if OTHER.encode() in v} == other_objects
    assert history.counters() == counters_before


def test_the_events_api_no_longer_returns_the_recipient(history, erase, invoke):
    def recipients() -> set[str]:
        status, body = invoke(
            "api",
            "GET",
            "/v3/example.com/events",
            route="/v3/{domain}/events",
            params={"domain": "example.com"},
        )
        assert status == 200
        return {item["recipient"].lower() for item in body["items"]}

    assert recipients() == {TARGET.lower(), OTHER}
    erase([("address", TARGET)])
    assert recipients() == {OTHER}


def test_erasing_twice_is_harmless(history, erase, aws):
    erase([("address", TARGET)])
    after_first = items(aws)
    status, body = erase([("address", TARGET)])
    assert status == 200
    assert (body["complete"], body["erased"]) == (
        True,
        {"copies": 0, "objects": 0, "items": 0, "list_records": 0},
    )
    assert items(aws) == after_first


def test_an_address_never_seen_erases_nothing(world, erase, aws):
    world.send(recipients=OTHER)
    before = items(aws)
    status, body = erase([("address", "stranger@example.net")])
    assert (status, body["complete"], body["erased"]["copies"]) == (200, True, 0)
    assert items(aws) == before


def test_a_big_erasure_is_done_in_bounded_calls(world, erase, aws, monkeypatch):
    monkeypatch.setattr(erasure, "MAX_COPIES_PER_CALL", 2)
    for _ in range(3):
        world.send(recipients=TARGET)
    status, body = erase([("address", TARGET)])
    assert (status, body["complete"], body["erased"]["copies"]) == (200, False, 2)
    assert body["message"] == "Erasure in progress, call again"
    assert len(copies_of(aws, TARGET)) == 1
    status, body = erase([("address", TARGET)])
    assert (status, body["complete"], body["erased"]["copies"]) == (200, True, 1)
    assert mentions(aws, TARGET) == []


def test_a_failure_half_way_is_finished_by_a_retry(history, erase, aws):
    from opentracking.core.aws import client

    # GIVEN S3 refuses to delete: the copy has been marked, its records are still there
    def fail(**_kwargs):
        raise client("s3").exceptions.ClientError(
            {"Error": {"Code": "ServiceUnavailable", "Message": "x"}}, "DeleteObjects"
        )

    s3 = client("s3")
    s3.meta.events.register("before-call.s3.DeleteObjects", fail)
    status, body = erase([("address", TARGET)])
    assert (status, set(body)) == (503, {"message"})
    assert mentions(aws, TARGET)
    # WHEN S3 is back and the client retries THEN it finishes
    s3.meta.events.unregister("before-call.s3.DeleteObjects", fail)
    status, body = erase([("address", TARGET)])
    assert (status, body["complete"]) == (200, True)
    assert mentions(aws, TARGET) == []


def test_an_open_after_the_erasure_leaves_nothing(world, erase, aws, lambda_context):
    world.send(recipients=TARGET)
    (copy,) = copies_of(aws, TARGET)
    token = token_of(aws, copy)
    world.consume()
    erase([("address", TARGET)])
    # the recipient opens the message they still have in their inbox
    open_copy(aws, copy, lambda_context, token=token)
    assert [i for i in items(aws) if i["pk"] == copy["pk"]]  # the pixel wrote the raw open blindly
    world.consume()
    assert not [i for i in items(aws) if i["pk"] == copy["pk"]]  # the consumer dropped the orphan


def test_the_consumer_writes_nothing_for_a_copy_being_erased(world, aws, lambda_context):
    # GIVEN an erasure has marked the copy (and not yet deleted it) when an open comes through the stream
    world.send(recipients=TARGET)
    (copy,) = copies_of(aws, TARGET)
    world.consume()
    erasure.mark_erasing(aws.ref("DataTable"), copy["pk"])
    open_copy(aws, copy, lambda_context)
    world.consume()
    # THEN no event was derived and the raw open is gone
    partition = [i for i in items(aws) if i["pk"] == copy["pk"]]
    assert {i["sk"].split("#")[0] for i in partition} == {"COPY", "EVENT", "COUNTED"}
    assert not [i for i in partition if i.get("event") == "opened"]


def test_the_consumer_check_catches_an_erasure_that_starts_after_the_join(world, aws, lambda_context):
    # The copy record was read (cached for the batch) before the erasure marked it.
    world.send(recipients=TARGET)
    (copy,) = copies_of(aws, TARGET)
    world.consume()
    open_copy(aws, copy, lambda_context)
    raw = next(i for i in items(aws) if i["pk"] == copy["pk"] and i["sk"].startswith("OPEN#"))
    cache = {copy["pk"]: {k: v for k, v in copy.items()}}
    erasure.mark_erasing(aws.ref("DataTable"), copy["pk"])
    consumer.handle_image(consumer._plain(raw), cache)
    assert not [i for i in items(aws) if i.get("event") == "opened" or i["sk"].startswith("OPEN#")]


@pytest.mark.parametrize(
    "fields",
    [[], [("address", "")], [("address", "nonsense")], [("address", TARGET), ("address", OTHER)]],
)
def test_bad_input_is_a_400_and_erases_nothing(history, erase, aws, fields):
    before = items(aws)
    status, body = erase(fields)
    assert (status, set(body)) == (400, {"message"})
    assert items(aws) == before


def test_unknown_domain_is_a_404(history, erase, aws):
    before = items(aws)
    status, body = erase([("address", TARGET)], domain="nowhere.example")
    assert (status, set(body)) == (404, {"message"})
    assert items(aws) == before


def test_erasure_logs_no_address(history, erase, capsys):
    erase([("address", TARGET)])
    assert TARGET.lower() not in capsys.readouterr().out.lower()


def test_copies_are_indexed_by_a_digest_not_the_address(history, aws):
    for copy in copies_of(aws, TARGET):
        assert copy["gsi2pk"].startswith("RCPT#example.com#")
        assert "@" not in copy["gsi2pk"]
