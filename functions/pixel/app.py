"""GET|HEAD /o/{token}: the tracking pixel.

No resolver here on purpose: this is the hot path, one route, and every reader gets the same GIF. The
library does the work (verify, one write or a spill, the GIF); see `opentracking.pixel.handle`.
"""

from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking import pixel
from opentracking.observability import metrics


@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return pixel.handle(event)
