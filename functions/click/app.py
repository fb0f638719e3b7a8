"""GET|HEAD /c/{token}: the click-tracking redirect.

No resolver, like the pixel: one route, on the reader's path. The library does the work (verify, one
write or a spill, the 302); see `opentracking.tracking.clicks`.
"""

from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.observability import metrics
from opentracking.tracking import clicks


@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return clicks.handle(event)
