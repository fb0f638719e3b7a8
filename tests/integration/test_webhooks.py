"""Mailgun webhooks for `opened`: the management API in-process under moto, and delivery to a real HTTP
receiver on loopback that checks every POST the way Mailgun documents (HMAC-SHA256 of timestamp + token
with the signing key), through the sender's SQS handler; then the same through the running local stack."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import time
from urllib.parse import urlencode

import boto3
import pytest
import requests

from devstack.events import make_http_event
from devstack.handlers import load_handler
from devstack.process import start_stack
from opentracking.core import queues
from opentracking.domains import lifecycle, registry
from opentracking.domains.registry import Domain
from opentracking.webhooks import delivery, subscriptions
from tests.helpers.records import as_sqs_records, sqs_record
from tests.helpers.webhook_receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.allow_hosts(["127.0.0.1"])]

DOMAIN = "hooks.example.com"
WEBHOOK_QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:opentracking-local-WebhookQueue"


def opened_event(event_id: str = "Ase7i2zsRYeDXztHGENqRA") -> dict:
    return {
        "event": "opened",
        "id": event_id,
        "timestamp": 1795694400.25,
        "log-level": "info",
        "recipient": "alice@example.net",
        "recipient-domain": "example.net",
        "tags": ["newsletter"],
        "user-variables": {"campaign": "november"},
        "ip": "203.0.113.7",
        "geolocation": {"country": "Unknown", "region": "Unknown", "city": "Unknown"},
        "client-info": {
            "client-type": "browser",
            "client-os": "Linux",
            "client-name": "Firefox",
            "device-type": "desktop",
            "user-agent": "Mozilla/5.0",
            "bot": "",
        },
        "message": {"headers": {"message-id": "20261126120000.5f1c9e0a2b7d4c3e@example.com"}},
    }


def signed_ok(signing_key: str, payload: dict) -> bool:
    """Mailgun: concatenate timestamp and token, HMAC-SHA256 with the signing key, compare the hexdigest."""
    signature = payload["signature"]
    expected = hmac.new(
        signing_key.encode(), (signature["timestamp"] + signature["token"]).encode(), hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, signature["signature"])


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone"


# --- in-process under moto -------------------------------------------------------------------------


@pytest.fixture
def env(aws, monkeypatch):
    """The sender's environment from the template; loopback receivers allowed (the sandbox's default
    refuses them)."""
    for name, value in aws.function_environment("WebhookSenderFunction").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.delenv("WEBHOOK_RETRY_SCHEDULE", raising=False)
    delivery.reset_cache()
    from opentracking.domains import registry

    registry.put(Domain(name=DOMAIN, cname_target="track.opentracking.test"))
    yield aws
    delivery.reset_cache()


@pytest.fixture
def signing_key(env) -> str:
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=env.ref("WebhookSigningKeySecret"))
    return json.loads(secret["SecretString"])["key"]


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def call(env, lambda_context, basic_auth):
    handler = load_handler("functions/webhooks")

    def request(method, path, fields=None, *, authorization=None):
        parts = path.strip("/").split("/")
        params = {"name": parts[2]}
        route = "/v3/domains/{name}/webhooks"
        if len(parts) >= 5:
            params["id"] = parts[4]
            route += "/{id}"
        if len(parts) == 6:
            route += f"/{parts[5]}"
        body = urlencode(fields, doseq=True).encode() if fields is not None else None
        headers = {"authorization": authorization if authorization is not None else basic_auth}
        if body is not None:
            headers["content-type"] = "application/x-www-form-urlencoded"
        event = make_http_event(
            method, path, route_key=f"{method} {route}", path_parameters=params, headers=headers, body=body
        )
        response = handler.lambda_handler(event, lambda_context)
        return response["statusCode"], json.loads(response["body"])

    return request


@pytest.fixture
def sent_messages(env):
    """Every SendMessage the library makes (queue, body, delay), captured from the real SQS client."""
    from opentracking.core.aws import client

    captured: list[dict] = []

    def capture(params, **_kwargs):
        captured.append(
            {
                "queue": params["QueueUrl"],
                "body": json.loads(params["MessageBody"]),
                "delay": params.get("DelaySeconds", 0),
            }
        )

    client("sqs").meta.events.register("provide-client-params.sqs.SendMessage", capture)
    return captured


def queue_messages(queue_url: str) -> list[dict]:
    """Receive (and delete) what is visible in a queue now, as SQS records the way Lambda gets them."""
    sqs = boto3.client("sqs")
    records = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return records
        records += as_sqs_records(messages, WEBHOOK_QUEUE_ARN)
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def run_sender(records: list[dict], lambda_context) -> dict:
    return load_handler("functions/webhook_sender").lambda_handler({"Records": records}, lambda_context)


def delivery_record(body: str, message_id: str = "m-1") -> dict:
    return sqs_record(body, message_id, queue_arn=WEBHOOK_QUEUE_ARN)


def create_hook(call, *urls: str) -> None:
    status, body = call(
        "POST", f"/v3/domains/{DOMAIN}/webhooks", [("id", "opened"), *(("url", u) for u in urls)]
    )
    assert status == 200, body


# management


def test_webhook_lifecycle_in_mailgun_shapes(call):
    base = f"/v3/domains/{DOMAIN}/webhooks"
    # GIVEN a domain without webhooks
    assert call("GET", base) == (200, {"webhooks": {}})
    # WHEN an opened webhook is created with two URLs (repeated keys, as the SDK sends them)
    status, body = call(
        "POST", base, [("id", "opened"), ("url", "https://a.example/h"), ("url", "http://b.example")]
    )
    # THEN it is listed and readable
    assert status == 200
    assert body == {
        "message": "Webhook has been created",
        "webhook": {"urls": ["https://a.example/h", "http://b.example"]},
    }
    assert call("GET", base) == (
        200,
        {"webhooks": {"opened": {"urls": ["https://a.example/h", "http://b.example"]}}},
    )
    assert call("GET", f"{base}/opened") == (
        200,
        {"webhook": {"urls": ["https://a.example/h", "http://b.example"]}},
    )
    # a second create is refused
    status, body = call("POST", base, {"id": "opened", "url": "https://c.example"})
    assert (status, body["message"]) == (400, "Webhook already exists")
    # PUT replaces the URLs
    status, body = call("PUT", f"{base}/opened", {"url": "https://c.example/new"})
    assert (status, body) == (
        200,
        {"message": "Webhook has been updated", "webhook": {"urls": ["https://c.example/new"]}},
    )
    assert call("GET", f"{base}/opened")[1] == {"webhook": {"urls": ["https://c.example/new"]}}
    # DELETE removes it
    status, body = call("DELETE", f"{base}/opened")
    assert (status, body["message"]) == (200, "Webhook has been deleted")
    assert call("GET", f"{base}/opened")[0] == 404
    assert call("GET", base) == (200, {"webhooks": {}})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "https://a.example"}, "'id' parameter is missing"),
        ({"id": "bounced", "url": "https://a.example"}, "Invalid webhook id 'bounced'"),
        ({"id": "opened"}, "'url' parameter is missing"),
        ({"id": "opened", "url": "ftp://a.example/x"}, "is not a valid http or https URL"),
        ({"id": "opened", "url": "https://"}, "is not a valid http or https URL"),
        ({"id": "opened", "url": "a.example/hook"}, "is not a valid http or https URL"),
        ({"id": "opened", "url": "https://a.example:99999/"}, "is not a valid http or https URL"),
        ({"id": "opened", "url": [f"https://{n}.example" for n in "abcd"]}, "at most 3 urls"),
    ],
)
def test_bad_webhooks_are_400_and_store_nothing(call, fields, message):
    status, body = call("POST", f"/v3/domains/{DOMAIN}/webhooks", fields)
    assert status == 400
    assert message in body["message"]
    assert call("GET", f"/v3/domains/{DOMAIN}/webhooks") == (200, {"webhooks": {}})


def test_update_checks_urls_too(call):
    create_hook(call, "https://a.example")
    status, body = call("PUT", f"/v3/domains/{DOMAIN}/webhooks/opened", {"url": "javascript:alert(1)"})
    assert status == 400
    assert "is not a valid http or https URL" in body["message"]
    assert call("GET", f"/v3/domains/{DOMAIN}/webhooks/opened")[1] == {
        "webhook": {"urls": ["https://a.example"]}
    }


@pytest.mark.parametrize(
    ("method", "path", "fields"),
    [
        ("GET", "/v3/domains/nowhere.example/webhooks", None),
        ("POST", "/v3/domains/nowhere.example/webhooks", {"id": "opened", "url": "https://a.example"}),
        ("GET", "/v3/domains/nowhere.example/webhooks/opened", None),
        ("GET", f"/v3/domains/{DOMAIN}/webhooks/opened", None),
        ("GET", f"/v3/domains/{DOMAIN}/webhooks/bogus", None),
        ("PUT", f"/v3/domains/{DOMAIN}/webhooks/opened", {"url": "https://a.example"}),
        ("DELETE", f"/v3/domains/{DOMAIN}/webhooks/opened", None),
    ],
)
def test_unknown_domains_and_webhooks_are_404(call, method, path, fields):
    status, body = call(method, path, fields)
    assert status == 404
    assert "not found" in body["message"].lower()


def test_webhooks_need_the_api_key(call):
    status, _body = call("GET", f"/v3/domains/{DOMAIN}/webhooks", authorization="Basic YXBpOndyb25n")
    assert status == 401


# enqueue


def test_enqueue_sends_one_message_per_url_and_nothing_when_none_is_set(call, env):
    queue = env.ref("WebhookQueue")
    # GIVEN no webhook: nothing is queued
    assert delivery.enqueue(DOMAIN, opened_event()) == 0
    assert queue_messages(queue) == []
    # WHEN two URLs are set
    create_hook(call, "https://a.example/h", "https://b.example/h")
    before = time.time()
    # THEN one message per URL, in the documented shape
    assert delivery.enqueue(DOMAIN, opened_event()) == 2
    bodies = [json.loads(record["body"]) for record in queue_messages(queue)]
    assert sorted(body["url"] for body in bodies) == ["https://a.example/h", "https://b.example/h"]
    for body in bodies:
        assert body["domain"] == DOMAIN and body["event"] == opened_event() and body["attempt"] == 0
        assert before <= body["first_attempt_at"] <= time.time()
    # other event types, and other domains, queue nothing
    assert delivery.enqueue(DOMAIN, {**opened_event(), "event": "accepted"}) == 0
    assert delivery.enqueue("other.example.com", opened_event()) == 0
    # a deleted webhook stops deliveries (changes made in this container apply at once)
    call("DELETE", f"/v3/domains/{DOMAIN}/webhooks/opened")
    assert delivery.enqueue(DOMAIN, opened_event()) == 0


def test_enqueue_reads_the_domains_webhooks_once_while_cached(call, env):
    from opentracking.core.aws import client

    reads: list[str] = []
    client("dynamodb").meta.events.register(
        "provide-client-params.dynamodb.Query",
        lambda params, **_: reads.append(params["ExpressionAttributeValues"][":pk"]["S"]),
    )
    create_hook(call, "https://a.example/h")
    for n in range(5):  # each opened event looks up its current (opened) and its legacy (open) webhook
        assert delivery.enqueue(DOMAIN, opened_event(f"event-{n}")) == 1
    assert delivery.enqueue(DOMAIN, {**opened_event("c"), "event": "clicked"}) == 0
    assert reads == [f"DOMAIN#{DOMAIN}"]  # one query for every type, then the cache


# delivery


def test_delivery_is_a_signed_json_post_as_mailgun_sends_it(call, env, receiver, signing_key, lambda_context):
    create_hook(call, receiver.url)
    assert delivery.enqueue(DOMAIN, opened_event()) == 1
    # WHEN the sender runs on the queued message
    before = int(time.time())
    result = run_sender(queue_messages(env.ref("WebhookQueue")), lambda_context)
    # THEN the receiver got one JSON POST whose signature verifies with the signing key
    assert result == {"batchItemFailures": []}
    (request,) = receiver.requests
    assert request["path"] == "/mailgun/opened"
    assert request["headers"]["content-type"] == "application/json"
    payload = json.loads(request["body"])
    assert set(payload) == {"signature", "event-data"}
    # the event, with the account and domain Mailgun's "Webhook Payloads" page lists
    account = payload["event-data"].pop("account")
    assert payload["event-data"].pop("domain") == {"name": DOMAIN}
    assert set(account) == {"id"} and re.fullmatch(r"[0-9a-f]{24}", account["id"])
    assert payload["event-data"] == opened_event()
    signature = payload["signature"]
    assert len(signature["token"]) == 50 and int(signature["token"], 16) >= 0
    assert before <= int(signature["timestamp"]) <= time.time()
    assert signed_ok(signing_key, payload)
    assert delivery.verify(signing_key, signature["timestamp"], signature["token"], signature["signature"])
    assert not delivery.verify(
        "another key", signature["timestamp"], signature["token"], signature["signature"]
    )
    assert not delivery.verify(signing_key, signature["timestamp"], signature["token"], "é" * 64)
    # nothing is left to do
    assert queue_messages(env.ref("WebhookQueue")) == []


def test_credentials_in_the_url_are_sent_as_basic_auth(receiver):
    url = receiver.url.replace("http://", "http://hooks:p%40ss@")
    assert delivery.post_json(url, b"{}", 5.0, allow_private=True) == 200
    (request,) = receiver.requests
    assert request["headers"]["authorization"] == "Basic " + base64.b64encode(b"hooks:p@ss").decode()
    assert request["path"] == "/mailgun/opened"


@pytest.mark.parametrize(
    ("answer", "error"), [(500, "500"), (503, "503"), (302, "302"), (None, "ConnectionRefusedError")]
)
def test_a_failed_post_is_queued_again_on_mailgun_schedule(
    call, env, sent_messages, lambda_context, answer, error
):
    receiver = Receiver([answer or 200])
    try:
        url = receiver.url if answer else closed_port_url()
        create_hook(call, url)
        delivery.enqueue(DOMAIN, opened_event())
        started = time.time()
        result = run_sender(queue_messages(env.ref("WebhookQueue")), lambda_context)
    finally:
        receiver.close()
    # THEN the record is done (not failed), and a new message waits the first interval (5 minutes)
    assert result == {"batchItemFailures": []}
    (retry,) = sent_messages
    assert retry["queue"] == env.ref("WebhookQueue")
    assert retry["delay"] == 300
    body = retry["body"]
    assert body["attempt"] == 1 and body["url"] == url and body["event"]["id"] == opened_event()["id"]
    assert started + 300 <= body["next_at"] <= time.time() + 300
    assert body["last_error"] == error
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=env.ref("WebhookQueue"), AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"


def test_406_is_never_retried(call, env, sent_messages, lambda_context):
    receiver = Receiver([406])
    try:
        create_hook(call, receiver.url)
        delivery.enqueue(DOMAIN, opened_event())
        result = run_sender(queue_messages(env.ref("WebhookQueue")), lambda_context)
    finally:
        receiver.close()
    assert result == {"batchItemFailures": []}
    assert len(receiver.requests) == 1
    assert sent_messages == []


def test_waits_longer_than_fifteen_minutes_are_chained_delays(call, env, receiver):
    # GIVEN the fourth attempt failed: the next one is an hour away, longer than any SQS delay
    create_hook(call, receiver.url)
    sent: list[tuple[dict, int]] = []
    config = delivery.delivery_config()
    clock = [1_800_000_000.0]

    def send(queue_url: str, body: str, delay: float, *, what: str) -> None:
        assert queue_url == config.queue_url
        sent.append((json.loads(body), delay))

    body = delivery.Delivery(
        receiver.url, DOMAIN, opened_event(), attempt=3, first_attempt_at=clock[0]
    ).to_body()
    failing = lambda *_, **__: 500  # noqa: E731
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(queues, "send_one", send)
        outcome = delivery.process(body, now=lambda: clock[0], post=failing)
        assert outcome == delivery.Outcome.RETRY_SCHEDULED
        (retry, delay), *_ = sent
        assert retry["attempt"] == 4 and retry["next_at"] == clock[0] + 3600 and delay == 3600
        # SQS caps the delay at 900 s (the real send clamps it); each early receipt is delayed again
        waits = []
        for _ in range(3):
            clock[0] += 900
            sent.clear()
            assert delivery.process(json.dumps(retry), now=lambda: clock[0]) == delivery.Outcome.WAITING
            waits.append(sent[0][1])
        assert waits == [2700, 1800, 900]
        assert receiver.requests == []
        # once due, it is delivered
        clock[0] += 900
        assert delivery.process(json.dumps(retry), now=lambda: clock[0]) == delivery.Outcome.DELIVERED
    assert len(receiver.requests) == 1


def test_an_exhausted_schedule_goes_to_the_dead_letter_queue(call, env, sent_messages, lambda_context):
    receiver = Receiver([500])
    try:
        create_hook(call, receiver.url)
        last = delivery.Delivery(
            receiver.url, DOMAIN, opened_event(), attempt=len(delivery.RETRY_SCHEDULE), first_attempt_at=1.0
        )
        result = run_sender([delivery_record(last.to_body())], lambda_context)
    finally:
        receiver.close()
    assert result == {"batchItemFailures": []}
    (dead,) = sent_messages
    assert dead["queue"] == env.ref("WebhookDeadLetterQueue")
    assert dead["body"]["attempt"] == 7 and dead["body"]["last_error"] == "500"
    assert dead["body"]["event"] == opened_event() and dead["body"]["dead_lettered_at"] > 0
    assert len(queue_messages(env.ref("WebhookDeadLetterQueue"))) == 1
    assert queue_messages(env.ref("WebhookQueue")) == []


def test_a_redriven_delivery_starts_a_fresh_schedule(call, env, sent_messages, lambda_context):
    receiver = Receiver([500])
    try:
        create_hook(call, receiver.url)
        dead = delivery.Delivery(
            receiver.url, DOMAIN, opened_event(), attempt=7, first_attempt_at=1.0, dead_lettered_at=2.0
        )
        assert run_sender([delivery_record(dead.to_body())], lambda_context) == {"batchItemFailures": []}
    finally:
        receiver.close()
    assert len(receiver.requests) == 1
    (retry,) = sent_messages
    assert retry["queue"] == env.ref("WebhookQueue") and retry["delay"] == 300
    assert retry["body"]["attempt"] == 1 and "dead_lettered_at" not in retry["body"]


def test_redelivery_keeps_the_event_id_and_is_not_posted_twice(
    call, env, signing_key, sent_messages, lambda_context
):
    receiver = Receiver([500])
    try:
        create_hook(call, receiver.url)
        delivery.enqueue(DOMAIN, opened_event())
        # GIVEN the first attempt failed, so a retry was queued
        run_sender(queue_messages(env.ref("WebhookQueue")), lambda_context)
        (retry,) = sent_messages
        due = {**retry["body"], "next_at": time.time() - 1}  # its five minutes have passed
        # WHEN the retry is delivered, and then delivered again (SQS and streams are at-least-once)
        record = delivery_record(json.dumps(due))
        assert run_sender([record], lambda_context) == {"batchItemFailures": []}
        assert run_sender([record], lambda_context) == {"batchItemFailures": []}
        delivery.enqueue(DOMAIN, opened_event())  # a stream replay of the same event
        run_sender(queue_messages(env.ref("WebhookQueue")), lambda_context)
    finally:
        receiver.close()
    # THEN the receiver saw the failed attempt and one success, with the same event id and fresh tokens
    payloads = receiver.payloads()
    assert len(payloads) == 2
    assert {p["event-data"]["id"] for p in payloads} == {opened_event()["id"]}
    assert payloads[0]["signature"]["token"] != payloads[1]["signature"]["token"]
    assert all(signed_ok(signing_key, p) for p in payloads)


@pytest.mark.parametrize("change", ["delete the webhook", "change its url", "delete the domain", "redrive"])
def test_a_retry_is_withdrawn_when_the_webhook_went_away_meanwhile(
    call, env, sent_messages, lambda_context, change
):
    receiver = Receiver([500, 200])
    try:
        create_hook(call, receiver.url)
        delivery.enqueue(DOMAIN, opened_event())
        run_sender(queue_messages(env.ref("WebhookQueue")), lambda_context)  # the first attempt fails
        (retry,) = sent_messages
        due = {**retry["body"], "next_at": time.time() - 1}
        if change == "delete the webhook":
            assert call("DELETE", f"/v3/domains/{DOMAIN}/webhooks/opened")[0] == 200
        elif change == "change its url":
            assert (
                call("PUT", f"/v3/domains/{DOMAIN}/webhooks/opened", [("url", receiver.url + "/v2")])[0]
                == 200
            )
        elif change == "delete the domain":
            from opentracking.domains import lifecycle

            lifecycle.delete(DOMAIN)
        else:  # dead-lettered, the webhook deleted, then the dead-letter queue redriven
            due = {**due, "dead_lettered_at": time.time()}
            assert call("DELETE", f"/v3/domains/{DOMAIN}/webhooks/opened")[0] == 200
        sent_messages.clear()
        # WHEN the retry comes due, THEN nothing is posted and nothing is queued again
        assert delivery.process(json.dumps(due)) == delivery.Outcome.WITHDRAWN
    finally:
        receiver.close()
    assert len(receiver.requests) == 1 and sent_messages == []


def test_loopback_targets_are_refused_unless_allowed(call, env, sent_messages, monkeypatch, lambda_context):
    receiver = Receiver()
    try:
        create_hook(call, receiver.url)
        monkeypatch.delenv("WEBHOOK_ALLOW_PRIVATE_URLS")
        delivery.reset_cache()
        delivery.enqueue(DOMAIN, opened_event())
        result = run_sender(queue_messages(env.ref("WebhookQueue")), lambda_context)
    finally:
        receiver.close()
    assert result == {"batchItemFailures": []}
    assert receiver.requests == [] and sent_messages == []


def test_a_record_whose_outcome_cannot_be_recorded_fails_alone(env, receiver, monkeypatch, lambda_context):
    # GIVEN the dead-letter queue is unreachable, so a malformed message cannot be parked
    monkeypatch.setenv("WEBHOOK_DEAD_LETTER_QUEUE_URL", env.ref("WebhookQueue") + "-missing")
    delivery.reset_cache()
    good = delivery.Delivery(receiver.url, DOMAIN, opened_event(), first_attempt_at=1.0).to_body()
    result = run_sender([delivery_record("not json", "bad"), delivery_record(good, "good")], lambda_context)
    # THEN only that record is reported; the good one was delivered
    assert result == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert len(receiver.requests) == 1


def test_malformed_messages_are_parked_in_the_dead_letter_queue(env, lambda_context):
    assert run_sender([delivery_record('{"url": 1}')], lambda_context) == {"batchItemFailures": []}
    (parked,) = queue_messages(env.ref("WebhookDeadLetterQueue"))
    assert parked["body"] == '{"url": 1}'


def test_the_retry_schedule_is_mailguns_unless_configured():
    assert delivery.parse_schedule("") == (300, 600, 900, 3600, 7200, 14400)
    assert delivery.parse_schedule("1, 2,3") == (1, 2, 3)
    for bad in ("1,x", "-1"):
        with pytest.raises(delivery.ConfigurationError):
            delivery.parse_schedule(bad)


def test_sign_matches_the_documented_algorithm():
    key, timestamp, token = "key-secret", "1770920772", "e0b5477167110d68991efc6b9f89f0a11066af27834600e123"
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    assert delivery.sign(key, timestamp, token) == expected
    assert delivery.verify(key, timestamp, token, expected)
    flipped = expected[:-1] + ("1" if expected[-1] == "0" else "0")
    assert not delivery.verify(key, timestamp, token, flipped)
    assert not delivery.verify(key, timestamp, token, None)  # type: ignore[arg-type]


# --- the template --------------------------------------------------------------------------------


def test_template_wires_queue_dead_letter_queue_sender_and_key():
    from devstack.template import load_template

    resources = load_template()["Resources"]
    queue, dlq = resources["WebhookQueue"]["Properties"], resources["WebhookDeadLetterQueue"]["Properties"]
    sender = resources["WebhookSenderFunction"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]}
    assert queue["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True
    assert dlq["MessageRetentionPeriod"] == 1209600
    # Lambda's advice: the queue hides a message for at least 6 times the function's timeout
    assert queue["VisibilityTimeout"] >= 6 * sender["Timeout"]
    assert sender["Timeout"] >= 10 * delivery.DELIVERY_TIMEOUT  # a full batch of slow receivers fits
    (trigger,) = sender["Events"].values()
    assert trigger["Type"] == "SQS" and trigger["Properties"]["Queue"] == {
        "Fn::GetAtt": ["WebhookQueue", "Arn"]
    }
    assert trigger["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    sends = [
        p["SQSSendMessagePolicy"]["QueueName"] for p in sender["Policies"] if "SQSSendMessagePolicy" in p
    ]
    assert sends == [
        {"Fn::GetAtt": ["WebhookQueue", "QueueName"]},
        {"Fn::GetAtt": ["WebhookDeadLetterQueue", "QueueName"]},
    ]
    assert {
        "AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": {"Ref": "WebhookSigningKeySecret"}}
    } in sender["Policies"]
    secret = resources["WebhookSigningKeySecret"]["Properties"]["GenerateSecretString"]
    assert secret["GenerateStringKey"] == "key" and secret["PasswordLength"] >= 32
    routes = {
        (e["Properties"]["Method"], e["Properties"]["Path"])
        for e in resources["WebhooksFunction"]["Properties"]["Events"].values()
    }
    assert routes == {
        ("GET", "/v3/domains/{name}/webhooks"),
        ("POST", "/v3/domains/{name}/webhooks"),
        ("GET", "/v3/domains/{name}/webhooks/{id}"),
        ("PUT", "/v3/domains/{name}/webhooks/{id}"),
        ("DELETE", "/v3/domains/{name}/webhooks/{id}"),
        ("PUT", "/v3/domains/{name}/webhooks/{id}/test"),
        *((method, "/v4/domains/{name}/webhooks") for method in ("GET", "POST", "PUT", "DELETE")),
        ("GET", "/v5/accounts/http_signing_key"),
        ("POST", "/v5/accounts/http_signing_key"),
    }


# --- through the running local stack ---------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = start_stack(
        tmp_path_factory.mktemp("webhooks"),
        extra_env={"WEBHOOK_RETRY_SCHEDULE": "1,1", "WEBHOOK_ALLOW_PRIVATE_URLS": "1"},
    )
    yield running
    running.stop()


def eventually(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def stack_signing_key(stack) -> str:
    secret = stack.client("secretsmanager").get_secret_value(
        SecretId=stack.resource("WebhookSigningKeySecret")
    )
    return json.loads(secret["SecretString"])["key"]


def queue_delivery(stack, url: str, event: dict) -> None:
    body = delivery.Delivery(url=url, domain=DOMAIN, event=event, first_attempt_at=time.time()).to_body()
    stack.client("sqs").send_message(QueueUrl=stack.resource("WebhookQueue"), MessageBody=body)


def test_local_stack_delivers_signed_and_retries(stack):
    receiver = Receiver([500])
    try:
        stack.create_tracked_domain(DOMAIN)
        created = stack.call(
            "POST", f"/v3/domains/{DOMAIN}/webhooks", data={"id": "opened", "url": receiver.url}
        )
        assert created.status_code == 200, created.text
        # WHEN an opened event is queued for the webhook
        queue_delivery(stack, receiver.url, opened_event("local-stack-event"))
        # THEN the first POST fails, and the retry arrives a schedule step (1 s) later, signed again
        assert eventually(lambda: len(receiver.requests) >= 2), stack.output[-20:]
    finally:
        receiver.close()
    first, second = receiver.requests[:2]
    assert second["at"] - first["at"] >= 1.0
    key = stack_signing_key(stack)
    payloads = receiver.payloads()[:2]
    assert all(signed_ok(key, payload) for payload in payloads)
    assert [p["event-data"]["id"] for p in payloads] == ["local-stack-event"] * 2
    time.sleep(2.5)
    assert len(receiver.requests) == 2  # delivered: no further attempts


def point_webhook_at(stack, url: str) -> None:
    """The domain's opened webhook, created or changed to `url` (retries go only to configured URLs)."""
    stack.create_tracked_domain(DOMAIN)
    changed = stack.call("PUT", f"/v3/domains/{DOMAIN}/webhooks/opened", data={"url": url})
    if changed.status_code == 404:
        changed = stack.call("POST", f"/v3/domains/{DOMAIN}/webhooks", data={"id": "opened", "url": url})
    assert changed.status_code == 200, changed.text


def test_local_stack_dead_letters_after_the_schedule(stack):
    receiver = Receiver([500] * 10)
    try:
        point_webhook_at(stack, receiver.url)
        queue_delivery(stack, receiver.url, opened_event("local-stack-dead"))
        dlq = stack.resource("WebhookDeadLetterQueue")
        sqs = stack.client("sqs")
        messages: list[dict] = []

        def parked() -> bool:
            messages.extend(sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0).get("Messages", []))
            return bool(messages)

        assert eventually(parked), stack.output[-20:]
    finally:
        receiver.close()
    assert len(receiver.requests) == 3  # the first attempt and the two retries of WEBHOOK_RETRY_SCHEDULE
    body = json.loads(messages[0]["Body"])
    assert body["event"]["id"] == "local-stack-dead" and body["attempt"] == 3 and body["last_error"] == "500"


def test_local_stack_a_pixel_load_reaches_the_webhook_signed(stack):
    # GIVEN a tracked domain with an opened webhook, and a tagged message sent to it
    domain, recipient = "chain.example.com", "reader@example.net"
    receiver = Receiver()
    try:
        stack.create_tracked_domain(domain)
        hook = stack.call(
            "POST", f"/v3/domains/{domain}/webhooks", data={"id": "opened", "url": receiver.url}
        )
        assert hook.status_code == 200, hook.text
        sent = stack.call(
            "POST",
            f"/v3/{domain}/messages",
            data={
                "from": f"news@{domain}",
                "to": recipient,
                "subject": "Hi",
                "html": "<p>hi</p>",
                "o:tag": "t1",
            },
        )
        assert sent.status_code == 200, sent.text
        ((_record, copy),) = stack.copies_of(recipient)
        token = re.search(rb'src="[^"]+/o/([^"]+)"', copy).group(1).decode()
        # WHEN the recipient's mail client loads the pixel
        assert requests.get(f"{stack.api_url}/o/{token}", timeout=10).status_code == 200
        # THEN the stream consumer's opened event reaches the webhook, signed
        assert eventually(lambda: len(receiver.requests) >= 1), stack.output[-20:]
    finally:
        receiver.close()
    (payload,) = receiver.payloads()
    assert signed_ok(stack_signing_key(stack), payload)
    event = payload["event-data"]
    assert (event["event"], event["recipient"], event["tags"]) == ("opened", recipient, ["t1"])
    assert event["message"]["headers"]["message-id"] == sent.json()["id"].strip("<>")


def test_deleting_a_domain_deletes_its_webhooks(call):
    # GIVEN a domain with an opened webhook
    create_hook(call, "https://hooks.example.net/opened")
    # WHEN the domain is deleted and created again
    lifecycle.delete(DOMAIN)
    registry.put(Domain(name=DOMAIN, cname_target="t.example"))
    # THEN the old webhook is gone
    assert subscriptions.list_webhooks(DOMAIN) == []


# legacy webhooks


def test_a_legacy_webhook_gets_mailguns_legacy_form_post(call, env, receiver, signing_key, lambda_context):
    from urllib.parse import parse_qs

    # GIVEN a legacy `open` webhook (integrations written before Mailgun's JSON webhooks use these ids)
    status, body = call("POST", f"/v3/domains/{DOMAIN}/webhooks", [("id", "open"), ("url", receiver.url)])
    assert status == 200, body
    assert call("GET", f"/v3/domains/{DOMAIN}/webhooks")[1]["webhooks"] == {"open": {"urls": [receiver.url]}}
    # WHEN an opened event is enqueued and sent
    assert delivery.enqueue(DOMAIN, opened_event()) == 1
    assert run_sender(queue_messages(env.ref("WebhookQueue")), lambda_context) == {"batchItemFailures": []}
    # THEN one form-encoded POST of flat fields, signed as Mailgun signs them
    (request,) = receiver.requests
    assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
    fields = {name: values[0] for name, values in parse_qs(request["body"].decode()).items()}
    assert {name: fields[name] for name in ("event", "recipient", "domain", "tag", "ip", "client-name")} == {
        "event": "opened",
        "recipient": "alice@example.net",
        "domain": DOMAIN,
        "tag": "newsletter",
        "ip": "203.0.113.7",
        "client-name": "Firefox",
    }
    assert fields["Message-Id"] == "<20261126120000.5f1c9e0a2b7d4c3e@example.com>"
    assert fields["campaign"] == "november"  # a user variable is a field of its own
    assert signed_ok(signing_key, {"signature": {k: fields[k] for k in ("timestamp", "token", "signature")}})


def test_each_event_reaches_its_legacy_webhook():
    from opentracking.webhooks.subscriptions import legacy_type, webhook_types

    failed = {"event": "failed", "severity": "permanent"}
    assert webhook_types(opened_event()) == ("opened", "open")
    assert legacy_type({**failed, "reason": "bounce"}) == "bounce"
    assert legacy_type({**failed, "reason": "suppress-bounce"}) == "drop"  # never sent
    assert legacy_type({**failed, "reason": "old"}) == "drop"
    assert legacy_type({"event": "failed", "severity": "temporary"}) is None
    assert webhook_types({"event": "accepted"}) == ("accepted",)
    assert legacy_type({"event": "complained"}) == "spam"


def test_legacy_fields_of_a_bounce_and_a_drop():
    from opentracking.webhooks.delivery import legacy_fields

    bounce = {
        "event": "failed",
        "severity": "permanent",
        "reason": "bounce",
        "recipient": "gone@example.net",
        "tags": [],
        "user-variables": {"event": "spoofed", "order": 7},
        "delivery-status": {"code": 550, "message": "5.1.1 No such user", "description": "mailbox unknown"},
        "message": {"headers": {"message-id": "m@example.com", "subject": "Hi"}},
    }
    fields = dict(legacy_fields("k", "bounce", bounce, domain=DOMAIN))
    assert (fields["event"], fields["code"], fields["error"]) == ("bounced", "550", "5.1.1 No such user")
    assert json.loads(fields["message-headers"]) == [["Message-Id", "m@example.com"], ["Subject", "Hi"]]
    assert fields["order"] == "7" and fields["event"] == "bounced"  # a variable never hides a field
    dropped = dict(legacy_fields("k", "drop", {**bounce, "reason": "suppress-bounce"}, domain=DOMAIN))
    assert (dropped["event"], dropped["reason"]) == ("dropped", "hardfail")


# testing a webhook


def test_a_webhook_test_posts_a_signed_sample_and_says_what_the_receiver_answered(
    call, env, receiver, signing_key
):
    from urllib.parse import parse_qs

    base = f"/v3/domains/{DOMAIN}/webhooks"
    # a current webhook: a signed JSON sample of its kind; the receiver's status is `code`
    status, answer = call("PUT", f"{base}/permanent_fail/test", [("url", receiver.url)])
    assert (status, answer["code"]) == (200, 200), answer
    (request,) = receiver.requests
    payload = json.loads(request["body"])
    assert signed_ok(signing_key, payload)
    assert (payload["event-data"]["event"], payload["event-data"]["severity"]) == ("failed", "permanent")
    # a legacy one: its form payload
    assert call("PUT", f"{base}/open/test", [("url", receiver.url)])[1]["code"] == 200
    fields = parse_qs(receiver.requests[-1]["body"].decode())
    assert fields["event"] == ["opened"] and fields["signature"]
    # nothing configured changed, and a receiver that cannot be reached is code 0 with the reason
    assert call("GET", base)[1] == {"webhooks": {}}
    status, answer = call("PUT", f"{base}/opened/test", [("url", closed_port_url())])
    assert status == 200 and answer["code"] == 0 and "could not be reached" in answer["message"]
    assert call("PUT", f"{base}/bounced/test", [("url", receiver.url)])[0] == 400
    assert call("PUT", f"{base}/opened/test", [])[0] == 400
