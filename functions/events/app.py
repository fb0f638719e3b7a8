"""DynamoDB stream consumer: raw opens and clicks -> Mailgun `opened` and `clicked` events, unique opens
and clicks, derived opens, counters, webhooks.

Powertools batch processing reports partial failures, so one bad record is retried alone and the rest
of the batch is not processed twice."""

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
    DynamoDBRecordEventName,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking import events
from opentracking.observability import logger, metrics
from opentracking.tracing import tracer

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    copies: dict = {}  # items read in this batch: many opens or clicks of one copy cost one read

    def record_handler(record: DynamoDBRecord) -> None:
        if record.event_name == DynamoDBRecordEventName.INSERT and record.dynamodb:
            events.handle_image(record.dynamodb.new_image, copies)

    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
