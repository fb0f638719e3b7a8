"""SQS sends shared by the queues' producers (webhook deliveries, send jobs): batches of 10 with the
entries SQS refused sent again, and single messages with a delay (SQS delays stop at 15 minutes, so a
longer wait is a chain of delays that the consumer continues)."""

from __future__ import annotations

import math
import time

from botocore.exceptions import BotoCoreError, ClientError

from opentracking.core.aws import client
from opentracking.core.errors import StorageUnavailable

MAX_DELAY_SECONDS = 900
BATCH_SIZE = 10  # SQS's limit for SendMessageBatch
_SEND_ROUNDS = 3


def send_batch(queue_url: str, bodies: list[str], *, what: str) -> None:
    """Send every body, 10 to a call; StorageUnavailable (saying `what` the queue is) when SQS keeps
    refusing some of them or cannot be reached."""
    sqs = client("sqs", "bulk")
    for start in range(0, len(bodies), BATCH_SIZE):
        pending = {str(index): body for index, body in enumerate(bodies[start : start + BATCH_SIZE])}
        for attempt in range(_SEND_ROUNDS):
            try:
                response = sqs.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": id_, "MessageBody": body} for id_, body in pending.items()],
                )
            except (BotoCoreError, ClientError) as exc:
                raise StorageUnavailable(f"The {what} is unavailable, please retry") from exc
            failed = {entry["Id"] for entry in response.get("Failed") or []}
            pending = {id_: body for id_, body in pending.items() if id_ in failed}
            if not pending:
                break
            time.sleep(0.05 * 2**attempt)
        else:
            raise StorageUnavailable(f"The {what} kept refusing messages, please retry")


def send_one(queue_url: str, body: str, delay: float, *, what: str) -> None:
    """One message, delivered after `delay` seconds (at most 15 minutes)."""
    seconds = max(0, min(MAX_DELAY_SECONDS, math.ceil(delay)))
    try:
        client("sqs").send_message(QueueUrl=queue_url, MessageBody=body, DelaySeconds=seconds)
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable(f"The {what} is unavailable") from exc
