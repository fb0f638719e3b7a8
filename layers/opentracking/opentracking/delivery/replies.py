"""How a transport answered for one copy: the outcome the sender acts on, and what the event records.

Every transport (SMTP, Amazon SES) answers in these terms. SMTP's answer is final: the receiving server
said yes or no. SES's is a handoff: it ACCEPTED the copy, and its own events say later whether the copy was
delivered (opentracking.delivery.ses_events). THROTTLED is neither a success nor a failure: the transport
asked us to slow down, so the copy is tried again soon and the attempt does not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    DELIVERED = "delivered"
    PERMANENT = "permanent"
    TEMPORARY = "temporary"
    ACCEPTED = "accepted"  # handed to a service that reports the outcome later (SES)
    THROTTLED = "throttled"  # sent too fast: tried again soon, not counted as an attempt


@dataclass(frozen=True)
class Reply:
    """How one copy's transaction ended, for the `delivered` or `failed` event's `delivery-status`."""

    outcome: Outcome
    code: int
    message: str
    tls: bool
    mx_host: str
    session_seconds: float
    certificate_verified: bool = False
    transport_id: str = ""  # the transport's own id for the copy, when it has one (SES's MessageId)
