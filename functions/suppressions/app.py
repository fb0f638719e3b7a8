"""Mailgun's suppression lists: /v3/{domain}/bounces, /complaints, /unsubscribes and /whitelists (list,
get one, add one or many, delete one, delete all). Mailgun puts the address in the path of get and
delete; those paths are never logged, and traces keep no responses (POWERTOOLS_TRACER_CAPTURE_RESPONSE)."""

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.observability import logger, metrics
from opentracking.core.tracing import tracer
from opentracking.delivery import suppression_lists
from opentracking.domains import registry
from opentracking.http import gateway

app = gateway.resolver()
LISTS = "<domain>/<kind>"


def _list(domain: str, kind: str) -> tuple[suppression_lists.Kind, str]:
    """The list and the stored domain's name; 404 for an unknown one, before anything is read or written."""
    return suppression_lists.kind_of(kind), registry.get(domain.lower()).name


@app.get(f"/v3/{LISTS}")
@tracer.capture_method
def list_records(domain: str, kind: str) -> dict:
    which, name = _list(domain, kind)
    query = dict(app.current_event.query_string_parameters or {})
    return suppression_lists.list_page(which, name, query, base_url=gateway.base_url(app.current_event))


@app.post(f"/v3/{LISTS}")
@tracer.capture_method
def add_records(domain: str, kind: str) -> dict:
    which, name = _list(domain, kind)
    event = app.current_event
    return suppression_lists.add(which, name, event.headers.get("content-type"), gateway.raw_body(event))


@app.delete(f"/v3/{LISTS}")
@tracer.capture_method
def delete_all_records(domain: str, kind: str) -> dict:
    which, name = _list(domain, kind)
    return suppression_lists.delete_all(which, name)


@app.get(f"/v3/{LISTS}/<value>")
@tracer.capture_method
def get_record(domain: str, kind: str, value: str) -> dict:
    which, name = _list(domain, kind)
    return suppression_lists.get(which, name, value)


@app.delete(f"/v3/{LISTS}/<value>")
@tracer.capture_method
def delete_record(domain: str, kind: str, value: str) -> dict:
    which, name = _list(domain, kind)
    return suppression_lists.delete(
        which, name, value, tag=app.current_event.get_query_string_value("tag") or None
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
