"""Scheduled (EventBridge): check every domain's tracking CNAME and report."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking import health
from opentracking.config import settings
from opentracking.observability import logger, metrics
from opentracking.tracing import tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return health.check_all(settings().bucket_name)
