"""Mailgun domain webhooks: create, list, get, update and delete the URLs an event type is POSTed to."""

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from opentracking.core.metric_names import Metric
from opentracking.core.observability import count, logger, metrics
from opentracking.core.tracing import tracer
from opentracking.domains import registry
from opentracking.http import gateway
from opentracking.webhooks import delivery, signing_key, subscriptions

app = gateway.resolver()


@app.get("/v3/domains/<name>/webhooks")
@tracer.capture_method
def list_webhooks(name: str) -> dict:
    return {"webhooks": {hook.id: hook.mailgun() for hook in subscriptions.list_webhooks(name.lower())}}


@app.post("/v3/domains/<name>/webhooks")
@tracer.capture_method
def create_webhook(name: str) -> dict:
    form = gateway.request_form(app.current_event)
    webhook = subscriptions.create(name.lower(), form.last("id"), form.all("url"))
    count(Metric.WEBHOOK_CREATED)
    return {"message": "Webhook has been created", "webhook": webhook.mailgun()}


@app.get("/v3/domains/<name>/webhooks/<webhook_id>")
@tracer.capture_method
def get_webhook(name: str, webhook_id: str) -> dict:
    return {"webhook": subscriptions.get(name.lower(), webhook_id).mailgun()}


@app.put("/v3/domains/<name>/webhooks/<webhook_id>")
@tracer.capture_method
def update_webhook(name: str, webhook_id: str) -> dict:
    webhook = subscriptions.update(
        name.lower(), webhook_id, gateway.request_form(app.current_event).all("url")
    )
    return {"message": "Webhook has been updated", "webhook": webhook.mailgun()}


@app.delete("/v3/domains/<name>/webhooks/<webhook_id>")
@tracer.capture_method
def delete_webhook(name: str, webhook_id: str) -> dict:
    webhook = subscriptions.delete(name.lower(), webhook_id)
    return {"message": "Webhook has been deleted", "webhook": webhook.mailgun()}


@app.put("/v3/domains/<name>/webhooks/<webhook_id>/test")
@tracer.capture_method
def test_webhook(name: str, webhook_id: str) -> dict:
    domain = registry.get(name.lower()).name
    kind = subscriptions.normalise_id(webhook_id)
    url = subscriptions.normalise_urls(gateway.request_form(app.current_event).all("url"))[0]
    key = delivery.signing_key(signing_key.secret_name())
    return delivery.send_test(domain, kind, url, key=key)


def _v4_answer(webhooks: list) -> dict:
    return {"webhooks": {hook.id: hook.mailgun() for hook in webhooks}}


@app.get("/v4/domains/<name>/webhooks")
@tracer.capture_method
def list_webhooks_v4(name: str) -> dict:
    return _v4_answer(subscriptions.list_webhooks(name.lower()))


def _url_and_event_types() -> tuple[str, tuple[str, ...]]:
    """A v4 request's one `url` and its `event_types` (repeated or comma-separated)."""
    form = gateway.request_form(app.current_event)
    url = subscriptions.one_url(form.all("url"))
    return url, subscriptions.normalise_event_types(form.all("event_types"))


@app.post("/v4/domains/<name>/webhooks")
@tracer.capture_method
def attach_webhook_url(name: str) -> dict:
    return _v4_answer(subscriptions.attach(name.lower(), *_url_and_event_types()))


@app.put("/v4/domains/<name>/webhooks")
@tracer.capture_method
def retarget_webhook_url(name: str) -> dict:
    return _v4_answer(subscriptions.retarget(name.lower(), *_url_and_event_types()))


@app.delete("/v4/domains/<name>/webhooks")
@tracer.capture_method
def detach_webhook_urls(name: str) -> dict:
    # `url` as the query gives it: repeated (API Gateway joins repeats with commas) or comma-separated
    raw = app.current_event.get_query_string_value("url", "") or ""
    urls = tuple(dict.fromkeys(url.strip() for url in raw.split(",") if url.strip()))
    return _v4_answer(subscriptions.detach(name.lower(), urls))


@app.get("/v5/accounts/http_signing_key")
@tracer.capture_method
def get_signing_key() -> dict:
    return signing_key.current()


@app.post("/v5/accounts/http_signing_key")
@tracer.capture_method
def regenerate_signing_key() -> dict:
    answer = signing_key.regenerate()
    logger.info("webhook signing key regenerated")  # never the key
    return answer


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
