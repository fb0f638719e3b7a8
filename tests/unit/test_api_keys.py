"""API keys: account keys, domain sending keys that can only send for their domain, stored hashed,
revocable, expiring."""

from __future__ import annotations

import base64
import json

import boto3
import pytest

from opentracking.domains import registry


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"api:{key}".encode()).decode()


@pytest.fixture
def call(aws, invoke):
    for name in ("example.com", "other.example"):
        registry.put(
            registry.Domain(name=name, cname_target="t.example", tracking_ready=True, cname_valid="valid")
        )

    def request(method, path, route, *, key=None, fields=None, params=None, function="api", query=""):
        auth = {"authorization": basic(key)} if key else {}
        return invoke(function, method, path, route=route, params=params, query=query, fields=fields, **auth)

    return request


def create_key(call, **fields) -> tuple[int, dict]:
    return call("POST", "/v1/keys", "/v1/keys", fields=fields)


def send(call, key, domain="example.com"):
    return call(
        "POST",
        f"/v3/{domain}/messages",
        "/v3/{domain}/messages",
        key=key,
        function="submit",
        params={"domain": domain},
        fields={"from": f"a@{domain}", "to": "r@example.net", "text": "hi"},
    )


def test_a_domain_sending_key_sends_only_for_its_domain(call, aws):
    status, body = create_key(
        call, kind="domain", role="sending", domain_name="example.com", description="app"
    )
    assert status == 200, body
    key = body["key"]
    assert (key["kind"], key["role"], key["domain_name"]) == ("domain", "sending", "example.com")
    secret = key["secret"]
    assert secret.startswith("key-") and len(secret) > 40
    # sends for its own domain
    assert send(call, secret)[0] == 200
    # but nothing else
    status, body = send(call, secret, "other.example")
    assert status == 403 and "example.com" in body["message"]
    assert call("GET", "/v4/domains", "/v4/domains", key=secret)[0] == 403
    assert call("POST", "/v1/keys", "/v1/keys", key=secret, fields={"kind": "user"})[0] == 403
    # and the table holds only a digest of it
    items = boto3.resource("dynamodb").Table(aws.ref("DataTable")).scan()["Items"]
    assert not any(secret in json.dumps(item, default=str) for item in items)


def test_listing_never_shows_secrets_and_filters(call):
    create_key(call, kind="domain", domain_name="example.com")
    create_key(call, kind="user", description="ops")
    status, listing = call("GET", "/v1/keys", "/v1/keys")
    assert status == 200 and listing["total_count"] == 2
    assert all("secret" not in item for item in listing["items"])
    _, domain_only = call("GET", "/v1/keys", "/v1/keys", query="domain_name=example.com")
    assert [k["kind"] for k in domain_only["items"]] == ["domain"]


def test_a_user_key_is_account_wide(call):
    secret = create_key(call, kind="user")[1]["key"]["secret"]
    assert call("GET", "/v4/domains", "/v4/domains", key=secret)[0] == 200
    assert send(call, secret, "other.example")[0] == 200


def test_a_revoked_key_stops_working(call):
    key = create_key(call, kind="user")[1]["key"]
    assert call("DELETE", f"/v1/keys/{key['id']}", "/v1/keys/{key_id}", params={"key_id": key["id"]}) == (
        200,
        {"message": "key deleted"},
    )
    status, body = call("GET", "/v4/domains", "/v4/domains", key=key["secret"])
    assert status == 401 and body["message"] == "Forbidden: invalid API key"
    assert (
        call("DELETE", f"/v1/keys/{key['id']}", "/v1/keys/{key_id}", params={"key_id": key["id"]})[0] == 404
    )


def test_an_expired_key_stops_working(call, aws):
    key = create_key(call, kind="user", expiration="3600")[1]["key"]
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))
    (item,) = [i for i in table.scan()["Items"] if i.get("id") == key["id"]]
    table.update_item(
        Key={"pk": item["pk"], "sk": "APIKEY"},
        UpdateExpression="SET expires_at = :t",
        ExpressionAttributeValues={":t": 1},
    )
    assert call("GET", "/v4/domains", "/v4/domains", key=key["secret"])[0] == 401


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"kind": "web"}, 400, "'kind'"),
        ({"kind": "domain"}, 400, "'domain_name'"),
        ({"kind": "domain", "domain_name": "unknown.example"}, 404, "Domain not found"),
        ({"kind": "user", "role": "sending"}, 400, "role"),
        ({"kind": "user", "expiration": "soon"}, 400, "'expiration'"),
        ({"kind": "user", "expiration": "²"}, 400, "'expiration'"),  # str.isdigit() says yes, int() no
    ],
)
def test_bad_key_requests(call, fields, status, message):
    got, body = create_key(call, **fields)
    assert got == status
    assert message in body["message"]
