"""Mailgun's Metrics API (`POST /v1/analytics/metrics`), the successor of `/v3/stats`, over the same hourly
counters: counts and rates by time, domain and tag, filtered by domain and tag, sorted and paged.

The dimensions this deployment has data for are `time`, `domain` and `tag`; asking for another (country,
device, ip, ...) is a 400 that says so, not an answer that pretends. Counts come from the counters the events
consumer keeps (`reporting.consumer`); metrics of things this deployment never does (inbound mail, email
validation, optimized delivery) count zero. Rates are percentages with two decimals, as strings as Mailgun
sends them: delivery outcomes over `processed_count` (messages accepted), engagement over `delivered_count`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from opentracking.core.errors import BadRequest
from opentracking.domains import registry
from opentracking.reporting import consumer, queries

DIMENSIONS = ("time", "domain", "tag")
MAILGUN_DIMENSIONS = (
    "bot",
    "country",
    "ip_pool",
    "recipient_domain",
    "recipient_provider",
    "ip",
    "domain",
    "tag",
    "device",
    "subaccount",
    "time",
)
MAX_LIMIT = 1000
MAX_BODY_ITEMS = 100  # metrics, dimensions and filter values one request may name
MAX_PREDICATES = 20  # a filter's AND list


def _c(field: str) -> Callable[[dict[str, int]], int]:
    return lambda totals: totals.get(field, 0)


def _sum(*fields: str) -> Callable[[dict[str, int]], int]:
    return lambda totals: sum(totals.get(field, 0) for field in fields)


def _zero(_totals: dict[str, int]) -> int:
    return 0


_BOUNCED = ("failed_permanent_bounce", "failed_permanent_delayed-bounce")
COUNTS: dict[str, Callable[[dict[str, int]], int]] = {
    "accepted_count": _c("accepted_total"),
    "accepted_outgoing_count": _c("accepted_total"),
    "accepted_incoming_count": _zero,
    "processed_count": _c("accepted_total"),
    "sent_count": _sum("delivered_total", *_BOUNCED),  # handed to a receiving server
    "delivered_count": _c("delivered_total"),
    "delivered_smtp_count": _c("delivered_total"),
    "delivered_http_count": _zero,
    "delivered_optimized_count": _zero,
    "stored_count": _zero,
    "opened_count": _c("opened_total"),
    "unique_opened_count": _c("opened_unique"),
    "clicked_count": _c("clicked_total"),
    "unique_clicked_count": _c("clicked_unique"),
    "unsubscribed_count": _c("unsubscribed_total"),
    "complained_count": _c("complained_total"),
    "failed_count": _sum("failed_permanent_total", "failed_temporary_total"),
    "permanent_failed_count": _c("failed_permanent_total"),
    "temporary_failed_count": _c("failed_temporary_total"),
    "esp_block_count": _c("failed_temporary_espblock"),
    "permanent_failed_old_count": _c("failed_permanent_old"),
    "permanent_failed_optimized_count": _zero,
    "bounced_count": _sum(*_BOUNCED),
    "hard_bounces_count": _c("failed_permanent_bounce"),
    "soft_bounces_count": _c("failed_temporary_total"),
    "delayed_bounce_count": _c("failed_permanent_delayed-bounce"),
    "suppressed_bounces_count": _c("failed_permanent_suppress-bounce"),
    "suppressed_unsubscribed_count": _c("failed_permanent_suppress-unsubscribe"),
    "suppressed_complaints_count": _c("failed_permanent_suppress-complaint"),
    "webhook_count": _zero,
}
# rate -> (numerator, denominator), both counts above
RATES: dict[str, tuple[str, str]] = {
    "delivered_rate": ("delivered_count", "processed_count"),
    "fail_rate": ("failed_count", "processed_count"),
    "permanent_fail_rate": ("permanent_failed_count", "processed_count"),
    "temporary_fail_rate": ("temporary_failed_count", "processed_count"),
    "bounce_rate": ("bounced_count", "processed_count"),
    "delayed_rate": ("temporary_failed_count", "processed_count"),
    "opened_rate": ("opened_count", "delivered_count"),
    "unique_opened_rate": ("unique_opened_count", "delivered_count"),
    "clicked_rate": ("clicked_count", "delivered_count"),
    "unique_clicked_rate": ("unique_clicked_count", "delivered_count"),
    "unsubscribed_rate": ("unsubscribed_count", "delivered_count"),
    "complained_rate": ("complained_count", "delivered_count"),
}
METRICS = (*COUNTS, *RATES)


def measure(totals: dict[str, int], names: list[str] | tuple[str, ...] = METRICS) -> dict[str, Any]:
    """The named metrics (counts and rates) of summed hourly counters."""
    counts = {name: count(totals) for name, count in COUNTS.items()}
    return {
        name: _rate(counts[RATES[name][0]], counts[RATES[name][1]]) if name in RATES else counts[name]
        for name in names
    }


def _rate(numerator: int, denominator: int) -> str:
    return f"{100 * numerator / denominator:.2f}" if denominator else "0.00"


def _strings(body: dict[str, Any], name: str, allowed: tuple[str, ...], unknown: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest(f"'{name}' must be a list of strings")
    if len(value) > MAX_BODY_ITEMS:
        raise BadRequest(f"'{name}' may name at most {MAX_BODY_ITEMS}")
    for item in value:
        if item not in allowed:
            raise BadRequest(unknown.format(item=item))
    return list(dict.fromkeys(value))


def _text(body: dict[str, Any], name: str) -> str | None:
    """A string field (start, end: RFC 2822 dates; duration: 7d); absent or empty is None."""
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string")
    return value


def _filter(body: dict[str, Any]) -> dict[str, set[str]]:
    """{"AND": [{"attribute", "comparator", "values": [{"label", "value"}]}]}: each attribute `=` (any of the
    values) or `!=` (none of them); attributes domain and tag."""
    raw = body.get("filter")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict) or set(raw) - {"AND"} or not isinstance(raw.get("AND", []), list):
        raise BadRequest("'filter' must be {\"AND\": [predicates]}")
    wanted: dict[str, set[str]] = {}
    if len(raw.get("AND", [])) > MAX_PREDICATES:
        raise BadRequest(f"'filter' takes at most {MAX_PREDICATES} predicates")
    for predicate in raw.get("AND", []):
        if not isinstance(predicate, dict):
            raise BadRequest("a filter predicate must be an object")
        attribute, comparator = predicate.get("attribute"), predicate.get("comparator")
        values = predicate.get("values")
        if attribute not in ("domain", "tag"):
            raise BadRequest(f"filters on {attribute!r} are not supported here: filter on domain or tag")
        if comparator not in ("=", "!=") or not isinstance(values, list) or not values:
            raise BadRequest("a filter predicate needs comparator '=' or '!=' and a list of values")
        if len(values) > MAX_BODY_ITEMS:
            raise BadRequest(f"a filter predicate takes at most {MAX_BODY_ITEMS} values")
        names = set()
        for value in values:
            if not isinstance(value, dict) or not isinstance(value.get("value"), str):
                raise BadRequest('a filter value must be {"label": ..., "value": "<string>"}')
            names.add(value["value"].lower())
        wanted[f"{attribute}{comparator}"] = wanted.get(f"{attribute}{comparator}", set()) | names
    return wanted


def _kept(name: str, attribute: str, wanted: dict[str, set[str]]) -> bool:
    if f"{attribute}=" in wanted and name.lower() not in wanted[f"{attribute}="]:
        return False
    return name.lower() not in wanted.get(f"{attribute}!=", set())


def _pagination(body: dict[str, Any], dimensions: list[str], metrics: list[str]) -> tuple[str, int, int]:
    raw = body.get("pagination")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise BadRequest("'pagination' must be an object")
    sort, skip, limit = raw.get("sort", ""), raw.get("skip", 0), raw.get("limit", 10)
    if not isinstance(skip, int) or isinstance(skip, bool) or skip < 0:
        raise BadRequest("'pagination.skip' must be a whole number")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"'pagination.limit' must be between 1 and {MAX_LIMIT}")
    if not isinstance(sort, str):
        raise BadRequest("'pagination.sort' must be a string")
    if sort:
        field, _, order = sort.partition(":")
        if field not in (*dimensions, *metrics) or order not in ("", "asc", "desc"):
            raise BadRequest("'pagination.sort' must be a requested dimension or metric, then :asc or :desc")
    return sort, skip, limit


def json_object(body_text: str | None) -> dict[str, Any]:
    """A JSON request body (the v1 analytics APIs take JSON, not forms): an object, else a 400."""
    try:
        body = json.loads(body_text or "{}")
    except (ValueError, RecursionError):
        raise BadRequest("The request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


def query(body_text: str | None) -> dict[str, Any]:
    """POST /v1/analytics/metrics with a JSON body."""
    body = json_object(body_text)
    dimensions = _strings(body, "dimensions", MAILGUN_DIMENSIONS, "'{item}' is not a dimension Mailgun has")
    for dimension in dimensions:
        if dimension not in DIMENSIONS:
            raise BadRequest(
                f"The dimension '{dimension}' has no data in this deployment: use {', '.join(DIMENSIONS)}"
            )
    metrics = _strings(body, "metrics", METRICS, "'{item}' is not a metric of this API")
    resolution = body.get("resolution") or "day"
    if resolution not in queries.RESOLUTIONS:
        raise BadRequest("'resolution' must be hour, day or month")
    duration = _text(body, "duration")
    start, end = queries.stats_window(
        _text(body, "start"), _text(body, "end"), duration, resolution, duration_wins=True
    )
    wanted = _filter(body)
    sort, skip, limit = _pagination(body, dimensions, metrics)
    include_aggregates = bool(body.get("include_aggregates"))

    # One group per combination of the dimensions' values (time as the bucket's start), summed.
    groups: dict[tuple[Any, ...], dict[str, int]] = {}
    overall: dict[str, int] = {}
    per_tag = "tag" in dimensions or any(key.startswith("tag") for key in wanted)
    for domain in registry.list_domains(limit=10**9)[0]:
        if not _kept(domain.name, "domain", wanted):
            continue
        for tag in queries.tag_names(domain.name) if per_tag else [consumer.ALL_TAGS]:
            if per_tag and not _kept(tag, "tag", wanted):
                continue
            for hour, counters in queries.hourly_counters(domain.name, tag, start, end).items():
                values = {"time": queries.bucket_start(hour, resolution), "domain": domain.name, "tag": tag}
                totals = groups.setdefault(tuple(values[d] for d in dimensions), {})
                for field, value in counters.items():
                    totals[field] = totals.get(field, 0) + value
                    overall[field] = overall.get(field, 0) + value
    if "time" in dimensions:  # every bucket of the window, zero-filled, as a chart expects
        position = dimensions.index("time")
        others = {key[:position] + key[position + 1 :] for key in groups}
        if len(dimensions) == 1:
            others = {()}
        bucket = queries.bucket_start(start, resolution)
        while bucket <= end:
            for rest in others:
                groups.setdefault((*rest[:position], bucket, *rest[position:]), {})
            bucket = queries.next_bucket(bucket, resolution)

    def measured(totals: dict[str, int]) -> dict[str, Any]:
        return measure(totals, metrics)

    def shown(dimension: str, value: Any) -> dict[str, str]:
        text = _rfc2822(value) if dimension == "time" else str(value)
        return {"dimension": dimension, "value": text, "display_value": text}

    ordered = sorted(groups.items(), key=lambda group: group[0])
    if sort:
        field, _, order = sort.partition(":")
        if field in dimensions:
            ordered.sort(key=lambda group: group[0][dimensions.index(field)], reverse=order == "desc")
        else:
            ordered.sort(key=lambda group: float(measured(group[1])[field]), reverse=order == "desc")
    items = [
        {
            "dimensions": [shown(d, v) for d, v in zip(dimensions, key, strict=True)],
            "metrics": measured(totals),
        }
        for key, totals in ordered[skip : skip + limit]
    ]
    answer: dict[str, Any] = {
        "start": _rfc2822(start),
        "end": _rfc2822(end),
        "resolution": resolution,
        "duration": duration or "",
        "dimensions": dimensions,
        "items": items,
        "pagination": {"sort": sort, "skip": skip, "limit": limit, "total": len(ordered)},
    }
    if include_aggregates:
        answer["aggregates"] = {"metrics": measured(overall)}
    return answer


def _rfc2822(moment: datetime) -> str:
    """As the Metrics API writes times: "Tue, 24 Sep 2024 00:00:00 +0000"."""
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
