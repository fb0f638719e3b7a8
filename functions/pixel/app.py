"""GET|HEAD /o/{token}: the tracking pixel.

No resolver here on purpose: this is the hot path, and every reader gets the same GIF whatever the
path, token or headers, even when Secrets Manager or DynamoDB are down. An open that cannot be verified
or written within the budget goes to the spill queue instead of being lost.
"""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking import pixel, tokens
from opentracking.config import settings
from opentracking.observability import logger, metrics


def _record(event: dict) -> None:
    config = settings()
    request = pixel.OpenRequest.from_event(event)
    if not request.token:
        metrics.add_metric(name="InvalidToken", unit=MetricUnit.Count, value=1)
        return
    claims = None
    try:
        keyring = tokens.load_keyring(config.token_secret_name, profile="pixel")
        claims = tokens.verify_token(keyring, request.token)
        pixel.record_open(config.table_name, pixel.item_for(request, claims, config.event_retention_days))
    except tokens.InvalidToken:
        metrics.add_metric(name="InvalidToken", unit=MetricUnit.Count, value=1)
        return
    except Exception as exc:
        # Keys or table out of reach: keep the open for the redrive function.
        logger.warning("open spilled", extra={"error": type(exc).__name__})
        pixel.spill(pixel.scrubbed(request, claims))
        metrics.add_metric(name="OpenSpilled", unit=MetricUnit.Count, value=1)
        return
    metrics.add_metric(name="OpenRecorded", unit=MetricUnit.Count, value=1)


@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    try:
        _record(event)
    except Exception as exc:
        # Not even the spill queue answered. The reader still gets the image; the loss is counted.
        logger.error("open lost", extra={"error": type(exc).__name__})
        metrics.add_metric(name="OpenLost", unit=MetricUnit.Count, value=1)
    return pixel.gif_response()
