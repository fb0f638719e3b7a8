"""Mailgun's Logs API (`POST /v1/analytics/logs`), the events API's successor: the account's events in a
time window, across its domains, filtered by event type and by attributes, sorted by time and paged with
an opaque token.

It reads the events the events API reads (every domain's `EVENTS#{domain}` index, in time order), merges
the domains by time and shows each event in the Logs shape: `@timestamp` in RFC 3339, `domain.name`,
`account.id`, `user-variables` as a JSON string, `storage.url` as a list. `unique_opened` and
`unique_clicked` are the opens and clicks their copy's unique marker names (the first human one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from opentracking.core.config import account_id, table_name
from opentracking.core.errors import BadRequest
from opentracking.domains import registry
from opentracking.reporting import aggregates, metrics, queries
from opentracking.storage import keys, store

LOG_EVENTS = (
    "accepted",
    "delivered",
    "failed",
    "opened",
    "unique_opened",
    "clicked",
    "unique_clicked",
    "unsubscribed",
    "complained",
    "rejected",
    "stored",
    "email_validation",
    "list_uploaded",
    "list_member_uploaded",
    "list_member_upload_error",
    "trapped",
)
_BOUNCE_REASONS = {"bounce", "delayed-bounce"}
_PRODUCED = ("accepted", "delivered", "failed", "opened", "clicked", "unsubscribed", "complained")


def _failed(severity: str | None = None, reason: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def kept(event: dict[str, Any]) -> bool:
        return (severity is None or event.get("severity") == severity) and (
            reason is None or event.get("reason") == reason
        )

    return kept


def _bounced(event: dict[str, Any]) -> bool:
    return event.get("reason") in _BOUNCE_REASONS


def _ANY(_event: dict[str, Any]) -> bool:
    return True


# Metric events (the Metrics API's names without `_count`) as the events they stand for. Those of things
# this deployment never does (inbound mail, HTTP delivery, optimized delivery, webhooks) match nothing.
METRIC_EVENTS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]] | None] = {
    "accepted": ("accepted", _ANY),
    "accepted_outgoing": ("accepted", _ANY),
    "processed": ("accepted", _ANY),
    "accepted_incoming": None,
    "delivered": ("delivered", _ANY),
    "delivered_smtp": ("delivered", _ANY),
    "delivered_http": None,
    "delivered_optimized": None,
    "stored": None,
    "opened": ("opened", _ANY),
    "unique_opened": ("unique_opened", _ANY),
    "clicked": ("clicked", _ANY),
    "unique_clicked": ("unique_clicked", _ANY),
    "unsubscribed": ("unsubscribed", _ANY),
    "complained": ("complained", _ANY),
    "failed": ("failed", _ANY),
    "sent": ("delivered", _ANY),  # handed to a receiving server; bounces add below
    "temporary_failed": ("failed", _failed("temporary")),
    "permanent_failed": ("failed", _failed("permanent")),
    "esp_block": ("failed", _failed(reason="espblock")),
    "temporary_failed_esp_block": ("failed", _failed("temporary", "espblock")),
    "permanent_failed_esp_block": ("failed", _failed("permanent", "espblock")),
    "webhook_failure": None,
    "permanent_failed_optimized": None,
    "permanent_failed_old": ("failed", _failed("permanent", "old")),
    "bounced": ("failed", _bounced),
    "hard_bounces": ("failed", _failed("permanent", "bounce")),
    "soft_bounces": ("failed", _failed("temporary")),
    "delayed_bounce": ("failed", _failed("permanent", "delayed-bounce")),
    "suppressed_bounces": ("failed", _failed("permanent", "suppress-bounce")),
    "suppressed_unsubscribed": ("failed", _failed("permanent", "suppress-unsubscribe")),
    "suppressed_complaints": ("failed", _failed("permanent", "suppress-complaint")),
}
# Filter attributes: where each reads the event.
ATTRIBUTES: dict[str, Callable[[dict[str, Any], str], list[str]]] = {
    "domain": lambda _event, domain: [domain],
    "tag": lambda event, _domain: [str(tag) for tag in event.get("tags") or []],
    "recipient": lambda event, _domain: [str(event.get("recipient") or "")],
    "recipient_domain": lambda event, _domain: [str(event.get("recipient-domain") or "")],
    "recipient_provider": lambda event, _domain: [aggregates.provider_of(str(event.get("recipient") or ""))],
    "message_id": lambda event, _domain: [
        str(((event.get("message") or {}).get("headers") or {}).get("message-id") or "")
    ],
    "subject": lambda event, _domain: [
        str(((event.get("message") or {}).get("headers") or {}).get("subject") or "")
    ],
    "severity": lambda event, _domain: [str(event.get("severity") or "")],
    "reason": lambda event, _domain: [str(event.get("reason") or "")],
    "bot": lambda event, _domain: [str((event.get("client-info") or {}).get("bot") or "")],
    "country": lambda event, _domain: [str((event.get("geolocation") or {}).get("country") or "")],
}
COMPARATORS = ("=", "!=", "contains", "not contains")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_FILTER_VALUES = 100
MAX_PREDICATES = 20  # each is evaluated on every event scanned: a bounded amount of work per event
DEFAULT_WINDOW = 86400.0  # Mailgun's: one day before the end
_MAX_PAGES_SCANNED = 50  # per domain and request, as the events API
_MAX_COUNTED = 10_000  # include_totals counts at most this many events
_MAX_PAGES_COUNTED = 20  # ... reading at most this many pages (1 MB each) per domain


def _strings(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest(f"'{name}' must be a list of strings")
    if len(value) > len(METRIC_EVENTS) + len(LOG_EVENTS):
        raise BadRequest(f"'{name}' names too many events")
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false")
    return value


Predicate = Callable[[dict[str, Any], str], bool]


def _filter(body: dict[str, Any]) -> list[Predicate]:
    """{"AND": [{"attribute", "comparator", "values": [{"label", "value"}]}]}: every predicate holds. `=`
    keeps an event whose attribute is one of the values, `!=` one whose attribute is none of them,
    `contains` and `not contains` compare substrings; case does not matter."""
    raw = body.get("filter")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict) or set(raw) - {"AND"} or not isinstance(raw.get("AND", []), list):
        raise BadRequest("'filter' must be {\"AND\": [predicates]}")
    predicates: list[Predicate] = []
    if len(raw.get("AND", [])) > MAX_PREDICATES:
        raise BadRequest(f"'filter' takes at most {MAX_PREDICATES} predicates")
    for predicate in raw.get("AND", []):
        if not isinstance(predicate, dict):
            raise BadRequest("a filter predicate must be an object")
        attribute, comparator, values = (
            predicate.get("attribute"),
            predicate.get("comparator"),
            predicate.get("values"),
        )
        if attribute not in ATTRIBUTES:
            raise BadRequest(f"'filter' attributes are {', '.join(ATTRIBUTES)}, not {attribute!r}")
        if comparator not in COMPARATORS:
            raise BadRequest(f"'filter' comparators are {', '.join(COMPARATORS)}, not {comparator!r}")
        if not isinstance(values, list) or not values or len(values) > MAX_FILTER_VALUES:
            raise BadRequest(f"a filter predicate needs 1 to {MAX_FILTER_VALUES} values")
        wanted = []
        for value in values:
            if not isinstance(value, dict) or not isinstance(value.get("value"), str):
                raise BadRequest('a filter value must be {"label": ..., "value": "<string>"}')
            wanted.append(value["value"].lower())
        predicates.append(_predicate(ATTRIBUTES[attribute], comparator, wanted))
    return predicates


def _predicate(
    read: Callable[[dict[str, Any], str], list[str]], comparator: str, wanted: list[str]
) -> Predicate:
    def holds(event: dict[str, Any], domain: str) -> bool:
        found = [value.lower() for value in read(event, domain)]
        if comparator in ("=", "!="):
            hit = any(value in wanted for value in found)
        else:
            hit = any(part in value for value in found for part in wanted)
        return hit if comparator in ("=", "contains") else not hit

    return holds


def _window(body: dict[str, Any]) -> tuple[float, float]:
    def text(name: str) -> str | None:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"'{name}' must be a string")
        return value or None

    given_end = queries.parse_time("end", text("end"))
    end = time.time() if given_end is None else given_end
    duration = text("duration")
    given_start = queries.parse_time("start", text("start"))
    if duration:
        start = end - queries.duration(duration).total_seconds()
    else:
        start = end - DEFAULT_WINDOW if given_start is None else given_start
    if start > end:
        raise BadRequest("'start' must be before 'end'")
    return start, end


def _pagination(body: dict[str, Any]) -> tuple[bool, int, str | None]:
    raw = body.get("pagination")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise BadRequest("'pagination' must be an object")
    sort, limit, token = (
        raw.get("sort") or "timestamp:desc",
        raw.get("limit", DEFAULT_LIMIT),
        raw.get("token"),
    )
    if sort not in ("timestamp:asc", "timestamp:desc", "timestamp"):
        raise BadRequest("'pagination.sort' must be timestamp:asc or timestamp:desc")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"'pagination.limit' must be between 1 and {MAX_LIMIT}")
    if token is not None and (not isinstance(token, str) or len(token) > 512):
        raise BadRequest("'pagination.token' must be a token from an earlier answer")
    return sort != "timestamp:desc", limit, token or None


def _wanted_events(body: dict[str, Any]) -> dict[str, list[Callable[[dict[str, Any]], bool]]]:
    """{event name as stored: [tests, any of which keeps one]}; every event when none is named."""
    events = _strings(body, "events")
    metric_events = _strings(body, "metric_events")
    for name in events:
        if name not in LOG_EVENTS:
            raise BadRequest(f"'{name}' is not an event of the Logs API")
    wanted: dict[str, list[Callable[[dict[str, Any]], bool]]] = {}
    for name in events:
        wanted.setdefault(name, []).append(_ANY)
    for name in metric_events:
        if name not in METRIC_EVENTS:
            raise BadRequest(f"'{name}' is not a metric event")
        mapped = METRIC_EVENTS[name]
        if mapped:
            wanted.setdefault(mapped[0], []).append(mapped[1])
        if name == "sent":  # a bounce was handed to a receiving server too
            wanted.setdefault("failed", []).append(_bounced)
    if not events and not metric_events:
        return {name: [_ANY] for name in _PRODUCED}
    return wanted


def _token(query_key: str, pivot: str) -> str:
    state = json.dumps({"q": query_key, "p": pivot}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(state).rstrip(b"=").decode()


def _pivot(token: str, query_key: str) -> str:
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadRequest("Invalid page token") from None
    if not isinstance(state, dict) or not isinstance(state.get("p"), str) or state.get("q") != query_key:
        raise BadRequest("The page token belongs to another query: send the query it came with")
    return str(state["p"])


def _log_item(event: dict[str, Any], domain: str) -> dict[str, Any]:
    item = dict(event)
    stamp = float(item.pop("timestamp", 0.0))
    item["@timestamp"] = (
        datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
    item["domain"] = {"name": domain}
    item["account"] = {"id": account_id()}
    if "recipient" in item:
        item["recipient-provider"] = aggregates.provider_of(str(item["recipient"]))
    if isinstance(item.get("user-variables"), dict):
        item["user-variables"] = json.dumps(item["user-variables"])
    storage = item.get("storage")
    if isinstance(storage, dict) and isinstance(storage.get("url"), str):
        item["storage"] = {**storage, "url": [storage["url"]]}
    return item


def _unique_markers(kind: str) -> Callable[[dict[str, Any]], bool]:
    """An opened or clicked event item that its copy's unique marker names; one read per copy."""
    sk = keys.UNIQUE_OPENED_SK if kind == "opened" else keys.UNIQUE_CLICKED_SK
    markers: dict[str, str | None] = {}

    def is_unique(item: dict[str, Any]) -> bool:
        copy_pk = str(item["pk"])
        if copy_pk not in markers:
            marker = store.get_item(table_name(), {"pk": copy_pk, "sk": sk})
            markers[copy_pk] = str(marker["event_id"]) if marker else None
        return markers[copy_pk] == str(json.loads(item["payload"]).get("id"))

    return is_unique


def list_logs(body_text: str | None) -> dict[str, Any]:
    """POST /v1/analytics/logs."""
    body = metrics.json_object(body_text)
    start, end = _window(body)
    wanted = _wanted_events(body)
    predicates = _filter(body)
    ascending, limit, token = _pagination(body)
    include_totals = _flag(body, "include_totals")
    _flag(body, "include_subaccounts")  # no subaccounts here: accepted, changes nothing
    # A token is bound to what it selects and its order, not to the window: clients compute "the last day"
    # again for every page (mailgun.js does), so start and end move by a second or so between pages, and the
    # token's position in time is what continues the walk. The page size may change as well.
    canonical = json.dumps({k: body.get(k) for k in ("events", "metric_events", "filter")}, sort_keys=True)
    query_key = hashlib.sha256(f"{canonical}|{ascending}".encode()).hexdigest()[:16]
    pivot = _pivot(token, query_key) if token else None
    unique = {kind: _unique_markers(kind) for kind in ("opened", "clicked")}

    def keeps(item: dict[str, Any], domain: str) -> bool:
        event = json.loads(item["payload"])
        name = event.get("event")
        tests = list(wanted.get(name, []))
        for kind in ("opened", "clicked"):
            if name == kind and f"unique_{kind}" in wanted and unique[kind](item):
                tests.append(_ANY)
        return any(test(event) for test in tests) and all(holds(event, domain) for holds in predicates)

    def keeper(domain: str) -> Callable[[dict[str, Any]], bool]:
        return lambda item: keeps(item, domain)

    found: list[tuple[str, dict[str, Any]]] = []
    counted = 0
    for domain in registry.list_domains(limit=10**9)[0]:
        lo, hi = keys.event_time(start), keys.event_time(end) + "~"
        if pivot is not None:
            lo, hi = (max(lo, pivot), hi) if ascending else (lo, min(hi, pivot))
        items = store.query_index_between(
            table_name(),
            "gsi1",
            ("gsi1pk", keys.events_index_pk(domain.name)),
            ("gsi1sk", lo, hi),
            forward=ascending,
            wanted=limit,
            keep=keeper(domain.name),
            skip_sk=pivot,
            max_pages=_MAX_PAGES_SCANNED,
        )
        found += [
            (str(item["gsi1sk"]), _log_item(json.loads(item["payload"]), domain.name)) for item in items
        ]
        if include_totals:
            counted += _count(domain.name, start, end, keeper(domain.name))
    found.sort(key=lambda pair: pair[0], reverse=not ascending)
    page = found[:limit]
    pagination: dict[str, Any] = {}
    if len(page) == limit:
        pagination["next"] = _token(query_key, page[-1][0])
    answer: dict[str, Any] = {
        "start": queries.rfc2822(start),
        "end": queries.rfc2822(end),
        "items": [item for _sk, item in page],
        "pagination": pagination,
        "aggregates": {},
    }
    if include_totals:
        pagination["total"] = counted
        answer["aggregates"] = {"all": counted, "metrics": {}}
    return answer


def _count(domain: str, start: float, end: float, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Every matching event of a domain in the window, exactly, or a 400 that says the window is too big
    to count (a total that stopped counting would be a wrong number)."""
    total = store.count_index_between(
        table_name(),
        "gsi1",
        ("gsi1pk", keys.events_index_pk(domain)),
        ("gsi1sk", keys.event_time(start), keys.event_time(end) + "~"),
        keep=keep,
        max_items=_MAX_COUNTED,
        max_pages=_MAX_PAGES_COUNTED,
    )
    if total is None:
        raise BadRequest(
            f"Too many events to count (more than {_MAX_COUNTED} match, or the window holds too many to "
            "read in one request): narrow the window or the filter to get a total"
        )
    return total
