"""SQS consumer of the spill queue (the work is opentracking.tracking.redrive's).

A message that keeps failing is retried by SQS and, after maxReceiveCount, moved to the dead-letter
queue, from which `aws sqs start-message-move-task` moves it back once the cause is fixed."""

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.observability import logger, metrics
from opentracking.core.tracing import tracer
from opentracking.tracking.redrive import redrive

# Every record failing is reported like any partial failure: SQS retries exactly those messages.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> None:
    redrive(record.body)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
