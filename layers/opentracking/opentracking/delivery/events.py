"""Mailgun's `delivered` and `failed` events for one recipient's copy, from the transport's answer.

The shapes follow Mailgun's events API: `delivery-status` (code, message, description, attempt-no, tls,
certificate-verified, mx-host, session-seconds, utf8), `envelope` (transport, sender, targets), `flags`,
`message` (headers, size) and `storage`. A `failed` event adds `severity` (`permanent` or `temporary`) and a
`reason`: `bounce` when the receiving server refused the recipient or the message (5xx), `generic` for a
temporary failure (its `delivery-status.retry-seconds` says when the next attempt is), and `old` for one
whose retries ran out ("Too old", with the last failure's code and message).
"""

from __future__ import annotations

import json
from typing import Any

from opentracking.delivery.jobs import SendJob
from opentracking.delivery.replies import Outcome, Reply
from opentracking.storage import keys, records

REASON_BOUNCE = "bounce"
REASON_GENERIC = "generic"
REASON_OLD = "old"
REASON_SUPPRESS_BOUNCE = "suppress-bounce"  # not sent: the address is on a suppression list (SES's)
REASON_ESPBLOCK = "espblock"  # the receiving provider is refusing us for now (spam, our IP)


def _base(copy: dict[str, Any], job: SendJob, reply: Reply, now: float) -> dict[str, Any]:
    recipient = copy["recipient"]
    return {
        "id": records.new_event_id(),
        "timestamp": now,
        "recipient": recipient,
        "recipient-domain": copy.get("recipient_domain") or recipient.rpartition("@")[2].lower(),
        "tags": list(copy.get("tags") or []),
        "user-variables": json.loads(copy.get("user_variables") or "{}"),
        "campaigns": [],
        "envelope": {"transport": "smtp", "sender": job.sender, "targets": recipient},
        "delivery-status": {
            "code": reply.code,
            "message": reply.message,
            "description": "",
            "attempt-no": job.attempt,
            "tls": reply.tls,
            "certificate-verified": reply.certificate_verified,
            "mx-host": reply.mx_host,
            "session-seconds": reply.session_seconds,
            "utf8": True,
        },
        "flags": {
            "is-routed": False,
            "is-authenticated": True,
            "is-system-test": False,
            "is-test-mode": False,
        },
        "message": {
            "headers": {
                "to": recipient,
                "message-id": copy["message_id"],
                "from": job.from_header,
                "subject": job.subject,
            },
            "attachments": [],
            "size": job.size,
        },
        # the copy, as the accepted event names it (messages.stored)
        "storage": {
            "key": str(copy["pk"]).removeprefix(keys.COPY_PREFIX),
            "url": copy.get("storage_url", ""),
        },
    }


def delivered(copy: dict[str, Any], job: SendJob, reply: Reply, now: float) -> dict[str, Any]:
    return {"event": "delivered", "log-level": "info", **_base(copy, job, reply, now)}


def failed(
    copy: dict[str, Any],
    job: SendJob,
    reply: Reply,
    now: float,
    *,
    retry_seconds: int | None = None,
    retries_spent: bool = False,
    reason: str | None = None,
    description: str = "",
) -> dict[str, Any]:
    """A failure: permanent for a 5xx (a bounce) or once the retries ran out (too old), else temporary,
    with the seconds until the next attempt. `reason` overrides the one the reply implies (SES says more:
    a suppressed address, a blocked sender)."""
    bounce = reply.outcome is Outcome.PERMANENT
    permanent = bounce or retries_spent
    reason = reason or (REASON_BOUNCE if bounce else REASON_OLD if retries_spent else REASON_GENERIC)
    event = {
        "event": "failed",
        "log-level": "error" if permanent else "warn",
        "severity": "permanent" if permanent else "temporary",
        "reason": reason,
        **_base(copy, job, reply, now),
    }
    status = event["delivery-status"]
    status["bounce-type"] = "hard" if bounce else "soft"
    status["description"] = description
    if retry_seconds is not None:
        status["retry-seconds"] = retry_seconds
    if retries_spent:
        status["description"] = f"Too old: gave up after {job.attempt} attempts, the last failing temporarily"
    return event


def complained(copy: dict[str, Any], job: SendJob, now: float) -> dict[str, Any]:
    """The recipient marked the copy as spam (a feedback report through the transport)."""
    event = {"event": "complained", "log-level": "warn", **_base(copy, job, _NO_REPLY, now)}
    del event["delivery-status"]
    return event


_NO_REPLY = Reply(Outcome.DELIVERED, 0, "", False, "", 0.0)
