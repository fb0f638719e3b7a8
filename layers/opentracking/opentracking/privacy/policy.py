"""Per-domain privacy settings: IP anonymisation and retention overrides.

A domain's settings live in their own item (`DOMAIN#{domain}` / `PRIVACY`) beside the domain record, so
they can change without touching it. They are applied where data is written:

- submission puts them in each copy's signed token (the pixel reads nothing, so it learns from the token
  whether to anonymise the reader's address and how long to keep the raw open), and in the copy record;
- the events consumer applies the domain's *current* settings again, so a domain that switches
  anonymisation on stops storing full addresses for opens of messages sent before the switch too (it
  rewrites the raw open's address before anything is derived from it);
- TTLs: events, copies, messages and raw opens get the domain's event retention, counters and tags its
  stats retention, from the time they are written (items already written keep the TTL they were given).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from opentracking.core.config import settings, table_name
from opentracking.core.errors import BadRequest
from opentracking.http.forms import Form
from opentracking.messages.options import parse_bool
from opentracking.storage import keys, store

MAX_RETENTION_DAYS = 3650


@dataclass(frozen=True)
class PrivacySettings:
    anonymize_ip: bool = False
    event_retention_days: int | None = None  # None: the deployment's EventRetentionDays
    stats_retention_days: int | None = None  # None: the deployment's StatsRetentionDays

    def event_days(self) -> int:
        return self.event_retention_days or settings().event_retention_days

    def stats_days(self) -> int:
        return self.stats_retention_days or settings().stats_retention_days

    def response(self) -> dict[str, Any]:
        config = settings()
        return {
            "privacy": {
                "anonymize_ip": self.anonymize_ip,
                "event_retention_days": self.event_days(),
                "stats_retention_days": self.stats_days(),
                "defaults": {
                    "event_retention_days": config.event_retention_days,
                    "stats_retention_days": config.stats_retention_days,
                },
            }
        }


def _key(domain: str) -> dict[str, Any]:
    return keys.privacy_key(domain)


def get(domain: str) -> PrivacySettings:
    item = store.get_item(table_name(), _key(domain))
    if item is None:
        return PrivacySettings()

    def days(name: str) -> int | None:
        return int(item[name]) if item.get(name) is not None else None

    return PrivacySettings(
        anonymize_ip=bool(item.get("anonymize_ip", False)),
        event_retention_days=days("event_retention_days"),
        stats_retention_days=days("stats_retention_days"),
    )


def cached(domain: str, cache: dict[str, Any]) -> PrivacySettings:
    """The domain's settings, read at most once per cache (the events consumer keeps one per batch)."""
    key = f"privacy:{domain}"  # a cache entry beside the batch's copies, whose keys are table keys
    if key not in cache:
        cache[key] = get(domain)
    settings: PrivacySettings = cache[key]
    return settings


def _days(name: str, value: str) -> int | None:
    """A number of days, or "default"/empty to go back to the deployment's default."""
    text = value.strip().lower()
    if text in ("", "default"):
        return None
    # isascii: str.isdigit() also accepts digits int() refuses, such as "²"
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_RETENTION_DAYS:
        raise BadRequest(f"'{name}' must be a number of days from 1 to {MAX_RETENTION_DAYS}, or 'default'")
    return int(text)


def update(domain: str, form: Form) -> PrivacySettings:
    """Apply the fields given (`anonymize_ip`, `event_retention_days`, `stats_retention_days`); the
    others keep their value. Everything is validated before anything is written."""
    current = get(domain)
    anonymize, events_days, stats_days = (
        form.last("anonymize_ip"),
        form.last("event_retention_days"),
        form.last("stats_retention_days"),
    )
    if anonymize is None and events_days is None and stats_days is None:
        raise BadRequest(
            "'anonymize_ip', 'event_retention_days' or 'stats_retention_days' parameter is required"
        )
    updated = PrivacySettings(
        anonymize_ip=(
            current.anonymize_ip if anonymize is None else bool(parse_bool("anonymize_ip", anonymize))
        ),
        event_retention_days=(
            current.event_retention_days
            if events_days is None
            else _days("event_retention_days", events_days)
        ),
        stats_retention_days=(
            current.stats_retention_days if stats_days is None else _days("stats_retention_days", stats_days)
        ),
    )
    store.put_item(
        table_name(),
        {
            **_key(domain),
            "type": "privacy",
            "anonymize_ip": updated.anonymize_ip,
            "event_retention_days": updated.event_retention_days,
            "stats_retention_days": updated.stats_retention_days,
            "updated_at": str(time.time()),
        },
    )
    return updated


def delete(domain: str) -> None:
    store.delete_item(table_name(), _key(domain))
