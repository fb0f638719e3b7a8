"""SQS consumer: Amazon SES's reports on the copies it took (EventBridge events, one per message), recorded
as Mailgun's delivered, failed and complained events (see opentracking.delivery.ses_events). A record fails
only when it could not be recorded; Powertools reports it alone (ReportBatchItemFailures).
"""

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.observability import logger, metrics
from opentracking.core.tracing import tracer
from opentracking.delivery import ses_events

processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def record_handler(record: SQSRecord) -> str:
    return ses_events.process(record.body)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
