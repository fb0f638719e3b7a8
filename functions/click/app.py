"""GET|HEAD /c/{token}: the click-tracking redirect.

No resolver, like the pixel: one route, on the reader's path. The library does the work (verify, one
write or a spill, the 302); see `opentracking.clicks`.
"""

from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking import clicks
from opentracking.observability import metrics


@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return clicks.handle(event)
