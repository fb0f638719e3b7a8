"""The webhook signing key through Mailgun's API: GET and POST /v5/accounts/http_signing_key."""

from __future__ import annotations

import base64
import json
import re

import boto3

from opentracking.webhooks import delivery

PATH = "/v5/accounts/http_signing_key"


def stored_key(aws) -> str:
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=aws.ref("WebhookSigningKeySecret"))
    return json.loads(secret["SecretString"])["key"]


def test_the_account_reads_the_key_webhooks_are_signed_with(aws, invoke):
    status, body = invoke("webhooks", "GET", PATH)
    assert status == 200 and body == {"http_signing_key": stored_key(aws)}
    assert delivery.signing_key(aws.ref("WebhookSigningKeySecret")) == body["http_signing_key"]


def test_regenerating_replaces_the_key_and_shows_the_new_one(aws, invoke):
    old = invoke("webhooks", "GET", PATH)[1]["http_signing_key"]
    status, body = invoke("webhooks", "POST", PATH)
    assert status == 200 and re.fullmatch(r"[A-Za-z0-9]{50}", body["http_signing_key"])
    assert body["http_signing_key"] != old
    assert stored_key(aws) == body["http_signing_key"]
    assert invoke("webhooks", "GET", PATH)[1] == {"http_signing_key": body["http_signing_key"]}


def test_a_sending_key_or_no_key_cannot_read_it(aws, invoke, tracked_domain):
    status, created = invoke(
        "api", "POST", "/v1/keys", fields={"kind": "domain", "role": "sending", "domain_name": tracked_domain}
    )
    assert status == 200
    sending = "Basic " + base64.b64encode(f"api:{created['key']['secret']}".encode()).decode()
    before = stored_key(aws)
    for method in ("GET", "POST"):
        assert invoke("webhooks", method, PATH, authorization=sending)[0] == 403
        assert invoke("webhooks", method, PATH, authorization=None)[0] == 401
    assert stored_key(aws) == before
