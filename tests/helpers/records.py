"""The records Lambda's event sources deliver: SQS messages (the spill and webhook queues)."""

from __future__ import annotations

from typing import Any

DEFAULT_QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:opentracking-local-Queue"


def sqs_record(
    body: str,
    message_id: str = "m-1",
    *,
    queue_arn: str = DEFAULT_QUEUE_ARN,
    receipt_handle: str | None = None,
) -> dict[str, Any]:
    """One record of an SQS batch, as the event source mapping delivers it."""
    return {
        "messageId": message_id,
        "receiptHandle": receipt_handle or f"receipt-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1",
    }


def as_sqs_records(messages: list[dict[str, Any]], queue_arn: str) -> list[dict[str, Any]]:
    """Messages taken from a queue (ReceiveMessage) as the batch its trigger would deliver."""
    return [
        sqs_record(m["Body"], m["MessageId"], queue_arn=queue_arn, receipt_handle=m["ReceiptHandle"])
        for m in messages
    ]
