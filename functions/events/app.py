"""DynamoDB stream consumer: raw opens and clicks -> Mailgun `opened` and `clicked` events, unique opens
and clicks, derived opens, counters, webhooks.

The batch's raw opens are recorded in bulk first (opentracking.reporting.bulk_opens: a few transactions for
the whole batch); every record the bulk path did not finish then goes through Powertools batch processing one
by one, which reports partial failures, so one bad record is retried alone and the rest of the batch is
not processed twice."""

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
    DynamoDBRecordEventName,
    DynamoDBStreamEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.observability import logger, metrics
from opentracking.core.tracing import tracer
from opentracking.reporting import bulk_opens, consumer

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    copies: dict = {}  # items read in this batch: many opens or clicks of one copy cost one read
    done = _record_opens_in_bulk(event, copies)

    def record_handler(record: DynamoDBRecord) -> None:
        inserted = record.event_name == DynamoDBRecordEventName.INSERT and record.dynamodb
        if inserted and record.dynamodb.sequence_number not in done:
            consumer.handle_image(record.dynamodb.new_image, copies)

    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )


def _record_opens_in_bulk(event: dict, copies: dict) -> set[str]:
    inserts = [
        (record.dynamodb.sequence_number, record.dynamodb.new_image)
        for record in DynamoDBStreamEvent(event).records
        if record.event_name == DynamoDBRecordEventName.INSERT and record.dynamodb
    ]
    try:
        return bulk_opens.record([(key, image) for key, image in inserts if key], copies)
    except Exception as exc:  # the one-by-one path retries each record and reports what still fails
        logger.warning("bulk opens failed: one by one instead", extra={"error": type(exc).__name__})
        return set()
