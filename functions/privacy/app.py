"""Privacy controls: per-domain IP anonymisation and retention, the tracking suppression list, and
per-recipient erasure. Recipient addresses arrive in form bodies only, never in paths or query strings,
so no access log, trace or paging URL carries them."""

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.observability import logger, metrics
from opentracking.core.tracing import tracer
from opentracking.domains import registry
from opentracking.http import gateway
from opentracking.privacy import erasure, policy, suppressions

app = gateway.resolver()


def _domain(name: str) -> str:
    """The stored domain's name; 404 for an unknown one, before anything else is read or written."""
    return registry.get(name.lower()).name


@app.get("/v3/domains/<name>/tracking/privacy")
@tracer.capture_method
def get_privacy(name: str) -> dict:
    return policy.get(_domain(name)).response()


@app.put("/v3/domains/<name>/tracking/privacy")
@tracer.capture_method
def put_privacy(name: str) -> dict:
    domain = _domain(name)
    updated = policy.update(domain, gateway.request_form(app.current_event))
    return {"message": "Domain privacy settings have been updated", **updated.response()}


@app.get("/v3/<domain>/tracking-suppressions")
@tracer.capture_method
def list_suppressions(domain: str) -> dict:
    query = dict(app.current_event.query_string_parameters or {})
    return suppressions.list_page(_domain(domain), query, base_url=gateway.base_url(app.current_event))


@app.post("/v3/<domain>/tracking-suppressions")
@tracer.capture_method
def add_suppressions(domain: str) -> dict:
    return suppressions.add(_domain(domain), gateway.request_form(app.current_event))


@app.delete("/v3/<domain>/tracking-suppressions")
@tracer.capture_method
def delete_suppressions(domain: str) -> dict:
    return suppressions.remove(_domain(domain), gateway.request_form(app.current_event))


@app.post("/v3/<domain>/erasures")
@tracer.capture_method
def erase_recipient(domain: str) -> dict:
    return erasure.erase(_domain(domain), gateway.request_form(app.current_event))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
