"""Security properties: every route x every kind of key, tokens under 100,000 random edits, and no
address, key or token in any log line of a full flow."""

from __future__ import annotations

import base64
import json
import os
import random
from urllib.parse import urlencode

import pytest

from devstack.events import make_http_event
from devstack.routes import http_routes
from devstack.runtime import functions
from devstack.template import Stack
from opentracking.core.config import settings
from opentracking.domains import registry
from opentracking.http import auth
from opentracking.tracking import tokens

# The pixel, the click redirect and the unsubscribe link are public: a reader's mail client or browser has
# no key.
ROUTES = [
    r
    for r in http_routes(Stack())
    if r.function not in ("PixelFunction", "ClickFunction", "UnsubscribeFunction")
]
SENDING = {"POST /v3/{domain}/messages", "POST /v3/{domain}/messages.mime"}


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"api:{key}".encode()).decode()


pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])


@pytest.fixture(autouse=True)
def fast_network(monkeypatch):
    """Routes that check DNS or HTTPS get quick answers from loopback instead of waiting on timeouts."""
    from devstack.dns_server import DnsServer
    from devstack.tlslab import closed_port

    with DnsServer() as dns:
        monkeypatch.setenv("OPENTRACKING_NAMESERVERS", dns.nameserver)
        monkeypatch.setenv("TRACKING_HTTPS_PORT", str(closed_port()))
        monkeypatch.setenv("TRACKING_HTTP_PORT", str(closed_port()))
        yield


@pytest.fixture
def keys(aws, api_key):
    for name in ("example.com", "other.example"):
        registry.put(
            registry.Domain(name=name, cname_target="t.example", tracking_ready=True, cname_valid="valid")
        )
    table = settings().table_name

    def domain_key(name: str) -> str:
        return auth.create_key(
            table, kind="domain", role="sending", domain_name=name, description=None, expiration=None
        )["key"]["secret"]

    return {
        "none": None,
        "wrong": "key-" + "0" * 48,
        "another domain's sending key": domain_key("other.example"),
        "this domain's sending key": domain_key("example.com"),
        "account key": api_key,
        "user key": auth.create_key(
            table, kind="user", role="admin", domain_name=None, description=None, expiration=None
        )["key"]["secret"],
    }


def request(route, key: str | None) -> int:
    params = {
        name: ("example.com" if name in ("domain", "name") else "x") for name in route.pattern.groupindex
    }
    path = route.path
    for name, value in params.items():
        path = path.replace("{" + name + "}", value)
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if key is not None:
        headers["authorization"] = basic(key)
    body = (
        urlencode({"from": "a@example.com", "to": "r@example.net", "text": "hi"})
        if route.method != "GET"
        else None
    )
    event = make_http_event(
        route.method, path, route_key=route.route_key, path_parameters=params, headers=headers, body=body
    )
    return functions(_STACK)[route.function].invoke(event)["statusCode"]


_STACK = Stack()


def expected(route, who: str) -> set[int]:
    if who in ("none", "wrong"):
        return {401}
    if who in ("account key", "user key"):
        return {200, 400, 404, 409}  # allowed: the answer depends on the input, never 401 or 403
    sending_route = route.route_key in SENDING
    if who == "this domain's sending key" and sending_route:
        return {200, 400, 404}
    return {403}


@pytest.mark.parametrize(
    "who",
    ["none", "wrong", "another domain's sending key", "this domain's sending key", "account key", "user key"],
)
def test_every_route_with_every_kind_of_key(keys, who):
    outcomes = {route.route_key: request(route, keys[who]) for route in ROUTES}
    wrong = {
        key: status
        for key, status in outcomes.items()
        if status not in expected(next(r for r in ROUTES if r.route_key == key), who)
    }
    assert wrong == {}


def test_the_pixel_never_asks_for_a_key(keys):
    (pixel_route,) = [r for r in http_routes(_STACK) if r.route_key == "GET /o/{token}"]
    for key in keys.values():
        event = make_http_event(
            "GET",
            "/o/x",
            route_key=pixel_route.route_key,
            path_parameters={"token": "x"},
            headers={"authorization": basic(key)} if key else {},
        )
        assert functions(_STACK)["PixelFunction"].invoke(event)["statusCode"] == 200


def test_the_click_redirect_never_asks_for_a_key(keys):
    (click_route,) = [r for r in http_routes(_STACK) if r.route_key == "GET /c/{token}"]
    for key in keys.values():
        event = make_http_event(
            "GET",
            "/c/x",
            route_key=click_route.route_key,
            path_parameters={"token": "x"},
            headers={"authorization": basic(key)} if key else {},
        )
        assert functions(_STACK)["ClickFunction"].invoke(event)["statusCode"] == 404  # not valid, not 401


def test_no_forged_or_edited_click_token_is_accepted_in_100000_tries():
    keyring = tokens.KeyRing.from_secret({"active": "1", "1": "k" * 48})
    genuine = tokens.issue_click_token(
        keyring, tokens.new_copy_id(), "example.com", "https://a.example/x?y=1"
    )
    raw = base64.urlsafe_b64decode(genuine + "=" * (-len(genuine) % 4))
    rng = random.Random(100_000)
    accepted = 0
    for attempt in range(100_000):
        forged = bytearray(raw)
        if attempt % 2:  # edits of a genuine token
            for _ in range(rng.randint(1, 4)):
                forged[rng.randrange(len(forged))] = rng.randrange(256)
        else:  # tokens made up from scratch, with a valid-looking header
            forged = bytearray(
                b"\x02\x01" + rng.randbytes(16) + b"\x0bexample.com" + rng.randbytes(rng.randint(17, 80))
            )
        if bytes(forged) == raw:
            continue
        try:
            tokens.verify_click_token(keyring, base64.urlsafe_b64encode(bytes(forged)).rstrip(b"=").decode())
            accepted += 1
        except tokens.InvalidToken:
            pass
    assert accepted == 0


def test_no_forged_or_edited_token_is_accepted_in_100000_tries():
    keyring = tokens.KeyRing.from_secret({"active": "1", "1": "k" * 48})
    genuine = tokens.issue_token(keyring, tokens.new_copy_id(), "example.com")
    raw = base64.urlsafe_b64decode(genuine + "=" * (-len(genuine) % 4))
    rng = random.Random(100_000)
    accepted = 0
    for attempt in range(100_000):
        forged = bytearray(raw)
        if attempt % 2:  # edits of a genuine token
            for _ in range(rng.randint(1, 4)):
                forged[rng.randrange(len(forged))] = rng.randrange(256)
        else:  # tokens made up from scratch, with a valid-looking header
            forged = bytearray(b"\x01\x01" + rng.randbytes(rng.randint(17, 60)))
        if bytes(forged) == raw:
            continue
        try:
            tokens.verify_token(keyring, base64.urlsafe_b64encode(bytes(forged)).rstrip(b"=").decode())
            accepted += 1
        except tokens.InvalidToken:
            pass
    assert accepted == 0


def test_no_address_key_or_token_in_any_log_line(
    aws, tracked_domain, api_key, lambda_context, capsys, caplog
):
    """A full flow with the logger at DEBUG: submit, open, click, consume, suppress, erase; then search
    every line."""
    from devstack.handlers import load_handler
    from devstack.streams import read_all
    from opentracking.core.observability import logger

    logger.setLevel("DEBUG")
    secret_recipient = "very.private.person@example.net"
    body = urlencode(
        [
            ("from", "s@example.com"),
            ("to", secret_recipient),
            ("html", f'<p>x</p><a href="https://shop.example/?who={secret_recipient}">shop</a>'),
            ("o:tag", "t"),
            ("o:tracking", "yes"),
        ]
    )
    response = load_handler("functions/submit").lambda_handler(
        make_http_event(
            "POST",
            "/v3/example.com/messages",
            route_key="POST /v3/{domain}/messages",
            path_parameters={"domain": "example.com"},
            body=body,
            headers={"authorization": basic(api_key), "content-type": "application/x-www-form-urlencoded"},
        ),
        lambda_context,
    )
    assert response["statusCode"] == 200
    import boto3

    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))
    (copy,) = [i for i in table.scan()["Items"] if i["sk"] == "COPY"]
    data = boto3.client("s3").get_object(Bucket=aws.ref("MessageBucket"), Key=copy["s3_key"])["Body"].read()
    token = data.decode().split("/o/", 1)[1].split('"', 1)[0]
    load_handler("functions/pixel").lambda_handler(
        make_http_event("GET", f"/o/{token}", route_key="GET /o/{token}", path_parameters={"token": token}),
        lambda_context,
    )
    click_token = data.decode().split("/c/", 1)[1].split('"', 1)[0]
    # a genuine click (its URL names the reader), and a forged one
    for candidate in (click_token, click_token[:-3] + "AAA"):
        load_handler("functions/click").lambda_handler(
            make_http_event(
                "GET", f"/c/{candidate}", route_key="GET /c/{token}", path_parameters={"token": candidate}
            ),
            lambda_context,
        )
    load_handler("functions/events").lambda_handler(
        read_all(aws.get_att("DataTable", "StreamArn")), lambda_context
    )
    load_handler("functions/pixel").lambda_handler(  # and a forged token
        make_http_event(
            "GET",
            f"/o/{token[:-3]}AAA",
            route_key="GET /o/{token}",
            path_parameters={"token": f"{token[:-3]}AAA"},
        ),
        lambda_context,
    )
    privacy_function = load_handler("functions/privacy")
    for method, route, form in (  # the privacy routes take the address in their bodies
        ("POST", "/v3/{domain}/tracking-suppressions", [("address", secret_recipient)]),
        ("GET", "/v3/{domain}/tracking-suppressions", None),
        ("POST", "/v3/{domain}/erasures", [("address", secret_recipient)]),
        ("DELETE", "/v3/{domain}/tracking-suppressions", [("address", secret_recipient)]),
    ):
        answer = privacy_function.lambda_handler(
            make_http_event(
                method,
                route.replace("{domain}", "example.com"),
                route_key=f"{method} {route}",
                path_parameters={"domain": "example.com"},
                body=urlencode(form) if form else None,
                headers={
                    "authorization": basic(api_key),
                    "content-type": "application/x-www-form-urlencoded",
                },
            ),
            lambda_context,
        )
        assert answer["statusCode"] == 200, answer["body"]
    logs = capsys.readouterr()
    text = logs.out + logs.err + caplog.text
    assert text.strip(), "the flow logged nothing: the test would prove nothing"
    for secret in (secret_recipient, "very.private.person", api_key, token, token[:20], click_token[:20]):
        assert secret not in text
    json_lines = [json.loads(line) for line in logs.out.splitlines() if line.startswith("{")]
    assert json_lines
    logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"))
