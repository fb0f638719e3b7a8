"""GET|HEAD /o/{token}: the tracking pixel.

No resolver here on purpose: this is the hot path, and every reader gets the same GIF whatever the
path, token or headers, even when Secrets Manager or DynamoDB are down. An open that cannot be verified
or written within the budget goes to the spill queue instead of being lost.
"""

from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking import pixel, tokens
from opentracking.config import settings
from opentracking.metric_names import Metric
from opentracking.observability import count, logger, metrics


def _record(event: dict) -> None:
    config = settings()
    request = pixel.OpenRequest.from_event(event)
    if not request.token:
        count(Metric.INVALID_TOKEN)
        return
    claims = None
    try:
        keyring = tokens.load_keyring(config.token_secret_name, profile="pixel")
        claims = tokens.verify_token(keyring, request.token)
        pixel.record_open(config.table_name, pixel.item_for(request, claims, config.event_retention_days))
    except tokens.InvalidToken:
        count(Metric.INVALID_TOKEN)
        return
    except Exception as exc:
        # Keys or table out of reach: keep the open for the redrive function.
        logger.warning("open spilled", extra={"error": type(exc).__name__})
        pixel.spill(pixel.scrubbed(request, claims))
        count(Metric.OPEN_SPILLED)
        return
    count(Metric.OPEN_RECORDED)


@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    try:
        _record(event)
    except Exception as exc:
        # Not even the spill queue answered. The reader still gets the image; the loss is counted.
        logger.error("open lost", extra={"error": type(exc).__name__})
        count(Metric.OPEN_LOST)
    return pixel.gif_response()
