"""GET|HEAD /o/{token}: the tracking pixel.

No resolver here on purpose: this is the hot path, and every reader gets the same GIF whatever the
path, token or headers, even when Secrets Manager or DynamoDB are down.
"""

import time

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking import pixel, tokens
from opentracking.config import settings
from opentracking.observability import logger, metrics


def _record(event: dict) -> None:
    config = settings()
    token = (event.get("pathParameters") or {}).get("token") or ""
    try:
        claims = tokens.verify_token(tokens.load_keyring(config.token_secret_name, profile="pixel"), token)
    except tokens.InvalidToken:
        metrics.add_metric(name="InvalidToken", unit=MetricUnit.Count, value=1)
        return
    http = (event.get("requestContext") or {}).get("http") or {}
    now = time.time()
    item = pixel.open_item(
        claims,
        request_id=(event.get("requestContext") or {}).get("requestId") or f"{now:.6f}",
        source_ip=http.get("sourceIp", ""),
        user_agent=http.get("userAgent") or (event.get("headers") or {}).get("user-agent", ""),
        method=http.get("method", "GET"),
        expires_at=int(now) + config.event_retention_days * 86400,
        now=now,
    )
    pixel.record_open(config.table_name, item)
    metrics.add_metric(name="OpenRecorded", unit=MetricUnit.Count, value=1)


@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    try:
        _record(event)
    except Exception as exc:
        # The reader still gets the image; the failure is logged (no token, no address) and counted.
        logger.warning("open not recorded", extra={"error": type(exc).__name__})
        metrics.add_metric(name="OpenWriteFailed", unit=MetricUnit.Count, value=1)
    return pixel.gif_response()
