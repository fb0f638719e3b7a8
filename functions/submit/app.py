"""POST /v3/{domain}/messages and /messages.mime: Mailgun-compatible submission."""

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.config import settings
from opentracking.core.observability import logger, metrics
from opentracking.core.tracing import tracer
from opentracking.http import gateway
from opentracking.http.forms import parse_form
from opentracking.messages import submission

app = gateway.resolver()


def _submit(
    *, request: dict, domain: str, content_type: str | None, body: bytes, mime: bool, api_base: str
) -> dict:
    form = parse_form(content_type, body)
    return submission.submit(form, domain, settings(), mime=mime, api_base=api_base)


def _handle(domain: str, *, mime: bool) -> dict:
    event = app.current_event
    body = gateway.raw_body(event)
    request = gateway.idempotency_request(event, body)
    content_type = (event.headers or {}).get("content-type")
    return gateway.run_idempotently(
        settings().table_name,
        request,
        _submit,
        domain=domain.lower(),
        content_type=content_type,
        body=body,
        mime=mime,
        api_base=gateway.api_base_url(event),
    )


@app.post("/v3/<domain>/messages")
@tracer.capture_method
def send_message(domain: str) -> dict:
    return _handle(domain, mime=False)


@app.post("/v3/<domain>/messages.mime")
@tracer.capture_method
def send_mime(domain: str) -> dict:
    return _handle(domain, mime=True)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    gateway.register_lambda_context(context)
    return app.resolve(event, context)
