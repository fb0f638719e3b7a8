"""GET|HEAD /c/{token}: the click-tracking redirect.

The token seals the link's URL (see `opentracking.tracking.tokens`), so the redirect reads nothing: a genuine
token answers 302 to exactly the URL sealed in it, whatever else the request says (no open redirect), and
records the click with one PutItem on the pixel's tight client. A write that fails goes to the pixel's
spill queue and its redrive, so the reader is redirected even when DynamoDB is down and the click is
written later. A forged, edited or truncated token is never redirected and writes nothing: it gets a
plain 404 page. Only when the signing keys cannot be read at all (Secrets Manager down on a cold start)
is there no way to know the URL: the click is spilled and the reader gets a 503 page asking to retry.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote, urlsplit

from opentracking.core.config import settings
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger
from opentracking.storage import keys, raw_events
from opentracking.tracking import pixel, tokens
from opentracking.tracking.tokens import ClickClaims

_COMMON_HEADERS = {
    # Every click must reach us: no browser or proxy may answer it from a cache.
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    # The target must not learn the tracking URL (it names the copy) through the Referer header.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_PAGE_HEADERS = {
    **_COMMON_HEADERS,
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": "default-src 'none'",
}
# Static pages: nothing from the request is ever echoed back.
_INVALID_PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><title>Link not valid</title></head><body>"
    "<h1>This link is not valid</h1><p>The link you followed is damaged or was not issued by this "
    "service, so it leads nowhere. Open the original email again and use the link from there.</p>"
    "</body></html>"
)
_UNAVAILABLE_PAGE = (
    "<!doctype html><html><head><meta charset=utf-8><title>Try again</title></head><body>"
    "<h1>Please try again in a moment</h1><p>This link cannot be followed right now.</p></body></html>"
)
# What may appear in a Location header as is; everything else (spaces, non-ASCII, quotes) is
# percent-encoded as browsers encode it. "%" is kept so existing escapes stay single-encoded.
_LOCATION_SAFE = "!#$%&'()*+,-./:;=?@[]_~"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def location_for(url: str) -> str | None:
    """The Location header for a sealed URL, or None when it is not an http(s) URL a browser may follow.
    Only URLs this service sealed get here; the check is a second line of defence, not the first."""
    if _CONTROL.search(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return quote(url, safe=_LOCATION_SAFE)


def redirect_response(location: str) -> dict[str, Any]:
    return {"statusCode": 302, "headers": {**_COMMON_HEADERS, "Location": location}, "body": ""}


def invalid_response() -> dict[str, Any]:
    return {"statusCode": 404, "headers": dict(_PAGE_HEADERS), "body": _INVALID_PAGE}


def unavailable_response() -> dict[str, Any]:
    return {"statusCode": 503, "headers": {**_PAGE_HEADERS, "Retry-After": "5"}, "body": _UNAVAILABLE_PAGE}


def item_for(request: pixel.ReaderRequest, claims: ClickClaims, retention_days: int) -> dict[str, Any]:
    """The raw click in DynamoDB's wire format: the copy, when, from where (anonymised when the token
    says so), and the URL followed; kept as long as the token's retention says, like a raw open."""
    item = pixel.item_for(request, claims.open_claims(), retention_days)
    item["sk"] = {"S": keys.raw_click_sk(item["sk"]["S"])}
    item["type"] = {"S": "click"}
    item["url"] = {"S": claims.url}
    return item


def handle(event: dict[str, Any]) -> dict[str, Any]:
    """The whole redirect: verify, redirect, record (or spill). Never raises."""
    config = settings()
    request = pixel.ReaderRequest.from_event(event, kind="click")
    try:
        keyring = tokens.load_keyring(config.token_secret_name, profile="pixel")
    except Exception as exc:
        # Without the keys the URL cannot be read; keep the click for the redrive and ask for a retry.
        logger.warning("click keys unavailable", extra={"error": type(exc).__name__})
        _spill(request)
        return unavailable_response()
    try:
        claims = tokens.verify_click_token(keyring, request.token)
    except tokens.InvalidToken:
        count(Metric.INVALID_CLICK_TOKEN)
        return invalid_response()
    location = location_for(claims.url)
    if location is None:
        count(Metric.INVALID_CLICK_TOKEN)
        return invalid_response()
    started = time.perf_counter()
    try:
        raw_events.put(config.table_name, item_for(request, claims, config.event_retention_days))
    except Exception as exc:
        logger.warning(
            "click spilled",
            extra={"error": type(exc).__name__, "ms": round((time.perf_counter() - started) * 1000)},
        )
        # Parked without the full address when the domain anonymises (the redrive truncates it again).
        _spill(pixel.scrubbed(request, claims.open_claims()))
    else:
        count(Metric.CLICK_RECORDED)
    return redirect_response(location)


def _spill(request: pixel.ReaderRequest) -> None:
    try:
        pixel.spill(request)
    except Exception as exc:
        # Not even the spill queue answered: the reader still gets where they were going; the loss counts.
        logger.error("click lost", extra={"error": type(exc).__name__})
        count(Metric.CLICK_LOST)
        return
    count(Metric.CLICK_SPILLED)
