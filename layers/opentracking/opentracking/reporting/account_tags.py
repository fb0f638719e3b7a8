"""Mailgun's account tags API (`/v1/analytics/tags`): the account's tags across its domains, listed with a
JSON query (prefix, sort, skip, limit, total, metrics), described, deleted, and its tag limits.

Tags are kept per domain (`/v3/{domain}/tags`); an account tag is every domain's tag of that name: first
seen when the first of them was, last seen when the last was, described and deleted on all of them at once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from opentracking.core.config import account_id, settings, table_name
from opentracking.core.errors import BadRequest, NotFound
from opentracking.domains import registry
from opentracking.reporting import metrics, queries, tag_limits
from opentracking.storage import keys, store

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
MAX_LIMIT_WITH_METRICS = 20  # as Mailgun: metrics are summed per tag, so fewer tags a page
SORT_FIELDS = {"tag": "tag", "firstseen": "first_seen", "lastseen": "last_seen"}
DEFAULT_SORT = "lastseen:desc"
ACCOUNT_NAME = "opentracking"


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"'{name}' must be true or false")
    return value


def _whole(raw: dict[str, Any], name: str, default: int) -> int:
    value = raw.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"'pagination.{name}' must be a whole number")
    return value


def _tag_field(body: dict[str, Any]) -> str:
    tag = body.get("tag", "")
    if not isinstance(tag, str) or len(tag) > 1024:
        raise BadRequest("'tag' must be a string")
    return tag.strip().lower()


def _account_tags(prefix: str) -> dict[str, dict[str, Any]]:
    """Every tag of the account whose name starts with `prefix`: {tag: {tag, description, first_seen,
    last_seen, domains}}, merged over the domains."""
    merged: dict[str, dict[str, Any]] = {}
    for domain in registry.list_domains(limit=10**9)[0]:
        for item in store.query_prefix(table_name(), keys.tags_pk(domain.name), prefix):
            name = str(item["sk"])
            first, last = float(item["first_seen"]), float(item["last_seen"])
            tag = merged.setdefault(
                name,
                {"tag": name, "description": "", "first_seen": first, "last_seen": last, "domains": []},
            )
            tag["first_seen"], tag["last_seen"] = min(tag["first_seen"], first), max(tag["last_seen"], last)
            tag["description"] = tag["description"] or item.get("description", "")
            tag["domains"].append(domain.name)
    return merged


def _tag_metrics(tag: dict[str, Any]) -> dict[str, Any]:
    """Every metric of the Metrics API, summed over the tag's life in every domain that has it."""
    start = datetime.fromtimestamp(tag["first_seen"], UTC)
    end = datetime.fromtimestamp(time.time(), UTC)
    totals: dict[str, int] = {}
    for domain in tag["domains"]:
        for counters in queries.hourly_counters(domain, tag["tag"], start, end).values():
            for field, value in counters.items():
                totals[field] = totals.get(field, 0) + value
    return metrics.measure(totals)


def list_tags(body_text: str | None) -> dict[str, Any]:
    """POST /v1/analytics/tags."""
    body = metrics.json_object(body_text)
    include_metrics = _flag(body, "include_metrics")
    _flag(body, "include_subaccounts")  # no subaccounts here: accepted, changes nothing
    raw = body.get("pagination")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise BadRequest("'pagination' must be an object")
    skip, limit = _whole(raw, "skip", 0), _whole(raw, "limit", DEFAULT_LIMIT)
    most = MAX_LIMIT_WITH_METRICS if include_metrics else MAX_LIMIT
    if not 1 <= limit <= most:
        raise BadRequest(f"'pagination.limit' must be between 1 and {most}")
    include_total = raw.get("include_total", False)
    if not isinstance(include_total, bool):
        raise BadRequest("'pagination.include_total' must be true or false")
    sort = raw.get("sort") or DEFAULT_SORT
    field, _, order = sort.partition(":") if isinstance(sort, str) else ("", "", "")
    if field not in SORT_FIELDS or order not in ("", "asc", "desc"):
        raise BadRequest(f"'pagination.sort' must be one of {', '.join(SORT_FIELDS)}, then :asc or :desc")

    tags = sorted(_account_tags(_tag_field(body)).values(), key=lambda tag: tag["tag"])
    tags.sort(key=lambda tag: tag[SORT_FIELDS[field]], reverse=order == "desc")
    items = []
    for tag in tags[skip : skip + limit]:
        item = {
            "account_id": account_id(),
            "parent_account_id": "",
            "tag": tag["tag"],
            "description": tag["description"],
            "first_seen": queries.rfc3339(tag["first_seen"]),
            "last_seen": queries.rfc3339(tag["last_seen"]),
            "account_name": ACCOUNT_NAME,
        }
        if include_metrics:
            item["metrics"] = _tag_metrics(tag)
        items.append(item)
    pagination: dict[str, Any] = {"sort": f"{field}:{order or 'asc'}", "skip": skip, "limit": limit}
    if include_total:
        pagination["total"] = len(tags)
    return {"items": items, "pagination": pagination}


def _named_tag(body_text: str | None) -> tuple[dict[str, Any], str]:
    body = metrics.json_object(body_text)
    tag = _tag_field(body)
    if not tag:
        raise BadRequest("'tag' parameter is missing")
    return body, tag


def _domains_with(tag: str) -> list[str]:
    domains = _account_tags(tag)
    if tag not in domains:
        raise NotFound("Tag not found")
    return list(domains[tag]["domains"])


def describe_tag(body_text: str | None) -> dict[str, Any]:
    """PUT /v1/analytics/tags {"tag", "description"}: the description of the tag in every domain."""
    body, tag = _named_tag(body_text)
    description = body.get("description")
    if not isinstance(description, str):
        raise BadRequest("'description' parameter is missing")
    for domain in _domains_with(tag):
        queries.describe_tag(domain, tag, description)
    return {"message": "Tag updated"}


def delete_tag(body_text: str | None) -> dict[str, Any]:
    """DELETE /v1/analytics/tags {"tag"}: the tag and its counters, in every domain."""
    _, tag = _named_tag(body_text)
    for domain in _domains_with(tag):
        queries.delete_tag(domain, tag)
    return {"message": "Tag deleted"}


def limits() -> dict[str, Any]:
    """GET /v1/analytics/tags/limits: over the account's domains, `count` is the sum of their tags and
    `limit` the sum of their limits; `limit_reached` says whether any domain is full (its new tags are
    dropped from messages)."""
    counts = [tag_limits.tag_count(domain.name) for domain in registry.list_domains(limit=10**9)[0]]
    per_domain = settings().tag_limit
    return {
        "limit": per_domain * len(counts),
        "count": sum(counts),
        "limit_reached": any(found >= per_domain for found in counts),
    }
