"""Send jobs: one SQS message per recipient's copy, queued by the submission once the copies are stored.

A job names the copy (its record holds the recipient, the S3 key and the message's identity) and carries
what the events need from the message that the copy record does not hold (the envelope sender, the From
and Subject headers, the size). `attempt` counts the transport's tries; `next_at` is when a retry is due
(SQS delays stop at 15 minutes, so a longer wait is a chain of delays).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from typing import Any

from opentracking.core import queues
from opentracking.core.errors import BadRequest, OpenTrackingError
from opentracking.storage import keys

QUEUE = "send queue"


class DeliveryConfigurationError(OpenTrackingError):
    """A delivery environment variable is missing or malformed."""


@dataclass(frozen=True)
class SendJob:
    copy_pk: str
    sender: str
    from_header: str
    subject: str
    size: int
    attempt: int = 0
    first_attempt_at: float | None = None
    next_at: float | None = None
    throttled: int = 0  # times the transport asked us to slow down for this attempt (the backoff grows)
    transport: str = ""  # what the submission chose (the domain's, else the deployment's); "" for jobs
    # queued before jobs named it: the deployment's
    require_tls: bool = False  # Mailgun's connection settings for this message (its own, else its domain's)
    skip_verification: bool = False

    def to_body(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str) -> SendJob:
        """ValueError for a body that is not a send job (it goes to the dead-letter queue)."""
        try:
            document: dict[str, Any] = json.loads(body)
            job = cls(**document)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a send job: {exc}") from exc
        if not keys.is_copy_pk(job.copy_pk) or job.attempt < 0 or job.throttled < 0:
            raise ValueError("not a send job: bad copy or attempt")
        if job.transport not in ("", *TRANSPORTS):
            raise ValueError(f"not a send job: no transport {job.transport!r}")
        return job

    def tried(self, now: float) -> SendJob:
        """The job once the transport has been tried (again) now."""
        return replace(
            self,
            attempt=self.attempt + 1,
            first_attempt_at=self.first_attempt_at or now,
            next_at=None,
            throttled=0,
        )

    def due_at(self, at: float) -> SendJob:
        return replace(self, next_at=at)


TRANSPORTS = ("none", "smtp", "ses")


def transport() -> str:
    """How this deployment delivers (DELIVERY_TRANSPORT): `ses` through Amazon SES, `smtp` through the relay
    in SMTP_RELAY, or `none` (copies are stored, and nothing is sent)."""
    name = os.environ.get("DELIVERY_TRANSPORT", "none").strip().lower() or "none"
    if name not in TRANSPORTS:
        raise DeliveryConfigurationError(f"DELIVERY_TRANSPORT must be one of {', '.join(TRANSPORTS)}")
    return name


def domain_transport_setting(value: str | None) -> str | None:
    """A domain's `delivery_transport` as given: one of TRANSPORTS or `default` (the deployment's), or None
    when not given. BadRequest for anything else, and for `smtp` where the deployment has no relay."""
    if value is None:
        return None
    name = value.strip().lower()
    if name not in (*TRANSPORTS, "default"):
        raise BadRequest(f"'delivery_transport' must be one of {', '.join((*TRANSPORTS, 'default'))}")
    if name == "smtp" and not os.environ.get("SMTP_RELAY", "").strip():
        raise BadRequest(
            "'delivery_transport' smtp needs the deployment's SMTP relay (the SmtpRelay parameter)"
        )
    return name


def transport_for(domain_setting: str) -> str:
    """The transport a domain's copies take: its own setting, else the deployment's."""
    return domain_setting or transport()


def queue_url() -> str:
    url = os.environ.get("SEND_QUEUE_URL", "").strip()
    if not url:
        raise DeliveryConfigurationError("environment variable SEND_QUEUE_URL is not set")
    return url


def enqueue(jobs: list[SendJob]) -> None:
    """Queue the jobs, 10 to a call; StorageUnavailable when the queue cannot take them (the submission
    then fails and rolls back, so a message is never stored without its jobs)."""
    queues.send_batch(queue_url(), [job.to_body() for job in jobs], what=QUEUE)
