"""The spill queue as its trigger drives it: what the pixel and the redirect parked, and the redrive
function run on it (the pixel's and the click's tests both use these)."""

from __future__ import annotations

import boto3

from devstack.handlers import load_handler
from tests.helpers.records import as_sqs_records


def spilled(stack) -> list[dict]:
    """Drain the spill queue: every waiting message, received once (hidden while the test handles it)."""
    sqs = boto3.client("sqs")
    found: list[dict] = []
    for _ in range(1000):  # bounded: far more rounds than any test spills
        batch = sqs.receive_message(
            QueueUrl=stack.ref("SpillQueue"), MaxNumberOfMessages=10, VisibilityTimeout=300
        ).get("Messages", [])
        if not batch:
            break
        found.extend(batch)
    return found


def redrive(stack, lambda_context, messages: list[dict] | None = None) -> dict:
    """Run the redrive function on the spilled messages, as its SQS trigger would, deleting what succeeded."""
    messages = spilled(stack) if messages is None else messages
    if not messages:
        return {"batchItemFailures": []}  # SQS never invokes with an empty batch
    records = as_sqs_records(messages, stack.get_att("SpillQueue", "Arn"))
    response = load_handler("functions/open_redrive").lambda_handler({"Records": records}, lambda_context)
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    sqs = boto3.client("sqs")
    for m in messages:
        if m["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=stack.ref("SpillQueue"), ReceiptHandle=m["ReceiptHandle"])
    return response
