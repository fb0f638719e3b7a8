"""The privacy controls through the running local stack, over plain HTTP: anonymisation on, one recipient
suppressed, the other opens through the pixel route, then is erased; the stream consumer runs as the
stack drives it."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

DOMAIN = "privacy.example.com"
# The local stack is shared by the whole session: addresses no other test uses.
_RUN = uuid.uuid4().hex[:12]
READER = f"reader.{_RUN}@example.net"
OPTED_OUT = f"opted.out.{_RUN}@example.net"


def eventually(check, *, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.25)


@pytest.fixture(scope="module")
def stack(local_stack):
    local_stack.create_tracked_domain(DOMAIN)
    return local_stack


def everything(stack) -> str:
    """The whole table and every stored object, as one lower-cased text to search."""
    ddb, s3 = stack.client("dynamodb"), stack.client("s3")
    items = [
        item
        for page in ddb.get_paginator("scan").paginate(TableName=stack.resource("DataTable"))
        for item in page["Items"]
    ]
    bucket = stack.resource("MessageBucket")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    bodies = [s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8", "replace") for key in keys]
    return (json.dumps(items) + "\n".join(bodies)).lower()


def test_anonymise_suppress_open_and_erase_end_to_end(stack):
    # GIVEN a domain that anonymises readers' addresses and a recipient who opted out of tracking
    response = stack.call("PUT", f"/v3/domains/{DOMAIN}/tracking/privacy", data={"anonymize_ip": "yes"})
    assert response.status_code == 200 and response.json()["privacy"]["anonymize_ip"] is True
    response = stack.call("POST", f"/v3/{DOMAIN}/tracking-suppressions", data={"address": OPTED_OUT})
    assert response.status_code == 200

    # WHEN a batch goes to both (each copy shows only its own recipient)
    response = stack.call(
        "POST",
        f"/v3/{DOMAIN}/messages",
        data={
            "from": f"news@{DOMAIN}",
            "to": [READER, OPTED_OUT],
            "subject": "hello",
            "html": "<html><body><p>hi</p></body></html>",
            "recipient-variables": json.dumps({READER: {}, OPTED_OUT: {}}),
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["tracking"]["suppressed"] == 1

    # THEN only the reader's copy has a pixel
    ((reader_copy, reader_body),) = stack.copies_of(READER)
    ((opted_copy, opted_body),) = stack.copies_of(OPTED_OUT)
    assert b"/o/" in reader_body and b"/o/" not in opted_body
    assert opted_copy["untracked_reason"] == "recipient-suppressed"

    # WHEN the reader opens it through the pixel route
    token = reader_body.decode().split("/o/", 1)[1].split('"', 1)[0]
    pixel = requests.get(f"{stack.api_url}/o/{token}", timeout=10, verify=stack.verify)
    assert pixel.status_code == 200

    # THEN the open is stored and served with the truncated address only
    def opened() -> list[dict]:
        found = stack.call("GET", f"/v3/{DOMAIN}/events", params={"event": "opened"})
        assert found.status_code == 200
        return found.json()["items"]

    (event,) = eventually(opened)
    assert event["recipient"] == READER
    assert event["ip"] == "127.0.0.0"
    raw = stack.copy_items(reader_copy["pk"].removeprefix("COPY#"), "OPEN#")
    assert [item["ip"]["S"] for item in raw] == ["127.0.0.0"]

    # WHEN the reader asks to be forgotten
    response = stack.call("POST", f"/v3/{DOMAIN}/erasures", data={"address": READER})
    assert response.status_code == 200, response.text
    assert response.json()["complete"] is True
    assert response.json()["erased"]["copies"] == 1

    # THEN nothing about the reader remains in the table or the bucket, and the opted-out copy is kept
    assert READER not in everything(stack)
    assert len(stack.copies_of(OPTED_OUT)) == 1
    assert opened() == []

    # AND lifting the opt-out takes the address in a DELETE body
    response = stack.call("DELETE", f"/v3/{DOMAIN}/tracking-suppressions", data={"address": OPTED_OUT})
    assert response.status_code == 200, response.text
    assert stack.call("GET", f"/v3/{DOMAIN}/tracking-suppressions").json()["items"] == []


def test_privacy_routes_need_the_api_key(stack):
    for method, path in (
        ("GET", f"/v3/domains/{DOMAIN}/tracking/privacy"),
        ("GET", f"/v3/{DOMAIN}/tracking-suppressions"),
        ("POST", f"/v3/{DOMAIN}/erasures"),
    ):
        response = requests.request(method, stack.api_url + path, timeout=10, verify=stack.verify)
        assert response.status_code == 401
        assert set(response.json()) == {"message"}
