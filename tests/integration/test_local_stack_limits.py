"""The local stack at Mailgun's limits: one message to 1,000 recipients (Mailgun's documented maximum per
message) is accepted, with every copy stored and tracked, and so is a second one, on a table that already
holds the first (before the fidelity fix, each transaction copied the whole table)."""

from __future__ import annotations

import json
import re

import pytest

from devstack.process import start_stack

DOMAIN = "bulk.example.com"
RECIPIENTS = 1000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    running = start_stack(tmp_path_factory.mktemp("limits"))
    try:
        running.create_tracked_domain(DOMAIN)
        yield running
    finally:
        assert running.stop() == 0, "\n".join(running.output[-40:])


def send(stack, batch: str):
    recipients = [f"reader{n}.{batch}@example.net" for n in range(RECIPIENTS)]
    variables = {address: {"first": f"Reader {n}"} for n, address in enumerate(recipients)}
    return stack.call(
        "POST",
        f"/v3/{DOMAIN}/messages",
        data=[
            ("from", f"News <news@{DOMAIN}>"),
            ("subject", "To everyone"),
            ("html", "<html><body><p>Hello %recipient.first%</p></body></html>"),
            ("o:tag", batch),
            ("o:tracking-opens", "yes"),
            ("recipient-variables", json.dumps(variables)),
        ]
        + [("to", address) for address in recipients],
    )


def copies_of_tag(stack, tag: str) -> list[dict]:
    ddb = stack.client("dynamodb")
    found = []
    for page in ddb.get_paginator("scan").paginate(
        TableName=stack.resource("DataTable"),
        FilterExpression="sk = :copy AND contains(tags, :tag)",
        ExpressionAttributeValues={":copy": {"S": "COPY"}, ":tag": {"S": tag}},
    ):
        found += page["Items"]
    return found


@pytest.mark.parametrize("batch", ["first", "second"])
def test_a_message_to_a_thousand_recipients_is_stored_copy_by_copy(stack, batch):
    # WHEN a message goes to 1,000 recipients (twice: the second on a table that already holds the first)
    response = send(stack, batch)

    # THEN it is queued, with 1,000 tracked copies, each stored in S3
    assert response.status_code == 200, response.text
    assert response.json()["message"] == "Queued. Thank you."
    copies = copies_of_tag(stack, batch)
    assert len(copies) == RECIPIENTS
    assert {item["recipient"]["S"] for item in copies} == {
        f"reader{n}.{batch}@example.net" for n in range(RECIPIENTS)
    }
    assert all(item["tracked"]["BOOL"] for item in copies)
    s3, bucket = stack.client("s3"), stack.resource("MessageBucket")
    keys = {item["s3_key"]["S"] for item in copies}
    assert len(keys) == RECIPIENTS
    sample = sorted(keys)[:: RECIPIENTS // 10]
    for key in sample:
        stored = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert b"/o/" in stored  # its own pixel
        assert re.search(rb"Hello Reader \d+<", stored)  # its own variables
