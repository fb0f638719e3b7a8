"""Scheduled (EventBridge): check every domain's tracking CNAME and report."""

from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.config import settings
from opentracking.core.observability import logger, metrics
from opentracking.core.tracing import tracer
from opentracking.domains import health


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return health.check_all(settings().bucket_name)
