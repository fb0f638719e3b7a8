"""Delivery through Amazon SES: SESv2 SendEmail with the copy's bytes as they are (Content.Raw), one call per
recipient's copy, under the deployment's configuration set.

SES answers a call at once, but the answer is a handoff, not a delivery: SES then talks to the recipient's
server and says what happened in its own events (Send, Delivery, Bounce, Complaint, Reject, DeliveryDelay,
Rendering Failure), which the configuration set publishes to EventBridge and a rule queues for
opentracking.delivery.ses_events. Each call tags the copy (COPY_TAG), and SES repeats the tag in every
event, so an event finds its copy without a lookup table.

What SendEmail's errors mean here:
- throttling (the account's maximum send rate): the copy is tried again soon, and the attempt does not
  count (THROTTLED);
- the daily quota spent, sending paused, an account under review, SES unreachable or failing: temporary,
  retried on the delivery schedule;
- the message or the sender refused (MessageRejected, an unverified MAIL FROM domain, a malformed request):
  permanent.

The send rate: each sender function instance paces its own calls to the account's maximum send rate
(GetAccount, read every few minutes) divided by SENDER_CONCURRENCY, the most instances SQS runs at once
(the event source's MaximumConcurrency, set from the same template parameter), so all of them together stay
under the account's rate.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from opentracking.core import aws
from opentracking.core.errors import OpenTrackingError
from opentracking.core.observability import logger
from opentracking.delivery.replies import Outcome, Reply
from opentracking.storage import keys

COPY_TAG = "opentracking-copy"  # the copy's id (hex), repeated by SES in every event of the copy
MX_HOST = "email.amazonses.com"  # who took the copy: SES's API (the receiving server comes in SES's events)
RATE_REFRESH_SECONDS = 300.0
SANDBOX_RATE = 1.0  # messages a second: SES's rate in the sandbox, used when GetAccount cannot be read

THROTTLED_CODES = frozenset({"TooManyRequestsException", "Throttling", "ThrottlingException"})
PERMANENT_CODES = frozenset(
    {"MessageRejected", "MailFromDomainNotVerifiedException", "BadRequestException", "InvalidParameterValue"}
)
PERMANENT_REPLY_CODE = 550
TEMPORARY_REPLY_CODE = 451
ACCEPTED_REPLY_CODE = 250


class SesConfigurationError(OpenTrackingError):
    """SES_CONFIGURATION_SET or SENDER_CONCURRENCY is missing or malformed."""


def configuration_set(*, require_tls: bool = False) -> str:
    """The configuration set a copy is sent under: the one whose delivery requires TLS when the message
    or its domain asks for it (Mailgun's require-tls), else the one that tries TLS first."""
    variable = "SES_REQUIRE_TLS_CONFIGURATION_SET" if require_tls else "SES_CONFIGURATION_SET"
    name = os.environ.get(variable, "").strip()
    if not name:
        raise SesConfigurationError(f"environment variable {variable} is not set")
    return name


def sender_concurrency() -> int:
    text = os.environ.get("SENDER_CONCURRENCY", "").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise SesConfigurationError("SENDER_CONCURRENCY must be a whole number of at least 1")
    return int(text)


def copy_tag_value(copy_pk: str) -> str:
    """The copy's id as an SES tag value (letters, digits, `_` and `-` only: the hex id after the prefix)."""
    return copy_pk.removeprefix(keys.COPY_PREFIX)


def send(sender: str, recipient: str, message: bytes, *, copy_pk: str, require_tls: bool = False) -> Reply:
    """Hand one copy to SES: its envelope sender, one envelope recipient, the bytes as stored. (Mailgun's
    skip-verification has no SES counterpart: SES decides how it checks receiving servers' certificates.)"""
    started = time.monotonic()

    def reply(outcome: Outcome, code: int, text: str, transport_id: str = "") -> Reply:
        seconds = round(time.monotonic() - started, 3)
        return Reply(outcome, code, text, True, MX_HOST, seconds, True, transport_id)

    pacer.wait()
    try:
        answer = aws.client("sesv2").send_email(
            FromEmailAddress=sender,
            Destination={"ToAddresses": [recipient]},
            Content={"Raw": {"Data": message}},
            ConfigurationSetName=configuration_set(require_tls=require_tls),
            EmailTags=[{"Name": COPY_TAG, "Value": copy_tag_value(copy_pk)}],
        )
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, text = (
            str(error.get("Code", "")),
            f"Amazon SES: {error.get('Code')}: {error.get('Message', '')}",
        )
        if code in THROTTLED_CODES:
            return reply(Outcome.THROTTLED, TEMPORARY_REPLY_CODE, text)
        if code in PERMANENT_CODES:
            return reply(Outcome.PERMANENT, PERMANENT_REPLY_CODE, text)
        return reply(Outcome.TEMPORARY, TEMPORARY_REPLY_CODE, text)
    except BotoCoreError as exc:
        # SES could not be reached, or did not answer: whether it took the copy is unknown, so it is tried
        # again (the one window where SES may send a copy twice).
        return reply(Outcome.TEMPORARY, TEMPORARY_REPLY_CODE, f"Amazon SES: {type(exc).__name__}: {exc}")
    message_id = str(answer["MessageId"])
    return reply(Outcome.ACCEPTED, ACCEPTED_REPLY_CODE, f"Accepted by Amazon SES as {message_id}", message_id)


@dataclass
class Pacer:
    """Spaces this instance's SendEmail calls so that SENDER_CONCURRENCY instances together stay under the
    account's maximum send rate. Thread-safe; sleeps only when calls come faster than the rate."""

    read_rate: Callable[[], float] | None = None  # where the account's rate comes from (GetAccount)
    _next_at: float = 0.0
    _rate: float = 0.0
    _rate_read_at: float = float("-inf")

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def interval(self) -> float:
        now = time.monotonic()
        if now - self._rate_read_at >= RATE_REFRESH_SECONDS:
            self._rate, self._rate_read_at = float((self.read_rate or max_send_rate)()), now
        return sender_concurrency() / self._rate if self._rate > 0 else 0.0

    def reset(self) -> None:
        """Forget the rate read and the last send (tests, a changed account)."""
        with self._lock:
            self._next_at, self._rate, self._rate_read_at = 0.0, 0.0, float("-inf")

    def wait(self) -> None:
        with self._lock:
            interval = self.interval()
            now = time.monotonic()
            start = max(now, self._next_at)
            self._next_at = start + interval
        if start > now:
            time.sleep(start - now)


def max_send_rate() -> float:
    """The account's maximum send rate (messages a second), from GetAccount; SES's sandbox rate when it
    cannot be read, so a missing permission slows sending down instead of stopping it."""
    try:
        quota = aws.client("sesv2").get_account().get("SendQuota") or {}
        rate = float(quota.get("MaxSendRate") or 0)
    except (ClientError, BotoCoreError, ValueError, TypeError) as exc:
        logger.warning("SES send rate unknown; sending at the sandbox rate", extra={"error": str(exc)})
        return SANDBOX_RATE
    return rate if rate > 0 else SANDBOX_RATE


pacer = Pacer()
