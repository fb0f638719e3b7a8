"""Mailgun webhooks, their delivery: signed, retried, at most once per URL and event.

- `enqueue(domain, event)` (the events stream consumer) reads the domain's URLs for the event's type (one
  DynamoDB read, cached briefly per container) and sends one SQS message per URL in one SendMessageBatch:
  `{"url", "domain", "event", "attempt": 0, "first_attempt_at"}`.
- `process(body)` (the sender, one SQS record) POSTs `{"signature": {timestamp, token, signature},
  "event-data": event}` as JSON, signed as Mailgun signs: hex HMAC-SHA256 of timestamp + token, keyed with
  the webhook signing key (`WebhookSigningKeySecret`, `{"key": "<value>"}`).
  2xx: delivered. 406: the receiver refused it, never retried. Anything else, a timeout or a network error:
  retried on Mailgun's schedule by sending the message again with a delay (SQS delays stop at 15 minutes,
  so a longer wait is a chain of delays until `next_at`); once the schedule is spent the message goes to
  the dead-letter queue, from which a redrive starts a fresh schedule.
- Every attempt carries the event's own, stable `id`, so receivers can deduplicate; the sender also skips
  a URL it already delivered an event to (a `WEBHOOK_SENT#{event id}` marker), which absorbs the stream's
  at-least-once replays.
- Targets that resolve to loopback, private or link-local addresses are refused (no retry) unless
  WEBHOOK_ALLOW_PRIVATE_URLS is set: the sender runs inside the VPC-less Lambda sandbox, next to the
  runtime API, and must not be a proxy into it. The connection goes to the address that was checked
  (outbound.py), so a name that changes its answer between the check and the connection gains nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from functools import cache
from typing import Any
from urllib.parse import urlencode, urlsplit

from botocore.exceptions import ClientError

from opentracking.core import queues
from opentracking.core.config import account_id, table_name
from opentracking.core.errors import BadRequest, OpenTrackingError
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger
from opentracking.http import outbound
from opentracking.storage import keys, records, store
from opentracking.tracking.tokens import secrets_provider
from opentracking.webhooks import subscriptions

# Mailgun retries for about 8 hours: 5 min, 10 min, 15 min, 1 h, 2 h, 4 h (its "Automatic Retries" page).
RETRY_SCHEDULE: tuple[int, ...] = (300, 600, 900, 3600, 7200, 14400)
QUEUE = "webhook queue"
DELIVERY_TIMEOUT = 10.0
SENT_MARKER_SECONDS = 2 * 86400  # longer than the schedule, so a late replay is still recognised


class ConfigurationError(OpenTrackingError):
    """A webhook environment variable is missing or malformed."""


def reset_cache() -> None:
    """Forget the cached delivery configuration and the cached webhook targets (tests, local stack)."""
    subscriptions.reset_cache()
    delivery_config.cache_clear()


def _queue_url() -> str:
    url = os.environ.get("WEBHOOK_QUEUE_URL", "").strip()
    if not url:
        raise ConfigurationError("environment variable WEBHOOK_QUEUE_URL is not set")
    return url


def enqueue(domain: str, event: dict[str, Any], *, now: Callable[[], float] = time.time) -> int:
    """Queue one delivery per URL configured for the event's type; the number queued (0: none set)."""
    started = now()
    bodies = [
        Delivery(url=url, domain=domain, event=event, first_attempt_at=started, hook=hook).to_body()
        for hook in subscriptions.webhook_types(event)
        if hook in subscriptions.WEBHOOK_IDS
        for url in subscriptions.targets(domain, hook)
    ]
    if not bodies:
        return 0
    queues.send_batch(_queue_url(), bodies, what=QUEUE)
    count(Metric.WEBHOOKS_QUEUED, len(bodies))
    return len(bodies)


# --- signing ---------------------------------------------------------------------------------------


def sign(key: str, timestamp: str, token: str) -> str:
    """Mailgun's webhook signature: hex HMAC-SHA256 of timestamp + token, keyed with the signing key."""
    return hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


def verify(key: str, timestamp: str, token: str, signature: str) -> bool:
    """What a receiver does with a webhook's `signature` object, in constant time."""
    if not all(isinstance(value, str) for value in (key, timestamp, token, signature)):
        return False
    expected = sign(key, timestamp, token).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape"))


def signed_payload(
    key: str, event: dict[str, Any], *, domain: str, now: Callable[[], float] = time.time
) -> dict[str, Any]:
    """The POST body: a fresh timestamp and 50-character token for every attempt, and the event with the
    `account.id` and `domain.name` Mailgun's webhook payloads carry (its "Webhook Payloads" page)."""
    timestamp, token = str(int(now())), secrets.token_hex(25)
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": sign(key, timestamp, token)},
        "event-data": {"account": {"id": account_id()}, "domain": {"name": domain}, **event},
    }


SIGNING_KEY_MAX_AGE = 10  # seconds: a regenerated key signs every sender's POSTs this soon


# The legacy payload's `event`, for each legacy webhook.
LEGACY_EVENTS = {
    "open": "opened",
    "click": "clicked",
    "unsubscribe": "unsubscribed",
    "spam": "complained",
    "deliver": "delivered",
    "bounce": "bounced",
    "drop": "dropped",
}


def legacy_fields(
    key: str, hook: str, event: dict[str, Any], *, domain: str, now: Callable[[], float] = time.time
) -> list[tuple[str, str]]:
    """A legacy webhook's form fields, flat, as Mailgun's legacy webhooks POST them: the event's recipient,
    domain, tags (`tag`, repeated), message headers, the reader's client for opens and clicks, the reply for
    bounces and drops, each user variable as a field of its own, and timestamp, token and signature."""
    timestamp, token = str(int(now())), secrets.token_hex(25)
    headers = _object(_object(event.get("message")).get("headers"))
    fields: list[tuple[str, str]] = [
        ("event", LEGACY_EVENTS[hook]),
        ("recipient", str(event.get("recipient") or "")),
        ("domain", domain),
    ]
    if headers.get("message-id"):
        fields.append(("Message-Id", f"<{headers['message-id']}>"))
    fields.append(
        ("message-headers", json.dumps([[name.title(), str(value)] for name, value in headers.items()]))
    )
    fields += [("tag", str(tag)) for tag in event.get("tags") or []]
    if hook in ("open", "click", "unsubscribe"):
        client, where = _object(event.get("client-info")), _object(event.get("geolocation"))
        fields += [("ip", str(event.get("ip") or ""))]
        fields += [(name, str(where.get(name) or "")) for name in ("country", "region", "city")]
        fields += [
            (name, str(client.get(name) or ""))
            for name in ("user-agent", "device-type", "client-type", "client-name", "client-os")
        ]
        if hook == "click":
            fields.append(("url", str(event.get("url") or "")))
    if hook in ("bounce", "drop"):
        status = _object(event.get("delivery-status"))
        fields.append(("code", str(status.get("code") or "")))
        if hook == "bounce":
            fields += [
                ("error", str(status.get("message") or "")),
                ("notification", str(status.get("description") or "")),
            ]
        else:
            reason = (
                "old" if event.get("reason") == "old" else "hardfail"
            )  # never sent: too old, or suppressed
            fields += [
                ("reason", reason),
                ("description", str(status.get("description") or status.get("message") or "")),
            ]
    taken = {name for name, _ in fields} | {"timestamp", "token", "signature"}
    variables = _object(event.get("user-variables"))
    for name, value in variables.items():
        if name not in taken:  # a variable never hides a field Mailgun defines
            fields.append((name, value if isinstance(value, str) else json.dumps(value)))
    return [*fields, ("timestamp", timestamp), ("token", token), ("signature", sign(key, timestamp, token))]


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def signing_key(secret_name: str) -> str:
    """The key in the signing-key secret ({"key": "<value>"}), cached by Powertools parameters for
    SIGNING_KEY_MAX_AGE seconds, not the stack's 5 minutes: receivers switch to a regenerated key at once."""
    return key_in_secret(secrets_provider().get(secret_name, max_age=SIGNING_KEY_MAX_AGE))


def key_in_secret(secret: object) -> str:
    """The key of a signing-key secret's value, {"key": "<value>"}."""
    try:
        document = json.loads(secret) if isinstance(secret, str) else None
    except ValueError:
        document = None
    key = document.get("key") if isinstance(document, dict) else None
    if not key:
        raise ConfigurationError('the webhook signing key secret must be {"key": "<value>"}')
    return str(key)


# --- delivery (the sender) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One queued POST of one event to one URL (the SQS message body)."""

    url: str
    domain: str
    event: dict[str, Any]
    attempt: int = 0  # deliveries tried before this one
    first_attempt_at: float = 0.0
    next_at: float | None = None  # not before this time (a wait longer than SQS's 15-minute delay)
    last_error: str | None = None  # the previous attempt's HTTP status or error type
    dead_lettered_at: float | None = None
    hook: str = ""  # the webhook id it was configured under ("" in older messages: the event's own)

    @property
    def webhook(self) -> str:
        return self.hook or subscriptions.webhook_type(self.event)

    @property
    def legacy(self) -> bool:
        return self.webhook in subscriptions.LEGACY_WEBHOOKS

    def to_body(self) -> str:
        return json.dumps({key: value for key, value in asdict(self).items() if value is not None})

    @classmethod
    def from_body(cls, body: str) -> Delivery:
        """Raise ValueError for anything that is not a delivery message."""
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        try:
            delivery = cls(
                url=str(document["url"]),
                domain=str(document["domain"]),
                event=document["event"],
                attempt=int(document.get("attempt", 0)),
                first_attempt_at=float(document.get("first_attempt_at", 0)),
                next_at=None if document.get("next_at") is None else float(document["next_at"]),
                last_error=document.get("last_error"),
                dead_lettered_at=(
                    None if document.get("dead_lettered_at") is None else float(document["dead_lettered_at"])
                ),
                hook=str(document.get("hook") or ""),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or malformed field: {exc}") from exc
        if (
            not isinstance(delivery.event, dict)
            or delivery.attempt < 0
            or not subscriptions.is_http_url(delivery.url)
            or (delivery.hook and delivery.hook not in subscriptions.WEBHOOK_IDS)
        ):
            raise ValueError("malformed event, attempt, url or webhook")
        return delivery


class Outcome(StrEnum):
    DELIVERED = "delivered"
    REJECTED = "rejected"  # 406: the receiver does not want it; never retried
    REFUSED = "refused"  # the URL resolves to an address the sender must not reach
    DUPLICATE = "duplicate"  # already delivered to this URL
    RETRY_SCHEDULED = "retry_scheduled"
    WAITING = "waiting"  # not due yet: delayed again
    WITHDRAWN = "withdrawn"  # the webhook was deleted or its URL changed while a retry waited
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class DeliveryConfig:
    queue_url: str
    dead_letter_queue_url: str
    signing_key_secret: str
    schedule: tuple[int, ...] = RETRY_SCHEDULE
    timeout: float = DELIVERY_TIMEOUT
    allow_private_urls: bool = False

    @classmethod
    def from_env(cls) -> DeliveryConfig:
        def required(name: str) -> str:
            value = os.environ.get(name, "").strip()
            if not value:
                raise ConfigurationError(f"environment variable {name} is not set")
            return value

        return cls(
            queue_url=required("WEBHOOK_QUEUE_URL"),
            dead_letter_queue_url=required("WEBHOOK_DEAD_LETTER_QUEUE_URL"),
            signing_key_secret=required("WEBHOOK_SIGNING_KEY_SECRET"),
            schedule=parse_schedule(os.environ.get("WEBHOOK_RETRY_SCHEDULE", "")),
            allow_private_urls=subscriptions.private_urls_allowed(),
        )


def parse_schedule(text: str) -> tuple[int, ...]:
    """WEBHOOK_RETRY_SCHEDULE: comma-separated seconds between attempts; empty: Mailgun's schedule."""
    if not text.strip():
        return RETRY_SCHEDULE
    try:
        schedule = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigurationError("WEBHOOK_RETRY_SCHEDULE must be comma-separated whole seconds") from None
    if any(seconds < 0 for seconds in schedule):
        raise ConfigurationError("WEBHOOK_RETRY_SCHEDULE values must not be negative")
    return schedule


@cache
def delivery_config() -> DeliveryConfig:
    return DeliveryConfig.from_env()


FORM = "application/x-www-form-urlencoded"


def post_json(
    url: str,
    body: bytes,
    timeout: float,
    *,
    allow_private: bool = False,
    content_type: str = "application/json",
) -> int:
    """POST a body (JSON, or a legacy webhook's form) to a vetted address of the URL's host (outbound.post);
    the HTTP status. Network errors and timeouts raise OSError (or HTTPException); a host that is not
    public, RefusedTarget."""
    headers = {"Content-Type": content_type, "User-Agent": "opentracking-webhooks/1.0"}
    return outbound.post(url, body, headers, timeout, allow_private=allow_private)


def _sent_key(delivery: Delivery) -> dict[str, Any]:
    # A legacy webhook on the same URL as the current one is another delivery, not a duplicate.
    target = delivery.url + (f"\x00{delivery.webhook}" if delivery.legacy else "")
    return {
        "pk": keys.webhook_sent_pk(str(delivery.event.get("id"))),
        "sk": hashlib.sha256(target.encode()).hexdigest()[:32],
    }


def _already_sent(delivery: Delivery) -> bool:
    if not delivery.event.get("id"):
        return False
    try:
        return store.get_item(table_name(), _sent_key(delivery)) is not None
    except OpenTrackingError:
        return False  # when in doubt, deliver: the id lets the receiver deduplicate


def _mark_sent(delivery: Delivery, now: float) -> None:
    if not delivery.event.get("id"):
        return
    item = {**_sent_key(delivery), "type": "webhook_sent", "expires_at": int(now) + SENT_MARKER_SECONDS}
    try:
        store.put_item(table_name(), item)
    except (OpenTrackingError, ClientError) as exc:
        logger.warning("webhook delivery marker not stored", extra={"error": type(exc).__name__})


def _log_fields(delivery: Delivery) -> dict[str, Any]:
    # No addresses in logs: the domain, the event id, the receiver's host, the attempt.
    return {
        "domain": delivery.domain,
        "event_id": delivery.event.get("id"),
        "webhook_host": urlsplit(delivery.url).hostname,
        "attempt": delivery.attempt,
    }


def _still_configured(delivery: Delivery) -> bool:
    if not delivery.webhook:
        return False
    return delivery.url in subscriptions.configured_urls(delivery.domain, delivery.webhook)  # not cached


def process(
    body: str,
    *,
    config: DeliveryConfig | None = None,
    now: Callable[[], float] = time.time,
    post: Callable[..., int] = post_json,
) -> Outcome:
    """Handle one queued delivery. Raises only when the outcome could not be recorded (SQS down): the
    message then comes back after its visibility timeout, and the queue's redrive policy bounds that."""
    config = config or delivery_config()
    try:
        delivery = Delivery.from_body(body)
    except ValueError as exc:
        logger.error("malformed webhook delivery dead-lettered", extra={"error": str(exc)[:200]})
        queues.send_one(config.dead_letter_queue_url, body, 0, what=QUEUE)
        count(Metric.WEBHOOK_DEAD_LETTERED)
        return Outcome.DEAD_LETTERED

    current = now()
    redriven = delivery.dead_lettered_at is not None
    if redriven:  # redriven from the dead-letter queue: a fresh schedule
        delivery = replace(delivery, attempt=0, first_attempt_at=current, next_at=None, dead_lettered_at=None)
    if delivery.next_at is not None and delivery.next_at > current + 1:
        queues.send_one(config.queue_url, delivery.to_body(), delivery.next_at - current, what=QUEUE)
        return Outcome.WAITING
    fields = _log_fields(delivery)
    if (redriven or delivery.attempt > 0) and not _still_configured(delivery):
        # Retries run for up to 8 hours: a user who deleted the webhook (or the domain) or changed its URL
        # in the meantime must not keep receiving events. The first attempt was enqueued moments ago from
        # the current configuration, so it skips this read.
        logger.info("webhook withdrawn while a retry waited: not delivered", extra=fields)
        count(Metric.WEBHOOK_WITHDRAWN)
        return Outcome.WITHDRAWN
    if _already_sent(delivery):
        logger.info("webhook already delivered", extra=fields)
        count(Metric.WEBHOOK_DUPLICATE)
        return Outcome.DUPLICATE

    status: int | None = None
    try:
        key = signing_key(config.signing_key_secret)
        if delivery.legacy:
            form = urlencode(
                legacy_fields(key, delivery.webhook, delivery.event, domain=delivery.domain, now=now)
            )
            status = post(
                delivery.url,
                form.encode(),
                config.timeout,
                allow_private=config.allow_private_urls,
                content_type=FORM,
            )
        else:
            payload = json.dumps(signed_payload(key, delivery.event, domain=delivery.domain, now=now))
            status = post(
                delivery.url, payload.encode(), config.timeout, allow_private=config.allow_private_urls
            )
        error = str(status)
    except outbound.RefusedTarget:
        logger.warning("webhook target refused: not a public address", extra=fields)
        count(Metric.WEBHOOK_REFUSED)
        return Outcome.REFUSED
    except (OSError, http.client.HTTPException, ValueError) as exc:
        error = type(exc).__name__

    if status is not None and 200 <= status < 300:
        _mark_sent(delivery, current)
        logger.info("webhook delivered", extra={**fields, "status": status})
        count(Metric.WEBHOOK_DELIVERED)
        return Outcome.DELIVERED
    if status == 406:
        logger.warning("webhook rejected by the receiver (406): not retried", extra=fields)
        count(Metric.WEBHOOK_REJECTED)
        return Outcome.REJECTED
    return _retry_or_dead_letter(delivery, error, config, current)


def _retry_or_dead_letter(delivery: Delivery, error: str, config: DeliveryConfig, now: float) -> Outcome:
    fields = {**_log_fields(delivery), "error": error}
    if delivery.attempt < len(config.schedule):
        wait = config.schedule[delivery.attempt]
        retry = replace(delivery, attempt=delivery.attempt + 1, next_at=now + wait, last_error=error)
        queues.send_one(config.queue_url, retry.to_body(), wait, what=QUEUE)
        logger.warning("webhook delivery failed: retry scheduled", extra={**fields, "retry_in": wait})
        count(Metric.WEBHOOK_RETRY_SCHEDULED)
        return Outcome.RETRY_SCHEDULED
    dead = replace(
        delivery, attempt=delivery.attempt + 1, last_error=error, next_at=None, dead_lettered_at=now
    )
    queues.send_one(config.dead_letter_queue_url, dead.to_body(), 0, what=QUEUE)
    logger.error("webhook delivery gave up: dead-lettered", extra=fields)
    count(Metric.WEBHOOK_DEAD_LETTERED)
    return Outcome.DEAD_LETTERED


# --- a test POST (PUT /v3/domains/{d}/webhooks/{id}/test) ------------------------------------------

TEST_TIMEOUT = 5.0  # well inside the API's 29 seconds


def sample_event(webhook: str, domain: str, now: float) -> dict[str, Any]:
    """An event of the kind a webhook receives, with sample values (a test must look like the real thing)."""
    modern = {"open": "opened", "click": "clicked", "unsubscribe": "unsubscribed", "spam": "complained"}
    kind = {"permanent_fail": "failed", "temporary_fail": "failed", "bounce": "failed", "drop": "failed"}.get(
        webhook, modern.get(webhook, {"deliver": "delivered"}.get(webhook, webhook))
    )
    event: dict[str, Any] = {
        "event": kind,
        "id": records.new_event_id(),
        "timestamp": now,
        "log-level": "info",
        "recipient": "alice@example.com",
        "recipient-domain": "example.com",
        "tags": ["webhook-test"],
        "user-variables": {},
        "message": {"headers": {"message-id": f"webhook-test@{domain}"}},
    }
    if kind == "failed":
        permanent = webhook != "temporary_fail"
        event.update(
            severity="permanent" if permanent else "temporary", reason="bounce" if permanent else "generic"
        )
        event["delivery-status"] = {
            "code": 550 if permanent else 421,
            "message": "sample",
            "description": "sample",
        }
    return event


def send_test(
    domain: str,
    webhook: str,
    url: str,
    *,
    key: str,
    now: Callable[[], float] = time.time,
    post: Callable[..., int] = post_json,
) -> dict[str, Any]:
    """POST a signed sample event of the webhook's kind to `url` now, once, and say what the receiver
    answered: {"code": <its HTTP status>, "message": ...}, as Mailgun's webhook test does (mailgun.js reads
    those two fields). A receiver that cannot be reached is code 0 with the reason; a host that is not public
    is a 400, as when the webhook is created."""
    event = sample_event(webhook, domain, now())
    allow_private = subscriptions.private_urls_allowed()
    try:
        if webhook in subscriptions.LEGACY_WEBHOOKS:
            form = urlencode(legacy_fields(key, webhook, event, domain=domain, now=now))
            status = post(url, form.encode(), TEST_TIMEOUT, allow_private=allow_private, content_type=FORM)
        else:
            body = json.dumps(signed_payload(key, event, domain=domain, now=now)).encode()
            status = post(url, body, TEST_TIMEOUT, allow_private=allow_private)
    except outbound.RefusedTarget:
        raise BadRequest(f"'{url}' is not a public address: webhooks are sent to the internet only") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return {"code": 0, "message": f"The webhook could not be reached: {type(exc).__name__}"}
    return {"code": status, "message": f"The webhook answered {status}"}
