"""The tracking pixel: the GIF every reader gets, and the one write that records an open.

The hot path reads nothing: the token alone says which message copy was opened. Recipient, tags and
variables are joined downstream from the copy record (the DynamoDB stream), where uniqueness and counters
are also handled.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from opentracking.core.aws import client
from opentracking.core.config import settings
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger
from opentracking.storage import keys, raw_events
from opentracking.tracking import tokens
from opentracking.tracking.anonymity import anonymize_ip
from opentracking.tracking.tokens import OpenClaims

# The classic 43-byte transparent 1x1 GIF89a (white palette entry, transparency extension on index 0).
GIF = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")

_GIF_BODY = base64.b64encode(GIF).decode("ascii")
PIXEL_HEADERS = {
    "Content-Type": "image/gif",
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "Content-Length": str(len(GIF)),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
MAX_USER_AGENT = 1024


def handle(event: dict[str, Any]) -> dict[str, Any]:
    """The whole pixel: the GIF for every request, whatever the path, token or headers, even when Secrets
    Manager or DynamoDB are down. An open that cannot be verified or written within the budget goes to
    the spill queue; one that not even the spill queue takes is counted as lost. Never raises."""
    try:
        _record(ReaderRequest.from_event(event))
    except Exception as exc:
        logger.error("open lost", extra={"error": type(exc).__name__})
        count(Metric.OPEN_LOST)
    return gif_response()


def _record(request: ReaderRequest) -> None:
    if not request.token:
        count(Metric.INVALID_TOKEN)
        return
    config = settings()
    claims = None
    try:
        keyring = tokens.load_keyring(config.token_secret_name, profile="pixel")
        claims = tokens.verify_token(keyring, request.token)
        raw_events.put(config.table_name, item_for(request, claims, config.event_retention_days))
    except tokens.InvalidToken:
        count(Metric.INVALID_TOKEN)
        return
    except Exception as exc:
        # Keys or table out of reach: keep the open for the redrive function.
        logger.warning("open spilled", extra={"error": type(exc).__name__})
        spill(scrubbed(request, claims))
        count(Metric.OPEN_SPILLED)
        return
    count(Metric.OPEN_RECORDED)


def gif_response() -> dict[str, Any]:
    """The API Gateway (payload 2.0) response for every pixel request, whatever happened."""
    return {"statusCode": 200, "headers": dict(PIXEL_HEADERS), "body": _GIF_BODY, "isBase64Encoded": True}


@dataclass(frozen=True)
class ReaderRequest:
    """A reader's request to the pixel or to a tracked link: what its raw open or click needs, from the API
    Gateway event. Both share the spill queue and its redrive, so `kind` says which one a spilled one is."""

    token: str
    request_id: str
    source_ip: str
    user_agent: str
    method: str
    at: float
    kind: str = "open"  # or "click"; spilled opens from before clicks existed have no kind

    @classmethod
    def from_event(cls, event: dict[str, Any], now: float | None = None, kind: str = "open") -> ReaderRequest:
        now = time.time() if now is None else now
        context = event.get("requestContext") or {}
        http = context.get("http") or {}
        agent = http.get("userAgent") or (event.get("headers") or {}).get("user-agent", "")
        return cls(
            token=(event.get("pathParameters") or {}).get("token") or "",
            request_id=context.get("requestId") or f"{now:.6f}",
            source_ip=http.get("sourceIp", ""),
            user_agent=agent[:MAX_USER_AGENT],
            method=http.get("method", "GET"),
            at=now,
            kind=kind,
        )


def item_for(request: ReaderRequest, claims: OpenClaims, retention_days: int) -> dict[str, Any]:
    """The raw open for a verified request. The token carries the domain's privacy instructions, so an
    anonymising domain's reader address is truncated here, before the one write; `retention_days` is the
    deployment default that a token's own retention overrides."""
    days = claims.retention_days or retention_days
    return open_item(
        claims,
        request_id=request.request_id,
        source_ip=anonymize_ip(request.source_ip) if claims.anonymize_ip else request.source_ip,
        user_agent=request.user_agent,
        method=request.method,
        expires_at=int(request.at) + days * 86400,
        now=request.at,
    )


def scrubbed(request: ReaderRequest, claims: OpenClaims | None) -> ReaderRequest:
    """The request as it may be parked on the spill queue: without the full address when the token
    (already verified) asks for anonymisation. The redrive truncates the address again anyway."""
    if claims is None or not claims.anonymize_ip:
        return request
    return replace(request, source_ip=anonymize_ip(request.source_ip))


def spill(request: ReaderRequest) -> None:
    """Park an open that could not be written (or verified) on the durable spill queue. The redrive
    function verifies and writes it later with the same key, so a late write is still one open."""
    client("sqs", "pixel").send_message(
        QueueUrl=os.environ["SPILL_QUEUE_URL"], MessageBody=json.dumps(asdict(request))
    )


def from_spill(body: str) -> ReaderRequest:
    return ReaderRequest(**json.loads(body))


def open_item(
    claims: OpenClaims,
    *,
    request_id: str,
    source_ip: str,
    user_agent: str,
    method: str,
    expires_at: int,
    now: float | None = None,
) -> dict[str, Any]:
    """The raw open in DynamoDB's wire format (no serializer on the hot path)."""
    now = time.time() if now is None else now
    return {
        "pk": {"S": keys.copy_pk(claims.copy_id)},
        # The request id keeps concurrent opens apart and makes a retried write land on the same item.
        "sk": {"S": keys.raw_open_sk(int(now * 1000), request_id)},
        "type": {"S": "open"},
        "domain": {"S": claims.domain},
        "ts": {"N": f"{now:.6f}"},
        "ip": {"S": source_ip or "unknown"},
        "user_agent": {"S": (user_agent or "")[:MAX_USER_AGENT]},
        "method": {"S": method},
        "key_id": {"N": str(claims.key_id)},
        "expires_at": {"N": str(expires_at)},
    }
