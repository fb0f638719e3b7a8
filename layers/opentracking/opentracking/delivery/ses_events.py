"""Amazon SES's reports on the copies it took, as Mailgun's events: SES publishes each to EventBridge (the
configuration set's event destination), a rule queues it, and this records it in the copy's partition,
where the stream consumer counts it and sends its webhook like any other.

SES event (its `eventType`)   Mailgun event
Send                          none (the copy's handoff was recorded by the sender)
Delivery                      delivered
Bounce, Permanent             failed, permanent, reason `bounce` (`suppress-bounce` for an address on
                              SES's suppression lists: SES did not even try)
Bounce, Undetermined          failed, permanent, reason `bounce`
Bounce, Transient             failed, temporary: SES gave up for now, so our own retry schedule sends the
                              copy again (permanent, reason `old`, when the schedule is spent)
DeliveryDelay                 failed, temporary (SES keeps trying: no retry of ours); reason `espblock`
                              when the receiver is blocking us (spam, our IP), else `generic`
Complaint                     complained
Reject                        failed, permanent, reason `generic` (SES found a virus and sent nothing)
Rendering Failure             failed, permanent, reason `generic`
Open, Click, Subscription     none (tracking is ours; those SES features are not used)

Each report is recorded once: its event id comes from SES's message id, the report's type and its time, so
a report EventBridge or SQS delivers twice finds its event already there. A report never reverses an
outcome: a copy delivered or failed stays so (a complaint is added after a delivery).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from opentracking.core.config import table_name
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger
from opentracking.delivery import events, sender
from opentracking.delivery.jobs import SendJob
from opentracking.delivery.replies import Outcome, Reply
from opentracking.delivery.ses import COPY_TAG
from opentracking.storage import keys, store

IGNORED_TYPES = frozenset({"Send", "Open", "Click", "Subscription"})
SUPPRESSED_SUBTYPES = frozenset({"Suppressed", "OnAccountSuppressionList"})
BLOCKING_DELAYS = frozenset({"SpamDetected", "IPFailure"})
_SMTP_CODE = re.compile(r"\b([245]\d\d)\b")


class Result(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # already recorded, or the copy's outcome was already decided
    IGNORED = "ignored"  # a report that maps to no Mailgun event, or about a copy that is not ours
    GONE = "gone"  # the copy expired or was erased


def process(body: str, *, now: Callable[[], float] = time.time) -> Result:
    """One EventBridge event (an SQS message's body) about one copy. ValueError for a body that is not an
    SES event (it goes to the dead-letter queue); StorageUnavailable when it could not be recorded (SQS
    delivers it again)."""
    detail = _detail(body)
    kind = str(detail["eventType"])
    mail = detail.get("mail") or {}
    copy_ids = (mail.get("tags") or {}).get(COPY_TAG) or []
    if kind in IGNORED_TYPES or not copy_ids:
        logger.debug("SES event ignored", extra={"ses_event": kind})
        return Result.IGNORED
    copy_pk = keys.copy_pk(str(copy_ids[0]))
    if not keys.is_copy_pk(copy_pk) or not re.fullmatch(r"[0-9a-f]+", str(copy_ids[0])):
        raise ValueError("not an SES event of ours: bad copy tag")
    table = table_name()
    copy = store.get_item(table, keys.copy_key(copy_pk))
    if copy is None or copy.get("erasing"):
        count(Metric.SES_REPORT_WITHOUT_COPY)
        return Result.GONE
    job = _job(copy, mail)
    report = detail.get(_FIELD.get(kind, "")) or {}
    timestamp = _epoch(report.get("timestamp") or mail.get("timestamp")) or now()
    event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"ses:{mail.get('messageId')}:{kind}:{timestamp}").hex
    recorded = _record(table, copy, job, kind, report, str(mail.get("messageId") or ""), timestamp, event_id)
    if recorded:
        count(Metric.SES_EVENTS)
    logger.info("SES event", extra={"copy": copy_pk, "ses_event": kind, "recorded": recorded})
    return Result.RECORDED if recorded else Result.DUPLICATE


_FIELD = {
    "Delivery": "delivery",
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Reject": "reject",
    "DeliveryDelay": "deliveryDelay",
    "Rendering Failure": "failure",
}


def _detail(body: str) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
        detail = envelope["detail"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not an EventBridge event: {exc}") from exc
    if envelope.get("source") != "aws.ses" or not isinstance(detail, dict) or "eventType" not in detail:
        raise ValueError("not an SES event")
    if detail["eventType"] not in (*IGNORED_TYPES, *_FIELD):
        raise ValueError(f"not an SES event type: {detail['eventType']!r}")
    return detail


def _job(copy: dict[str, Any], mail: dict[str, Any]) -> SendJob:
    """The job the copy was sent with (kept on the copy when it was claimed); for a copy sent before that
    was kept, what SES's report says of the message."""
    if copy.get("send_job"):
        return SendJob.from_body(str(copy["send_job"]))
    headers = mail.get("commonHeaders") or {}
    return SendJob(
        copy_pk=copy["pk"],
        sender=str(mail.get("source") or ""),
        from_header=str((headers.get("from") or [""])[0]),
        subject=str(headers.get("subject") or ""),
        size=0,
        attempt=int(copy.get("delivery_attempts") or 1),
    )


def _record(
    table: str,
    copy: dict[str, Any],
    job: SendJob,
    kind: str,
    report: dict[str, Any],
    message_id: str,
    timestamp: float,
    event_id: str,
) -> bool:
    def with_id(event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "id": event_id}

    if kind == "Complaint":
        return sender.record(
            table, copy, with_id(events.complained(copy, job, timestamp)), final=None, after_outcome=True
        )
    if kind == "Delivery":
        smtp_response = str(report.get("smtpResponse") or "250 OK")
        reply = _reply(Outcome.DELIVERED, smtp_response, report, message_id, default_code=250)
        return sender.record(
            table, copy, with_id(events.delivered(copy, job, reply, timestamp)), final="delivered"
        )
    if kind == "DeliveryDelay":
        recipient = _first(report.get("delayedRecipients"))
        delay = str(report.get("delayType") or "Undetermined")
        until = report.get("expirationTime") or "it expires"
        reply = _reply(Outcome.TEMPORARY, str(recipient.get("diagnosticCode") or delay), report, message_id)
        event = events.failed(
            copy,
            job,
            reply,
            timestamp,
            reason=events.REASON_ESPBLOCK if delay in BLOCKING_DELAYS else events.REASON_GENERIC,
            description=f"Amazon SES is still trying ({delay}), until {until}",
        )
        return sender.record(table, copy, with_id(event), final=None)
    if kind == "Bounce":
        return _bounce(table, copy, job, report, message_id, timestamp, event_id)
    # Reject and Rendering Failure: SES sent nothing, and will not.
    text = str(report.get("reason") or report.get("errorMessage") or kind)
    reply = _reply(Outcome.PERMANENT, f"Amazon SES: {kind}: {text}", report, message_id, default_code=550)
    event = events.failed(copy, job, reply, timestamp, reason=events.REASON_GENERIC, description=text)
    return sender.record(table, copy, with_id(event), final="failed")


def _bounce(
    table: str,
    copy: dict[str, Any],
    job: SendJob,
    report: dict[str, Any],
    message_id: str,
    timestamp: float,
    event_id: str,
) -> bool:
    recipient = _first(report.get("bouncedRecipients"))
    subtype = str(report.get("bounceSubType") or "General")
    diagnostic = str(recipient.get("diagnosticCode") or f"Amazon SES: bounce ({subtype})")
    description = f"{report.get('bounceType')} bounce: {subtype}"
    if report.get("bounceType") == "Transient":
        reply = _reply(Outcome.TEMPORARY, diagnostic, report, message_id)
        fields = {"copy": copy["pk"], "attempt": job.attempt, "code": reply.code, "outcome": "temporary"}
        result = sender.settle(
            table, copy, job, reply, timestamp, fields, event_id=event_id, description=description
        )
        return result is not sender.Result.ALREADY_DONE
    reply = _reply(Outcome.PERMANENT, diagnostic, report, message_id, default_code=550)
    reason = events.REASON_SUPPRESS_BOUNCE if subtype in SUPPRESSED_SUBTYPES else events.REASON_BOUNCE
    event = events.failed(copy, job, reply, timestamp, reason=reason, description=description)
    return sender.record(table, copy, {**event, "id": event_id}, final="failed")


def _reply(
    outcome: Outcome, text: str, report: dict[str, Any], message_id: str, *, default_code: int = 451
) -> Reply:
    """SES's words as a reply: the SMTP code in them (`smtp; 550 5.1.1 user unknown`), the receiving
    server where SES names it, and SES's processing time."""
    found = _SMTP_CODE.search(text)
    mta = str(report.get("remoteMtaIp") or report.get("reportingMTA") or "").removeprefix("dsn; ")
    seconds = float(report.get("processingTimeMillis") or 0) / 1000
    code = int(found.group(1)) if found else default_code
    return Reply(outcome, code, text.removeprefix("smtp; "), False, mta, seconds, False, message_id)


def _first(recipients: object) -> dict[str, Any]:
    return (
        recipients[0]
        if isinstance(recipients, list) and recipients and isinstance(recipients[0], dict)
        else {}
    )


def _epoch(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
