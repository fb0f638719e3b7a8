"""The sender: one send job, one recipient's stored copy through the transport, and its outcome recorded as
Mailgun's `delivered` or `failed` event in the copy's partition (the events API lists it from there).

The guarantee, exactly: a copy whose outcome has been recorded is never sent again, whatever SQS redelivers;
two workers never send one copy at once (a lease on the copy record, claimed with a conditional write);
each attempt is made once (the claim names the attempt, so a duplicated job for an attempt already made is
refused); and a job is acknowledged only after its outcome is recorded, so no copy is lost. The one window
for a second send is a worker that dies after the transport took the copy and before that was written (the
lease then expires and the redelivered job sends it again): at least once, with that window only.

With SMTP the relay's answer is the outcome. With SES the answer is a handoff: the copy is marked `sent`,
and SES's own events decide it later (opentracking.delivery.ses_events, through the same `settle`).

A temporary failure (4xx, timeout, dropped connection; with SES, a transient bounce) is retried on a
schedule (DELIVERY_RETRY_SCHEDULE, seconds between attempts; by default about 8 hours in all) and recorded
each time as a `failed` event with severity `temporary`; when the schedule is spent, the last failure is
recorded as permanent, reason `old` (Mailgun's "Too old"). A throttled call (SES's send rate) is neither:
the job comes back after a growing, jittered pause, and the attempt is made again as if it never started.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cache
from typing import Any

from opentracking.core import queues
from opentracking.core.config import table_name
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger
from opentracking.delivery import events, jobs, ses, smtp, suppression_lists
from opentracking.delivery.jobs import QUEUE, DeliveryConfigurationError, SendJob, queue_url
from opentracking.delivery.replies import Outcome, Reply
from opentracking.messages import copies
from opentracking.storage import keys, records, store
from opentracking.tracking.tokens import secrets_provider

# Between attempts: 5, 10 and 15 minutes, then 30 minutes, 1, 2 and 4 hours (about 8 hours in all).
DEFAULT_RETRY_SCHEDULE: tuple[int, ...] = (300, 600, 900, 1800, 3600, 7200, 14400)
LEASE_SECONDS = 300  # longer than one send can take (the function's timeout), shorter than SQS visibility
THROTTLE_BASE_SECONDS = 2
THROTTLE_MAX_SECONDS = 900  # SQS's longest delay
SENT = "sent"  # handed to a transport that reports the outcome later (SES); a final outcome follows
FINAL = ("delivered", "failed")
MISSING_COPY_CODE = 550
MISSING_COPY = "The stored copy is gone (expired or removed) before it could be sent; nothing was sent"
# The copy may take an outcome: it exists, is not being erased, and has none yet (or was only handed off).
OPEN = "attribute_exists(pk) AND attribute_not_exists(erasing)"
UNDECIDED = f"{OPEN} AND (attribute_not_exists(delivery) OR delivery = :sent)"

Transport = Callable[[str, str, bytes], Reply]


class Result(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    SENT = "sent"  # handed to SES; its events say what happened
    RETRY_SCHEDULED = "retry_scheduled"
    THROTTLED = "throttled"  # the transport asked us to slow down: the job comes back soon
    WAITING = "waiting"  # a retry that is not due yet, put back with the rest of its delay
    ALREADY_DONE = "already_done"  # the copy's outcome is recorded, or this attempt was made: a duplicate
    BUSY = "busy"  # another worker holds the copy's lease and is sending it
    GONE = "gone"  # the copy expired or was erased


@dataclass(frozen=True)
class SenderConfig:
    schedule: tuple[int, ...]


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
    schedule_text = os.environ.get("DELIVERY_RETRY_SCHEDULE", "").strip()
    return SenderConfig(schedule=parse_schedule(schedule_text) if schedule_text else DEFAULT_RETRY_SCHEDULE)


@cache
def relay() -> smtp.Relay:
    secret_name = os.environ.get("SMTP_CREDENTIALS_SECRET", "").strip()
    credentials = (
        smtp.credentials_from_secret(str(secrets_provider().get(secret_name))) if secret_name else None
    )
    return smtp.relay_from_environment(credentials)


def reset_cache() -> None:
    sender_config.cache_clear()
    relay.cache_clear()
    ses.pacer.reset()


def job_transport(job: SendJob) -> Transport:
    """The transport the submission chose for the job (its domain's, else the deployment's) as a call:
    sender, recipient, bytes -> reply."""
    name = jobs.transport_for(job.transport)
    if name == "ses":
        return lambda sender, recipient, data: ses.send(
            sender, recipient, data, copy_pk=job.copy_pk, require_tls=job.require_tls
        )
    if name != "smtp":
        raise DeliveryConfigurationError(f"a send job with no transport to send it ({name})")
    relay_now = relay()
    return lambda sender, recipient, data: smtp.send(
        relay_now,
        sender,
        recipient,
        data,
        require_tls=job.require_tls,
        skip_verification=job.skip_verification,
    )


def process(body: str, *, now: Callable[[], float] = time.time, transport: Transport | None = None) -> Result:
    """Send one job's copy, or put the job back until it is due; the outcome is recorded before this
    returns. StorageUnavailable (the job is then redelivered) when the outcome could not be recorded."""
    queued = SendJob.from_body(body)
    current = now()
    if queued.next_at is not None and queued.next_at > current + 1:
        queues.send_one(queue_url(), body, queued.next_at - current, what=QUEUE)
        return Result.WAITING
    table = table_name()
    job = queued.tried(current)
    copy = _claim(table, job, current)
    if copy is None:
        return _not_claimed(table, job)
    suppressed = suppression_lists.blocking(copy["domain"], copy["recipient"], copy.get("tags") or [])
    if suppressed:
        # On a list (checked at each attempt, so a bounce elsewhere since the last one counts): nothing
        # is sent, and the failure says which list, with Mailgun's code and words.
        refused = Reply(Outcome.PERMANENT, suppression_lists.SUPPRESSED_CODES[suppressed], "", False, "", 0.0)
        fields = {"copy": job.copy_pk, "attempt": job.attempt, "outcome": suppressed}
        description = suppression_lists.SUPPRESSED_TEXT[suppressed]
        return settle(table, copy, job, refused, now(), fields, reason=suppressed, description=description)
    try:
        message = copies.read(copy)
    except store.ObjectMissing:
        # Expired by the bucket's lifecycle rule before it could be sent (a long retry schedule, a
        # redriven job), or removed: nothing to send, ever. Recorded as a failure, not retried.
        gone = Reply(Outcome.PERMANENT, MISSING_COPY_CODE, MISSING_COPY, False, "", 0.0)
        fields = {"copy": job.copy_pk, "attempt": job.attempt, "outcome": "copy missing"}
        return settle(table, copy, job, gone, now(), fields, reason=events.REASON_GENERIC)
    send = transport or job_transport(job)
    reply = send(job.sender, copy["recipient"], message)
    fields = {"copy": job.copy_pk, "attempt": job.attempt, "code": reply.code, "outcome": str(reply.outcome)}
    if reply.outcome is Outcome.THROTTLED:
        return _throttled(table, queued, fields)
    if reply.outcome is Outcome.ACCEPTED:
        _handed_off(table, copy, job, reply)
        count(Metric.COPIES_SENT)
        logger.info("copy handed to the transport", extra=fields)
        return Result.SENT
    return settle(table, copy, job, reply, now(), fields)


def settle(
    table: str,
    copy: dict[str, Any],
    job: SendJob,
    reply: Reply,
    now: float,
    fields: dict[str, Any],
    *,
    event_id: str | None = None,
    description: str = "",
    reason: str | None = None,
) -> Result:
    """One attempt's final answer recorded: delivered, failed for good, or failed for now with the next
    attempt queued (permanent, reason `old`, once the schedule is spent). `event_id` names the event when
    the answer is a report that may come twice (SES's)."""

    def named(event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "id": event_id} if event_id else event

    if reply.outcome is Outcome.DELIVERED:
        if not record(table, copy, named(events.delivered(copy, job, reply, now)), final="delivered"):
            return Result.ALREADY_DONE
        count(Metric.COPIES_DELIVERED)
        logger.info("copy delivered", extra=fields)
        return Result.DELIVERED
    schedule = sender_config().schedule
    spent = job.attempt > len(schedule)
    if reply.outcome is Outcome.PERMANENT or spent:
        failure = events.failed(
            copy, job, reply, now, retries_spent=spent, description=description, reason=reason
        )
        if not record(table, copy, named(failure), final="failed"):
            return Result.ALREADY_DONE
        count(Metric.COPIES_FAILED)
        logger.warning("copy failed", extra=fields)
        return Result.FAILED
    wait = schedule[job.attempt - 1]
    retry = job.due_at(now + wait).to_body()
    failure = named(events.failed(copy, job, reply, now, retry_seconds=wait, description=description))
    if copy.get("delivery") == SENT:
        # SES had the copy and gave up for now: the copy is made sendable again first, then the retry is
        # queued (it must find the copy open). A report delivered twice queues it twice; the claim refuses
        # all but one, and a crash in between leaves the report unacknowledged, so it comes again.
        recorded = record(table, copy, failure, final=None, reopen=True)
        queues.send_one(queue_url(), retry, wait, what=QUEUE)
    else:
        # The retry is queued before the failure is recorded, so a crash between the two repeats an
        # attempt, and never loses the copy (a duplicated retry is refused by the next claim).
        queues.send_one(queue_url(), retry, wait, what=QUEUE)
        recorded = record(table, copy, failure, final=None)
    if not recorded:
        return Result.ALREADY_DONE
    count(Metric.DELIVERY_RETRIES)
    logger.info("copy delivery deferred", extra={**fields, "retry_in": wait})
    return Result.RETRY_SCHEDULED


def _claim(table: str, job: SendJob, now: float) -> dict[str, Any] | None:
    """Take the copy's sending lease for this attempt and read the copy, in one call: only while it exists,
    is not being erased, has no outcome, no other worker holds an unexpired lease, and this attempt was not
    made before (an earlier attempt's number, or this one's left unfinished by a worker that died). The job
    is kept on the copy: SES's events rebuild Mailgun's events from it. None when any of that fails."""
    return store.update_returning(
        table,
        keys.copy_key(job.copy_pk),
        {
            "sending_until": int(now) + LEASE_SECONDS,
            "delivery_attempts": job.attempt,
            "send_job": job.to_body(),
        },
        condition="attribute_exists(pk) AND attribute_not_exists(erasing) AND attribute_not_exists(delivery)"
        " AND (attribute_not_exists(sending_until) OR sending_until < :now)"
        " AND (attribute_not_exists(delivery_attempts) OR delivery_attempts < :attempt"
        " OR (delivery_attempts = :attempt AND sending_until > :zero))",
        condition_values={":now": int(now), ":attempt": job.attempt, ":zero": 0},
    )


def _not_claimed(table: str, job: SendJob) -> Result:
    """Why the lease could not be taken (the rare path: one more read)."""
    copy = store.get_item(table, keys.copy_key(job.copy_pk))
    if copy is None or copy.get("erasing"):
        count(Metric.SEND_JOB_WITHOUT_COPY)
        return Result.GONE
    if copy.get("delivery") in (*FINAL, SENT):
        return Result.ALREADY_DONE
    lease_held = int(copy.get("sending_until") or 0) > 0
    if int(copy.get("delivery_attempts") or 0) >= job.attempt and not lease_held:
        return Result.ALREADY_DONE
    return Result.BUSY


def _throttled(table: str, queued: SendJob, fields: dict[str, Any]) -> Result:
    """Back off: the job again after 2, 4, 8... seconds (jittered, at most 15 minutes), and the attempt
    given back, so the next claim makes it as if it never started."""
    pause = min(THROTTLE_MAX_SECONDS, THROTTLE_BASE_SECONDS * 2 ** min(queued.throttled, 10))
    pause = int(pause * (0.5 + random.random() / 2)) or 1  # noqa: S311 - jitter, not a secret
    again = replace(queued, throttled=queued.throttled + 1)
    queues.send_one(queue_url(), again.to_body(), pause, what=QUEUE)
    store.update_if(
        table,
        keys.copy_key(queued.copy_pk),
        {"sending_until": 0, "delivery_attempts": queued.attempt},
        condition=f"{OPEN} AND attribute_not_exists(delivery)",
        condition_values={},
    )
    count(Metric.DELIVERY_THROTTLED)
    logger.info("copy delivery throttled", extra={**fields, "retry_in": pause})
    return Result.THROTTLED


def _handed_off(table: str, copy: dict[str, Any], job: SendJob, reply: Reply) -> None:
    """SES took the copy: it is `sent`, with SES's message id, and the lease released. Skipped when one of
    SES's events already decided the copy (they can come that fast) or the copy went away."""
    store.update_if(
        table,
        keys.copy_key(copy["pk"]),
        {"delivery": SENT, "transport_id": reply.transport_id, "sending_until": 0},
        condition=f"{OPEN} AND attribute_not_exists(delivery) AND delivery_attempts = :attempt",
        condition_values={":attempt": job.attempt},
    )


def record(
    table: str,
    copy: dict[str, Any],
    event: dict[str, Any],
    *,
    final: str | None,
    reopen: bool = False,
    after_outcome: bool = False,
) -> bool:
    """The event in the copy's partition and, in the same transaction, the copy's state: its outcome when
    `final`, the lease released, and with `reopen` a handed-off copy made sendable again (SES gave up for
    now; our retry sends it). Nothing is written if the copy went away meanwhile (an erasure), already has
    its outcome (unless the event comes `after_outcome`: a complaint), or already has this event (a
    redelivered report): False then."""
    item = records.event_record(
        copy["pk"],
        event,
        domain=copy["domain"],
        expires_at=int(copy.get("expires_at") or event["timestamp"]),
        recipient=copy["recipient"],
        message_id=copy["message_id"],
        tags=list(copy.get("tags") or []),
    )
    copy_key = keys.copy_key(copy["pk"])
    if after_outcome:
        # Nothing of the copy changes: it only has to be there, and not being erased.
        copy_operation = store.check_operation(table, copy_key, OPEN)
    else:
        state: dict[str, Any] = {"sending_until": 0, **({"delivery": final} if final else {})}
        copy_operation = store.update_operation(
            table,
            copy_key,
            set_always=state,
            remove=("delivery",) if reopen else (),
            condition=UNDECIDED,
            condition_values={":sent": SENT},
        )
    try:
        store.transact_write([store.put_operation(table, item, if_absent=True), copy_operation])
    except store.TransactionCancelled:
        logger.info("outcome not recorded: the copy went away or is decided", extra={"copy": copy["pk"]})
        return False
    return True
