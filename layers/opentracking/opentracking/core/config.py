"""Configuration from environment variables, read and validated once per process."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache

from opentracking.core.errors import OpenTrackingError


@dataclass(frozen=True)
class Settings:
    table_name: str
    bucket_name: str
    token_secret_name: str
    api_keys_secret_name: str
    # Pixel links are always https on AWS (API Gateway serves nothing else); the local stack may serve http.
    tracking_scheme: str = "https"
    event_retention_days: int = 30
    stats_retention_days: int = 400
    tag_limit: int = 20_000  # distinct tags a domain may have (Mailgun's default: 20,000 per domain)


def _require(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise OpenTrackingError(f"environment variable {name} is not set")
    return value


def table_name() -> str:
    """The one DynamoDB table every record lives in."""
    return settings().table_name


def account_id() -> str:
    """This deployment's account id, in Mailgun's form (24 hex digits, as in webhook payloads' `account.id`):
    opaque, the same in every function, stable for the life of its table."""
    return hashlib.sha256(f"opentracking-account:{table_name()}".encode()).hexdigest()[:24]


@cache
def settings() -> Settings:
    scheme = os.environ.get("TRACKING_SCHEME", "https").strip().lower() or "https"
    if scheme not in ("http", "https"):
        raise OpenTrackingError(f"TRACKING_SCHEME must be http or https, not {scheme!r}")
    days = int(os.environ.get("EVENT_RETENTION_DAYS", "30"))
    if days < 1:
        raise OpenTrackingError("EVENT_RETENTION_DAYS must be at least 1")
    stats_days = int(os.environ.get("STATS_RETENTION_DAYS", "400"))
    if stats_days < 1:
        raise OpenTrackingError("STATS_RETENTION_DAYS must be at least 1")
    tag_limit = int(os.environ.get("TAG_LIMIT", "20000"))
    if tag_limit < 1:
        raise OpenTrackingError("TAG_LIMIT must be at least 1")
    return Settings(
        table_name=_require("TABLE_NAME"),
        bucket_name=_require("BUCKET_NAME"),
        token_secret_name=_require("TOKEN_SECRET_NAME"),
        api_keys_secret_name=_require("API_KEYS_SECRET_NAME"),
        tracking_scheme=scheme,
        event_retention_days=days,
        stats_retention_days=stats_days,
        tag_limit=tag_limit,
    )
