"""Management API: domains with their tracking CNAME, and tracking settings (Mailgun v3/v4 paths)."""

import json
import os
from urllib.parse import quote

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.config import settings
from opentracking.core.errors import BadRequest
from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger, metrics
from opentracking.core.tracing import tracer
from opentracking.delivery import jobs
from opentracking.domains import certificates, lifecycle, registry
from opentracking.http import auth, gateway
from opentracking.messages import stored
from opentracking.messages.options import optional_bool, optional_click_mode
from opentracking.reporting import account_tags, aggregates, consumer, logs, queries, tag_limits
from opentracking.reporting import metrics as metrics_api

app = gateway.resolver()


def _cname_target() -> str:
    """The hostname tracking hosts must CNAME to: configured, else the host this API was called on."""
    return (
        os.environ.get("TRACKING_CNAME_TARGET", "").strip() or app.current_event.request_context.domain_name
    )


def _int_query(name: str, default: int, maximum: int) -> int:
    raw = app.current_event.get_query_string_value(name, str(default))
    if not (raw.isascii() and raw.isdigit()) or (name == "limit" and int(raw) == 0):
        raise BadRequest(f"'{name}' must be a positive integer")
    return min(int(raw), maximum)


@app.post("/v3/domains")
@app.post("/v4/domains")
@tracer.capture_method
def create_domain() -> dict:
    form = gateway.request_form(app.current_event)
    domain = registry.create(
        form.last("name"),
        web_prefix=form.last("web_prefix"),
        web_scheme=form.last("web_scheme"),
        cname_target=_cname_target(),
        # The API to map each tracking host's custom domain to: the one serving this request. (The
        # function cannot name its own API in the template: that reference would be circular.)
        api_id=app.current_event.request_context.api_id,
    )
    count(Metric.DOMAIN_CREATED)
    return domain.response("Domain DNS records have been created")


@app.get("/v3/domains")
@app.get("/v4/domains")
@tracer.capture_method
def list_domains() -> dict:
    found, total = registry.list_domains(
        limit=_int_query("limit", 100, 1000), skip=_int_query("skip", 0, 10**9)
    )
    return {"items": [domain.mailgun() for domain in found], "total_count": total}


@app.get("/v3/domains/<name>")
@app.get("/v4/domains/<name>")
@tracer.capture_method
def get_domain(name: str) -> dict:
    return registry.get(name.lower()).response()


@app.put("/v3/domains/<name>/verify")
@app.put("/v4/domains/<name>/verify")
@tracer.capture_method
def verify_domain(name: str) -> dict:
    return registry.verify(name.lower()).response("Domain DNS records have been updated")


@app.delete("/v3/domains/<name>")
@app.delete("/v4/domains/<name>")
@tracer.capture_method
def delete_domain(name: str) -> dict:
    lifecycle.delete(name.lower())
    return {"message": "Domain has been deleted"}


@app.get("/v3/domains/<name>/tracking")
@tracer.capture_method
def get_tracking(name: str) -> dict:
    return registry.get(name.lower()).tracking()


@app.put("/v3/domains/<name>/tracking/open")
@tracer.capture_method
def put_open_tracking(name: str) -> dict:
    form = gateway.request_form(app.current_event)
    active, top = form.last("active"), form.last("place_at_the_top")
    if active is None and top is None:
        raise BadRequest("'active' or 'place_at_the_top' parameter is required")
    domain = registry.set_open_tracking(
        name.lower(),
        active=optional_bool("active", active),
        place_at_the_top=optional_bool("place_at_the_top", top),
    )
    return {
        "message": "Domain tracking settings have been updated",
        "open": {"active": domain.open_tracking, "place_at_the_top": domain.place_at_the_top},
    }


@app.put("/v3/domains/<name>/tracking/click")
@tracer.capture_method
def put_click_tracking(name: str) -> dict:
    form = gateway.request_form(app.current_event)
    active, implies_open = form.last("active"), form.last("implies_open")
    if active is None and implies_open is None:
        raise BadRequest("'active' parameter is required")
    domain = registry.set_click_tracking(
        name.lower(),
        active=optional_click_mode("active", active),
        implies_open=optional_bool("implies_open", implies_open),
    )
    return {"message": "Domain tracking settings have been updated", "click": domain.click_setting()}


@app.put("/v3/domains/<name>/tracking/unsubscribe")
@tracer.capture_method
def put_unsubscribe_tracking(name: str) -> dict:
    form = gateway.request_form(app.current_event)
    active, html_footer, text_footer = form.last("active"), form.last("html_footer"), form.last("text_footer")
    if active is None and html_footer is None and text_footer is None:
        raise BadRequest("'active', 'html_footer' or 'text_footer' parameter is required")
    domain = registry.set_unsubscribe_tracking(
        name.lower(),
        active=optional_bool("active", active),
        html_footer=html_footer,
        text_footer=text_footer,
    )
    return {
        "message": "Domain tracking settings have been updated",
        "unsubscribe": domain.unsubscribe_setting(),
    }


@app.get("/v3/domains/<name>/connection")
@tracer.capture_method
def get_connection(name: str) -> dict:
    return {"connection": registry.get(name.lower()).connection(jobs.transport())}


@app.put("/v3/domains/<name>/connection")
@tracer.capture_method
def put_connection(name: str) -> dict:
    form = gateway.request_form(app.current_event)
    require_tls, skip, transport = (
        form.last("require_tls"),
        form.last("skip_verification"),
        form.last("delivery_transport"),
    )
    if require_tls is None and skip is None and transport is None:
        raise BadRequest("'require_tls', 'skip_verification' or 'delivery_transport' parameter is required")
    domain = registry.set_connection(
        name.lower(),
        require_tls=optional_bool("require_tls", require_tls),
        skip_verification=optional_bool("skip_verification", skip),
        delivery_transport=jobs.domain_transport_setting(transport),
    )
    return {
        "message": "Domain connection settings have been updated, may take 10 minutes to fully propagate",
        **domain.connection(jobs.transport()),
    }


@app.get("/v3/domains/<name>/tracking/diagnose")
@tracer.capture_method
def diagnose_tracking(name: str) -> dict:
    # Imported here: diagnose brings dnspython and the HTTPS checker, which no other route of this function
    # needs at its cold start.
    from opentracking.domains import diagnose

    event = app.current_event
    return diagnose.diagnose(
        name.lower(),
        message_id=event.get_query_string_value("message-id") or None,
        recipient=event.get_query_string_value("recipient") or None,
    )


@app.get("/v1/keys")
@tracer.capture_method
def list_keys() -> dict:
    query = _query()
    return auth.list_keys(settings().table_name, domain_name=query.get("domain_name"), kind=query.get("kind"))


@app.post("/v1/keys")
@tracer.capture_method
def create_key() -> dict:
    form = gateway.request_form(app.current_event)
    key = auth.create_key(
        settings().table_name,
        kind=form.last("kind"),
        role=form.last("role"),
        domain_name=form.last("domain_name"),
        description=form.last("description"),
        expiration=form.last("expiration"),
    )
    count(Metric.API_KEY_CREATED)
    return key


@app.delete("/v1/keys/<key_id>")
@tracer.capture_method
def delete_key(key_id: str) -> dict:
    return auth.delete_key(settings().table_name, key_id)


def _query() -> dict[str, str | None]:
    return dict(app.current_event.query_string_parameters or {})


@app.put("/v3/domains/<name>")
@app.put("/v4/domains/<name>")
@tracer.capture_method
def update_domain(name: str) -> dict:
    form = gateway.request_form(app.current_event)
    fields = {key: value for key, value in form.fields}  # the last value of each field wins, as Mailgun's
    return registry.update(name.lower(), fields).response("Domain has been updated")


@app.put("/v3/domains/<name>/web_prefix")
@tracer.capture_method
def update_web_prefix(name: str) -> dict:
    form = gateway.request_form(app.current_event)
    registry.set_web_prefix(name.lower(), form.last("web_prefix"))
    return {"message": "updated web prefix"}  # Mailgun's words (mailgun-go's mock server answers the same)


@app.get("/v2/x509/<name>/status")
@tracer.capture_method
def certificate_status(name: str) -> dict:
    return certificates.status(name)


@app.post("/v2/x509/<name>")
@tracer.capture_method
def generate_certificate(name: str) -> Response:
    return _accepted(certificates.generate(name))


@app.put("/v2/x509/<name>")
@tracer.capture_method
def regenerate_certificate(name: str) -> Response:
    return _accepted(certificates.regenerate(name))


def _accepted(body: dict) -> Response:
    """202: the work goes on after the answer (ACM issues the certificate once it sees DNS)."""
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))


@app.get("/v3/<domain>/events")
@app.get("/v3/<domain>/events/<page>")
@tracer.capture_method
def list_events(domain: str, page: str | None = None) -> dict:
    name = registry.get(domain.lower()).name
    return queries.query_events(name, _query(), base_url=gateway.base_url(app.current_event), page=page)


@app.get("/v3/<domain>/tags")
@tracer.capture_method
def list_tags(domain: str) -> dict:
    return queries.list_tags(
        registry.get(domain.lower()).name, _query(), base_url=gateway.base_url(app.current_event)
    )


@app.get("/v3/<domain>/tags/<tag>")
@tracer.capture_method
def get_tag(domain: str, tag: str) -> dict:
    return queries.get_tag(registry.get(domain.lower()).name, tag)


@app.put("/v3/<domain>/tags/<tag>")
@tracer.capture_method
def describe_tag(domain: str, tag: str) -> dict:
    form = gateway.request_form(app.current_event)
    return queries.describe_tag(registry.get(domain.lower()).name, tag, form.last("description"))


@app.delete("/v3/<domain>/tags/<tag>")
@tracer.capture_method
def delete_tag(domain: str, tag: str) -> dict:
    return queries.delete_tag(registry.get(domain.lower()).name, tag)


@app.get("/v3/<domain>/tags/<tag>/stats")
@tracer.capture_method
def tag_stats(domain: str, tag: str) -> dict:
    name = registry.get(domain.lower()).name
    queries.get_tag(name, tag)
    query = _query()
    return queries.stats(name, tag.lower(), _events_param(query), query)


@app.get("/v3/<domain>/tags/<tag>/stats/aggregates/urls")
@tracer.capture_method
def tag_url_aggregates(domain: str, tag: str) -> dict:
    name = registry.get(domain.lower()).name
    queries.get_tag(name, tag)
    return queries.url_aggregates(name, tag.lower())


@app.get("/v3/<domain>/tags/<tag>/stats/aggregates/<kind>")
@tracer.capture_method
def tag_aggregates(domain: str, tag: str, kind: str) -> dict:
    name = registry.get(domain.lower()).name
    found = queries.get_tag(name, tag)["tag"]
    return aggregates.tag_aggregates(name, found, kind, consumer.SHARDS)


@app.get("/v3/<domain>/stats/aggregates/urls")
@tracer.capture_method
def url_aggregates(domain: str) -> dict:
    return queries.url_aggregates(registry.get(domain.lower()).name, None)


@app.get("/v3/<domain>/stats/total")
@tracer.capture_method
def total_stats(domain: str) -> dict:
    query = _query()
    return queries.stats(registry.get(domain.lower()).name, None, _events_param(query), query)


@app.get("/v3/stats/total")
@tracer.capture_method
def account_stats() -> dict:
    query = _query()
    return queries.stats(None, None, _events_param(query), query)


@app.post("/v1/analytics/metrics")
@tracer.capture_method
def analytics_metrics() -> dict:
    return metrics_api.query(_json_text())


def _json_text() -> str | None:
    body = gateway.raw_body(app.current_event)
    return body.decode("utf-8", "replace") if body else None


@app.post("/v1/analytics/logs")
@tracer.capture_method
def analytics_logs() -> dict:
    return logs.list_logs(_json_text())


@app.post("/v1/analytics/tags")
@tracer.capture_method
def analytics_tags() -> dict:
    return account_tags.list_tags(_json_text())


@app.put("/v1/analytics/tags")
@tracer.capture_method
def describe_account_tag() -> dict:
    return account_tags.describe_tag(_json_text())


@app.delete("/v1/analytics/tags")
@tracer.capture_method
def delete_account_tag() -> dict:
    return account_tags.delete_tag(_json_text())


@app.get("/v1/analytics/tags/limits")
@tracer.capture_method
def account_tag_limits() -> dict:
    return account_tags.limits()


@app.get("/v3/domains/<name>/limits/tag")
@tracer.capture_method
def domain_tag_limits(name: str) -> dict:
    domain = registry.get(name.lower())
    return tag_limits.domain_limits(domain.name, domain.opaque_id)


@app.get("/v3/domains/<name>/messages/<key>")
@tracer.capture_method
def stored_message(name: str, key: str) -> dict:
    event = app.current_event
    raw = "message/rfc2822" in (event.headers.get("accept") or "").lower()
    domain = registry.get(name.lower()).name
    return stored.retrieve(domain, key, api_base=gateway.api_base_url(event), raw=raw)


@app.get("/v3/domains/<name>/messages/<key>/attachments/<index>")
@tracer.capture_method
def stored_attachment(name: str, key: str, index: str) -> Response:
    content_type, filename, data = stored.attachment(registry.get(name.lower()).name, key, index)
    disposition = "attachment" + (f"; filename*=UTF-8''{quote(filename)}" if filename else "")
    return Response(
        status_code=200,
        content_type=content_type,
        body=data,
        headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"},
    )


def _events_param(query: dict[str, str | None]) -> list[str]:
    # API Gateway joins repeated query values with commas (event=accepted&event=opened).
    return [name.strip() for name in (query.get("event") or "").split(",") if name.strip()]


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
