"""The sender: one send job, one recipient's stored copy through the transport, and its outcome recorded as
Mailgun's `delivered` or `failed` event in the copy's partition (the events API lists it from there).

The guarantee, exactly: a copy whose outcome has been recorded is never sent again, whatever SQS redelivers;
two workers never send one copy at once (a lease on the copy record, claimed with a conditional write);
and a job is acknowledged only after its outcome is recorded, so no copy is lost. The one window for a
second send is a worker that dies after the relay accepted the copy and before the outcome was written
(the lease then expires and a redelivered job sends it again): at least once, with that window only.

A temporary failure (4xx, timeout, dropped connection) is retried on a schedule (DELIVERY_RETRY_SCHEDULE,
seconds between attempts; by default about 8 hours in all) and recorded each time as a `failed` event
with severity `temporary`; when the schedule is spent, the last failure is recorded as permanent, reason
`old` (Mailgun's "Too old").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from opentracking.core import queues
from opentracking.core.config import settings, table_name
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger
from opentracking.delivery import events, smtp
from opentracking.delivery.jobs import QUEUE, DeliveryConfigurationError, SendJob, queue_url
from opentracking.storage import keys, records, store
from opentracking.tracking.tokens import secrets_provider

# Between attempts: 5, 10 and 15 minutes, then 30 minutes, 1, 2 and 4 hours (about 8 hours in all).
DEFAULT_RETRY_SCHEDULE: tuple[int, ...] = (300, 600, 900, 1800, 3600, 7200, 14400)
LEASE_SECONDS = 300  # longer than one send can take (the function's timeout), shorter than SQS visibility
FINAL = ("delivered", "failed")

Transport = Callable[[str, str, bytes], smtp.Reply]


class Result(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"
    WAITING = "waiting"  # a retry that is not due yet, put back with the rest of its delay
    ALREADY_DONE = "already_done"  # the copy's outcome is recorded: a redelivered job
    BUSY = "busy"  # another worker holds the copy's lease and is sending it
    GONE = "gone"  # the copy expired or was erased


@dataclass(frozen=True)
class SenderConfig:
    schedule: tuple[int, ...]
    relay: smtp.Relay


def parse_schedule(text: str) -> tuple[int, ...]:
    try:
        schedule = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise DeliveryConfigurationError(
            "DELIVERY_RETRY_SCHEDULE must be comma-separated whole seconds"
        ) from None
    if any(seconds < 0 for seconds in schedule):
        raise DeliveryConfigurationError("DELIVERY_RETRY_SCHEDULE values must not be negative")
    return schedule


@cache
def sender_config() -> SenderConfig:
    secret_name = os.environ.get("SMTP_CREDENTIALS_SECRET", "").strip()
    credentials = (
        smtp.credentials_from_secret(str(secrets_provider().get(secret_name))) if secret_name else None
    )
    schedule_text = os.environ.get("DELIVERY_RETRY_SCHEDULE", "").strip()
    return SenderConfig(
        schedule=parse_schedule(schedule_text) if schedule_text else DEFAULT_RETRY_SCHEDULE,
        relay=smtp.relay_from_environment(credentials),
    )


def reset_cache() -> None:
    sender_config.cache_clear()


def process(body: str, *, now: Callable[[], float] = time.time, transport: Transport | None = None) -> Result:
    """Send one job's copy, or put the job back until it is due; the outcome is recorded before this
    returns. StorageUnavailable (the job is then redelivered) when the outcome could not be recorded."""
    job = SendJob.from_body(body)
    current = now()
    if job.next_at is not None and job.next_at > current + 1:
        queues.send_one(queue_url(), body, job.next_at - current, what=QUEUE)
        return Result.WAITING
    table = table_name()
    copy = _claim(table, job.copy_pk, current)
    if copy is None:
        return _not_claimed(table, job.copy_pk)
    config = sender_config()
    message = store.get_object(settings().bucket_name, copy["s3_key"])
    send = transport or (lambda sender, recipient, data: smtp.send(config.relay, sender, recipient, data))
    reply = send(job.sender, copy["recipient"], message)
    job = job.tried(current)
    fields = {"copy": job.copy_pk, "attempt": job.attempt, "code": reply.code, "outcome": str(reply.outcome)}
    if reply.outcome is smtp.Outcome.DELIVERED:
        _record(table, copy, events.delivered(copy, job, reply, now()), final="delivered")
        count(Metric.COPIES_DELIVERED)
        logger.info("copy delivered", extra=fields)
        return Result.DELIVERED
    spent = job.attempt > len(config.schedule)
    if reply.outcome is smtp.Outcome.PERMANENT or spent:
        _record(table, copy, events.failed(copy, job, reply, now(), retries_spent=spent), final="failed")
        count(Metric.COPIES_FAILED)
        logger.warning("copy failed", extra=fields)
        return Result.FAILED
    # Temporary: the retry is queued before the failure is recorded, so a crash between the two repeats an
    # attempt, and never loses the copy.
    wait = config.schedule[job.attempt - 1]
    queues.send_one(queue_url(), job.due_at(current + wait).to_body(), wait, what=QUEUE)
    _record(table, copy, events.failed(copy, job, reply, now(), retry_seconds=wait), final=None)
    count(Metric.DELIVERY_RETRIES)
    logger.info("copy delivery deferred", extra={**fields, "retry_in": wait})
    return Result.RETRY_SCHEDULED


def _claim(table: str, copy_pk: str, now: float) -> dict[str, Any] | None:
    """Take the copy's sending lease and read the copy in one call: only while it exists, is not being
    erased, has no outcome, and no other worker holds an unexpired lease. None when any of that fails."""
    return store.update_returning(
        table,
        keys.copy_key(copy_pk),
        {"sending_until": int(now) + LEASE_SECONDS},
        condition="attribute_exists(pk) AND attribute_not_exists(erasing) AND attribute_not_exists(delivery)"
        " AND (attribute_not_exists(sending_until) OR sending_until < :now)",
        condition_values={":now": int(now)},
    )


def _not_claimed(table: str, copy_pk: str) -> Result:
    """Why the lease could not be taken (the rare path: one more read)."""
    copy = store.get_item(table, keys.copy_key(copy_pk))
    if copy is None or copy.get("erasing"):
        count(Metric.SEND_JOB_WITHOUT_COPY)
        return Result.GONE
    return Result.ALREADY_DONE if copy.get("delivery") in FINAL else Result.BUSY


def _record(table: str, copy: dict[str, Any], event: dict[str, Any], *, final: str | None) -> None:
    """The event in the copy's partition and, in the same transaction, the copy's state: its outcome when
    `final`, and the lease released. Nothing is written if the copy went away meanwhile (an erasure)."""
    item = records.event_record(
        copy["pk"],
        event,
        domain=copy["domain"],
        expires_at=int(copy.get("expires_at") or event["timestamp"]),
        recipient=copy["recipient"],
        message_id=copy["message_id"],
        tags=list(copy.get("tags") or []),
    )
    state: dict[str, Any] = {"sending_until": 0, "delivery_attempts": event["delivery-status"]["attempt-no"]}
    if final:
        state["delivery"] = final
    try:
        store.transact_write(
            [
                store.put_operation(table, item, if_absent=True),
                store.update_operation(
                    table,
                    keys.copy_key(copy["pk"]),
                    set_always=state,
                    condition="attribute_exists(pk) AND attribute_not_exists(erasing)",
                ),
            ]
        )
    except store.TransactionCancelled:
        logger.info("outcome not recorded: the copy went away", extra={"copy": copy["pk"]})
