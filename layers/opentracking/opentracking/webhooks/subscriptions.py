"""Mailgun webhooks, their configuration: each domain's webhook URLs per event type.

In the shapes of Mailgun's v3 domain webhooks: one item per domain and webhook type,
`DOMAIN#{domain}` / `WEBHOOK#{id}`, holding 1 to 3 http(s) URLs, for every type Mailgun has
(`MAILGUN_WEBHOOKS`); another id is a clear 400.
`targets` is what delivery reads: one DynamoDB read per domain and type, cached briefly per container.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from opentracking.core.config import table_name
from opentracking.core.errors import BadRequest, NotFound, OpenTrackingError, StorageUnavailable
from opentracking.domains import registry
from opentracking.http import outbound
from opentracking.storage import keys, store

# Every webhook type Mailgun has; this deployment produces each of these events.
MAILGUN_WEBHOOKS = (
    "accepted",
    "clicked",
    "complained",
    "delivered",
    "opened",
    "permanent_fail",
    "temporary_fail",
    "unsubscribed",
)


# Mailgun's legacy webhooks, for integrations written against them: form-encoded POSTs of flat fields
# (delivery.legacy_fields), one id per kind of event. Configured through the same v3 routes.
LEGACY_WEBHOOKS = ("bounce", "deliver", "drop", "spam", "unsubscribe", "click", "open")
WEBHOOK_IDS = (*MAILGUN_WEBHOOKS, *LEGACY_WEBHOOKS)
_LEGACY_OF = {
    "opened": "open",
    "clicked": "click",
    "unsubscribed": "unsubscribe",
    "complained": "spam",
    "delivered": "deliver",
}
BOUNCE_REASONS = ("bounce", "delayed-bounce")


def webhook_types(event: dict[str, Any]) -> tuple[str, ...]:
    """Every webhook an event goes to: its Mailgun webhook, and the legacy one where there is one."""
    legacy = legacy_type(event)
    return (webhook_type(event), legacy) if legacy else (webhook_type(event),)


def legacy_type(event: dict[str, Any]) -> str | None:
    """The legacy webhook of an event: a permanent failure is a bounce (the receiver said no) or a drop
    (never sent: a suppression list, or retries spent); temporary failures and acceptances have none."""
    name = str(event.get("event") or "")
    if name == "failed":
        if event.get("severity") != "permanent":
            return None
        return "bounce" if event.get("reason") in BOUNCE_REASONS else "drop"
    return _LEGACY_OF.get(name)


def webhook_type(event: dict[str, Any]) -> str:
    """The webhook an event goes to: its name, except `failed`, which Mailgun splits by severity."""
    name = str(event.get("event") or "")
    if name == "failed":
        return "permanent_fail" if event.get("severity") == "permanent" else "temporary_fail"
    return name


MAX_URLS = 3
MAX_URL_LENGTH = 2048
TARGETS_CACHE_SECONDS = 30.0


# --- management ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    domain: str
    id: str
    urls: tuple[str, ...]
    created_at: float = 0.0
    updated_at: float = 0.0

    def to_item(self) -> dict[str, Any]:
        return {
            "pk": keys.domain_pk(self.domain),
            "sk": keys.webhook_sk(self.id),
            "type": "webhook",
            "domain": self.domain,
            "webhook": self.id,
            "urls": list(self.urls),
            "created_at": str(self.created_at),
            "updated_at": str(self.updated_at),
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Webhook:
        return cls(
            domain=item["domain"],
            id=item["webhook"],
            urls=tuple(item.get("urls") or ()),
            created_at=float(item.get("created_at") or 0),
            updated_at=float(item.get("updated_at") or 0),
        )

    def mailgun(self) -> dict[str, Any]:
        return {"urls": list(self.urls)}


def _key(domain: str, webhook_id: str) -> dict[str, Any]:
    return {"pk": keys.domain_pk(domain), "sk": keys.webhook_sk(webhook_id)}


def normalise_id(raw: str | None) -> str:
    """A webhook type Mailgun knows; BadRequest for a missing or unknown one."""
    name = (raw or "").strip().lower()
    if not name:
        raise BadRequest("'id' parameter is missing")
    if name not in WEBHOOK_IDS:
        raise BadRequest(
            f"Invalid webhook id '{name}': expected one of {', '.join(MAILGUN_WEBHOOKS)} "
            f"(or a legacy one: {', '.join(LEGACY_WEBHOOKS)})"
        )
    return name


def normalise_urls(values: Iterable[str]) -> tuple[str, ...]:
    """1 to 3 distinct absolute http(s) URLs, in the order given."""
    urls: list[str] = []
    for value in values:
        url = value.strip()
        if url and url not in urls:
            urls.append(url)
    if not urls:
        raise BadRequest("'url' parameter is missing")
    if len(urls) > MAX_URLS:
        raise BadRequest(f"A webhook takes at most {MAX_URLS} urls")
    for url in urls:
        if not is_http_url(url):
            raise BadRequest(f"'{url}' is not a valid http or https URL")
        address = outbound.literal_address(urlsplit(url).hostname or "")
        if address is not None and not outbound.is_public(address) and not private_urls_allowed():
            raise BadRequest(f"'{url}' is not a public address: webhooks are sent to the internet only")
    return tuple(urls)


def private_urls_allowed() -> bool:
    return os.environ.get("WEBHOOK_ALLOW_PRIVATE_URLS", "").strip().lower() in ("1", "true", "yes")


def is_http_url(url: str) -> bool:
    if len(url) > MAX_URL_LENGTH or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def list_webhooks(domain: str) -> list[Webhook]:
    registry.get(domain)
    items = store.query_prefix(table_name(), keys.domain_pk(domain), keys.WEBHOOK_PREFIX)
    return sorted((Webhook.from_item(item) for item in items), key=lambda webhook: webhook.id)


def get(domain: str, webhook_id: str) -> Webhook:
    registry.get(domain)
    name = (webhook_id or "").strip().lower()
    item = store.get_item(table_name(), _key(domain, name)) if name in WEBHOOK_IDS else None
    if item is None:
        raise NotFound(f"Webhook not found: {name}")
    return Webhook.from_item(item)


def create(domain: str, webhook_id: str | None, urls: Iterable[str]) -> Webhook:
    registry.get(domain)
    now = time.time()
    webhook = Webhook(domain, normalise_id(webhook_id), normalise_urls(urls), created_at=now, updated_at=now)
    _put(webhook, condition="attribute_not_exists(pk)", conflict=BadRequest("Webhook already exists"))
    return webhook


def update(domain: str, webhook_id: str, urls: Iterable[str]) -> Webhook:
    current = get(domain, webhook_id)
    webhook = replace(current, urls=normalise_urls(urls), updated_at=time.time())
    _put(webhook, condition="attribute_exists(pk)", conflict=NotFound(f"Webhook not found: {webhook.id}"))
    return webhook


def delete(domain: str, webhook_id: str) -> Webhook:
    webhook = get(domain, webhook_id)
    store.delete_item(table_name(), _key(domain, webhook.id))
    _forget(domain)
    return webhook


def delete_all(domain: str) -> None:
    """Remove every webhook of a domain (call it when the domain is deleted)."""
    items = store.query_prefix(table_name(), keys.domain_pk(domain), keys.WEBHOOK_PREFIX)
    store.batch_delete(table_name(), [{"pk": item["pk"], "sk": item["sk"]} for item in items])
    _forget(domain)


def _put(webhook: Webhook, *, condition: str, conflict: OpenTrackingError) -> None:
    try:
        store.put_item(table_name(), webhook.to_item(), condition=condition)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            raise conflict from None
        raise StorageUnavailable("The webhook store is unavailable, please retry") from exc
    _forget(webhook.domain)


# --- v4: one URL, many event types ------------------------------------------------------------------
# Mailgun's v4 domain webhooks edit every type's URL list at once. The edit is one DynamoDB transaction,
# each item written only if nobody changed it since it was read (a concurrent edit is read again and
# re-applied), so the lists are never left half changed.

V4_ATTEMPTS = 3


def normalise_event_types(values: Iterable[str]) -> tuple[str, ...]:
    """`event_types`, repeated or comma-separated, each a Mailgun webhook id."""
    names: list[str] = []
    for value in values:
        for raw in value.split(","):
            if raw.strip():
                name = normalise_id(raw)
                if name not in MAILGUN_WEBHOOKS:
                    raise BadRequest(f"'{name}' is a legacy webhook: v4 webhooks take current ids only")
                if name not in names:
                    names.append(name)
    if not names:
        raise BadRequest("'event_types' parameter is missing")
    return tuple(names)


def one_url(values: Iterable[str]) -> str:
    urls = [value.strip() for value in values if value.strip()]
    if len(set(urls)) > 1:
        raise BadRequest("'url' must be given once")
    return normalise_urls(urls)[0]


def attach(domain: str, url: str, event_types: tuple[str, ...]) -> list[Webhook]:
    """POST /v4/domains/{d}/webhooks: `url` added to each type's URLs."""

    def change(kind: str, urls: tuple[str, ...]) -> tuple[str, ...]:
        return (*urls, url) if kind in event_types and url not in urls else urls

    return _edit(domain, change)


def retarget(domain: str, url: str, event_types: tuple[str, ...]) -> list[Webhook]:
    """PUT /v4/domains/{d}/webhooks: `url` is a target of exactly these types."""

    def change(kind: str, urls: tuple[str, ...]) -> tuple[str, ...]:
        if kind not in event_types:
            return tuple(u for u in urls if u != url)
        return urls if url in urls else (*urls, url)

    return _edit(domain, change)


def detach(domain: str, urls: tuple[str, ...]) -> list[Webhook]:
    """DELETE /v4/domains/{d}/webhooks?url=...: these URLs removed from every type."""
    if not urls:
        raise BadRequest("'url' parameter is missing")
    return _edit(domain, lambda kind, current: tuple(u for u in current if u not in urls))


def _edit(domain: str, change: Callable[[str, tuple[str, ...]], tuple[str, ...]]) -> list[Webhook]:
    for _attempt in range(V4_ATTEMPTS):
        current = {webhook.id: webhook for webhook in list_webhooks(domain)}
        now = time.time()
        operations, result = [], []
        for kind in MAILGUN_WEBHOOKS:
            before = current.get(kind)
            urls = change(kind, before.urls if before else ())
            if len(urls) > MAX_URLS:
                raise BadRequest(f"A webhook takes at most {MAX_URLS} urls: {kind} would have {len(urls)}")
            if before is not None and urls == before.urls:
                result.append(before)
                continue
            if before is None and not urls:
                continue
            operations.append(_v4_operation(domain, kind, before, urls, now))
            if urls:
                result.append(Webhook(domain, kind, urls, before.created_at if before else now, now))
        if not operations:
            return result
        try:
            store.transact_write(operations)
        except store.TransactionCancelled:
            continue  # another edit came first: read again
        _forget(domain)
        return result
    raise StorageUnavailable("The webhooks changed under this request too often, please retry")


def _v4_operation(
    domain: str, kind: str, before: Webhook | None, urls: tuple[str, ...], now: float
) -> dict[str, Any]:
    """One type's write in the edit's transaction, conditional on what was read."""
    if before is None:
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
    else:
        condition = {
            "ConditionExpression": "updated_at = :read",
            "ExpressionAttributeValues": store.serialize({":read": str(before.updated_at)}),
        }
    table = table_name()
    if not urls:
        return {"Delete": {"TableName": table, "Key": store.serialize(_key(domain, kind)), **condition}}
    webhook = Webhook(domain, kind, urls, before.created_at if before else now, now)
    return {"Put": {"TableName": table, "Item": store.serialize(webhook.to_item()), **condition}}


# --- enqueue (the events consumer) -----------------------------------------------------------------

_targets_cache: dict[str, tuple[float, dict[str, tuple[str, ...]]]] = {}
_targets_lock = threading.Lock()


def targets(domain: str, event_name: str) -> tuple[str, ...]:
    """The URLs configured for one domain and webhook type. A domain's webhooks of every type are read in
    one consistent query (an event goes to its current and its legacy webhook), then cached for
    TARGETS_CACHE_SECONDS per container (a change made elsewhere applies within that time)."""
    now = time.monotonic()
    with _targets_lock:
        cached = _targets_cache.get(domain)
    if cached is None or cached[0] <= now:
        items = store.query_prefix(table_name(), keys.domain_pk(domain), keys.WEBHOOK_PREFIX, consistent=True)
        configured = {str(item["webhook"]): tuple(item.get("urls") or ()) for item in items}
        cached = (now + TARGETS_CACHE_SECONDS, configured)
        with _targets_lock:
            _targets_cache[domain] = cached
    return cached[1].get(event_name, ())


def configured_urls(domain: str, event_name: str) -> tuple[str, ...]:
    """The URLs configured for one domain and event type, read consistently (not cached)."""
    item = store.get_item(table_name(), _key(domain, event_name))
    return tuple(item.get("urls") or ()) if item else ()


def _forget(domain: str) -> None:
    with _targets_lock:
        _targets_cache.pop(domain, None)


def reset_cache() -> None:
    with _targets_lock:
        _targets_cache.clear()
