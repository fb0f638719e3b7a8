"""Mailgun's tag aggregates: a tag's events by device type, country and mailbox provider
(`GET /v3/{domain}/tags/{tag}/stats/aggregates/devices`, `/countries`, `/providers`).

They are counted where the hourly counters are, as more attributes of the same counter items
(`agg|<dimension>|<value>|<metric>`), so an event's aggregates cost no write of their own and are exactly
as idempotent as its counts. Providers are the recipient's mailbox provider, from a bounded list of the
large ones (a campaign to 5,000 small domains would otherwise grow one item by thousands of attributes);
every other domain counts as `other`. Countries are the reader's, where the event knows one.
"""

from __future__ import annotations

from typing import Any

from opentracking.core.config import table_name
from opentracking.core.errors import NotFound
from opentracking.storage import keys, store

PREFIX = "agg|"
DEVICE_TYPES = ("desktop", "mobile", "tablet", "unknown")
# metric -> the dimensions Mailgun aggregates it by
_DIMENSIONS_OF = {
    "accepted": ("provider",),
    "delivered": ("provider",),
    "opened": ("device", "country", "provider"),
    "unique_opened": ("device", "country", "provider"),
    "clicked": ("device", "country", "provider"),
    "unique_clicked": ("device", "country", "provider"),
    "unsubscribed": ("device", "country", "provider"),
    "complained": ("device", "country", "provider"),
}
METRICS_OF = {
    "devices": ("clicked", "complained", "opened", "unique_clicked", "unique_opened", "unsubscribed"),
    "countries": ("clicked", "complained", "opened", "unique_clicked", "unique_opened", "unsubscribed"),
    "providers": (
        "accepted",
        "clicked",
        "complained",
        "delivered",
        "opened",
        "unique_clicked",
        "unique_opened",
        "unsubscribed",
    ),
}
_DIMENSION = {"devices": "device", "countries": "country", "providers": "provider"}
# recipient domain -> its provider, for the large mailbox providers; everything else is "other"
PROVIDERS = {
    **dict.fromkeys(("gmail.com", "googlemail.com"), "gmail.com"),
    **dict.fromkeys(("yahoo.com", "ymail.com", "rocketmail.com", "yahoo.co.uk", "yahoo.fr"), "yahoo.com"),
    **dict.fromkeys(("hotmail.com", "outlook.com", "live.com", "msn.com", "hotmail.co.uk"), "hotmail.com"),
    **dict.fromkeys(("aol.com",), "aol.com"),
    **dict.fromkeys(("icloud.com", "me.com", "mac.com"), "icloud.com"),
    **dict.fromkeys(("gmx.com", "gmx.de", "gmx.net", "web.de"), "gmx.com"),
    **dict.fromkeys(("mail.ru", "yandex.ru", "yandex.com"), "mail.ru"),
    **dict.fromkeys(("comcast.net", "att.net", "verizon.net"), "comcast.net"),
    **dict.fromkeys(("proton.me", "protonmail.com"), "proton.me"),
    **dict.fromkeys(("zoho.com",), "zoho.com"),
}


def provider_of(recipient: str) -> str:
    return PROVIDERS.get(recipient.rpartition("@")[2].lower(), "other")


def _value(event: dict[str, Any], dimension: str) -> str:
    if dimension == "provider":
        return provider_of(str(event.get("recipient") or ""))
    if dimension == "device":
        client = event.get("client-info")
        device = str((client if isinstance(client, dict) else {}).get("device-type") or "unknown").lower()
        return device if device in DEVICE_TYPES else "unknown"
    where = event.get("geolocation")
    return str((where if isinstance(where, dict) else {}).get("country") or "Unknown")[:64]


def increments(event: dict[str, Any], *metrics: str) -> dict[str, int]:
    """The aggregate counters one event adds 1 to, for each of its metrics, beside its hourly counts."""
    return {
        f"{PREFIX}{dimension}|{_value(event, dimension)}|{metric}": 1
        for metric in metrics
        for dimension in _DIMENSIONS_OF[metric]
    }


def tag_aggregates(domain: str, tag: str, kind: str, shards: int) -> dict[str, Any]:
    """One of Mailgun's aggregates of a tag, over every counter it still has (StatsRetentionDays)."""
    if kind not in METRICS_OF:
        raise NotFound(f"No aggregates by {kind}: devices, countries or providers")
    dimension, metrics = _DIMENSION[kind], METRICS_OF[kind]
    found: dict[str, dict[str, int]] = (
        {device: dict.fromkeys(metrics, 0) for device in DEVICE_TYPES} if kind == "devices" else {}
    )
    for shard in range(shards):
        for item in store.query_prefix(table_name(), keys.stats_pk(domain, tag, shard), ""):
            for name, count in item.items():
                if not name.startswith(f"{PREFIX}{dimension}|"):
                    continue
                _, _, value, metric = name.split("|", 3)
                if metric in metrics:
                    row = found.setdefault(value, dict.fromkeys(metrics, 0))
                    row[metric] += int(count)
    return {kind: found, "tag": tag}
