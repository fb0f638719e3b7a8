"""GET|HEAD /o/{token}: the tracking pixel.

No resolver here on purpose: this is the hot path, one route, and every reader gets the same GIF. The
library does the work (verify, one write or a spill, the GIF); see `opentracking.tracking.pixel.handle`.
"""

from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.observability import metrics
from opentracking.tracking import pixel


@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return pixel.handle(event)
