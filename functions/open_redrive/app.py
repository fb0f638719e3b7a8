"""SQS consumer of the spill queue: verify and write the opens (and clicks) the pixel (and the click
redirect) could not write.

The write has the same key the pixel would have used, so an open written twice is still one item.
A message that keeps failing is retried by SQS and, after maxReceiveCount, moved to the dead-letter
queue, from which `aws sqs start-message-move-task` moves it back once the cause is fixed."""

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking import clicks, pixel, tokens
from opentracking.config import settings
from opentracking.metric_names import Metric
from opentracking.observability import count, logger, metrics
from opentracking.tracing import tracer

# Every record failing is reported like any partial failure: SQS retries exactly those messages.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> None:
    config = settings()
    request = pixel.from_spill(record.body)
    if request.kind == "click":
        try:
            claims = tokens.verify_click_token(tokens.load_keyring(config.token_secret_name), request.token)
        except tokens.InvalidToken:
            count(Metric.INVALID_CLICK_TOKEN)
            return
        pixel.record_open(
            config.table_name,
            clicks.item_for(request, claims, config.event_retention_days),
            profile="default",
        )
        count(Metric.CLICK_REDRIVEN)
        return
    try:
        claims = tokens.verify_token(tokens.load_keyring(config.token_secret_name), request.token)
    except tokens.InvalidToken:
        count(Metric.INVALID_TOKEN)
        return  # a forged token stays unrecorded, as on the pixel
    pixel.record_open(
        config.table_name, pixel.item_for(request, claims, config.event_retention_days), profile="default"
    )
    count(Metric.OPEN_REDRIVEN)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
