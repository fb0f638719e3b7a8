"""Hostile input, property-based (Hypothesis): whatever a client sends to any route of the template, no
5xx, no exception escaping a handler, a Mailgun-shaped JSON error, the pixel's GIF or the click route's
page (never a redirect for a token this deployment did not issue), and a rejected
submission stores nothing."""

from __future__ import annotations

import base64
import json
import string

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.events import make_http_event
from devstack.routes import http_routes
from devstack.runtime import functions
from devstack.template import Stack
from opentracking.tracking.pixel import GIF

ROUTES = [route for route in http_routes(Stack())]
# Few examples per route (there are many routes) and more where the parsing is: the suite stays quick.
PER_ROUTE = settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

segment = st.one_of(
    st.sampled_from(
        ["example.com", "EXAMPLE.COM", "..", ".", "%2e%2e", "a" * 300, "example.com%00", "ü.example"]
    ),
    st.text(alphabet=string.printable, min_size=1, max_size=40).filter(lambda s: "/" not in s and s.strip()),
)
header_value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
headers = st.dictionaries(
    st.sampled_from(
        [
            "content-type",
            "authorization",
            "user-agent",
            "idempotency-key",
            "host",
            "x-forwarded-proto",
            "cookie",
            "accept",
        ]
    ),
    st.one_of(
        header_value,
        st.sampled_from(
            [
                "multipart/form-data; boundary=x",
                "application/x-www-form-urlencoded",
                "Basic !!!",
                "Basic " + base64.b64encode(b"api:").decode(),
            ]
        ),
    ),
    max_size=5,
)
form_body = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "from",
                "to",
                "cc",
                "bcc",
                "subject",
                "text",
                "html",
                "o:tag",
                "o:tracking",
                "o:tracking-opens",
                "h:X-Mailgun-Variables",
                "v:x",
                "recipient-variables",
                "message",
                "name",
                "web_prefix",
                "active",
                "place_at_the_top",
                "id",
                "url",
                "limit",
            ]
        ),
        st.text(max_size=80),
    ),
    max_size=12,
)
query = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "event",
                "limit",
                "begin",
                "end",
                "ascending",
                "tags",
                "recipient",
                "message-id",
                "subject",
                "size",
                "severity",
                "page",
                "resolution",
                "duration",
                "start",
                "skip",
            ]
        ),
        st.text(alphabet=string.printable, max_size=30),
    ),
    max_size=6,
)


@pytest.fixture
def stack(aws, tracked_domain, basic_auth):
    return {"functions": functions(aws), "auth": basic_auth}


def call(stack, route, params, hdrs, body, query_text):
    path = route.path
    for name, value in params.items():
        path = path.replace("{" + name + "}", value).replace("{" + name + "+}", value)
    event = make_http_event(
        route.method,
        path,
        route_key=route.route_key,
        path_parameters=params,
        headers=hdrs,
        body=body,
        query=query_text,
    )
    return stack["functions"][route.function].invoke(event)


def assert_well_formed(route, response):
    assert isinstance(response, dict), response
    if "statusCode" not in response:  # a plain value is a 200 JSON document (SQS-style handlers do not apply)
        json.dumps(response)
        return
    assert response["statusCode"] < 500, response
    if route.function == "PixelFunction":
        assert response["statusCode"] == 200
        assert base64.b64decode(response["body"]) == GIF
        return
    if route.function == "ClickFunction":  # a browser's route: a page, never a redirect for these inputs
        assert response["statusCode"] in (404, 503) and "Location" not in response["headers"]
        assert response["headers"]["Content-Type"] == "text/html; charset=utf-8"
        return
    if route.function == "UnsubscribeFunction":  # a browser's route too: the invalid-link page
        assert response["statusCode"] in (404, 503) and "Location" not in response["headers"]
        assert response["headers"]["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in response["headers"]["Content-Security-Policy"]
        return
    body = response["body"]
    document = json.loads(base64.b64decode(body) if response.get("isBase64Encoded") else body)
    if response["statusCode"] >= 400:
        assert isinstance(document.get("message"), str) and document["message"]


def nothing_submitted(aws) -> bool:
    bucket = aws.ref("MessageBucket")
    objects = boto3.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    messages = [
        i
        for i in boto3.resource("dynamodb").Table(aws.ref("DataTable")).scan()["Items"]
        if i["pk"].startswith("MSG#")
    ]
    return objects == 0 and not messages


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.route_key)
@given(data=st.data())
@PER_ROUTE
def test_any_input_to_any_route_gets_a_well_formed_answer(stack, aws, route, data):
    params = {name: data.draw(segment) for name in route.pattern.groupindex}
    hdrs = data.draw(headers)
    if data.draw(st.booleans()):
        hdrs["authorization"] = stack["auth"]
    raw = data.draw(st.one_of(st.none(), st.binary(max_size=300), form_body.map(lambda f: _urlencode(f))))
    query_text = _urlencode(data.draw(query)).decode()
    response = call(stack, route, params, hdrs, raw, query_text)
    assert_well_formed(route, response)
    if route.function == "SubmitFunction" and response.get("statusCode") != 200:
        assert nothing_submitted(aws)


@given(fields=form_body, mime=st.booleans())
@SETTINGS
def test_authenticated_submissions_never_fail_the_server_and_never_half_store(stack, aws, fields, mime):
    route = next(r for r in ROUTES if r.function == "SubmitFunction" and r.path.endswith(".mime") == mime)
    hdrs = {"authorization": stack["auth"], "content-type": "application/x-www-form-urlencoded"}
    response = call(stack, route, {"domain": "example.com"}, hdrs, _urlencode(fields), "")
    assert_well_formed(route, response)
    if response["statusCode"] != 200:
        assert nothing_submitted(aws)


@given(message=st.binary(max_size=2000))
@SETTINGS
def test_any_mime_bytes_are_accepted_or_refused_cleanly(stack, aws, message):
    route = next(r for r in ROUTES if r.path.endswith("messages.mime"))
    assert_well_formed(route, _submit_mime(stack, message))


def _urlencode(pairs) -> bytes:
    from urllib.parse import urlencode

    return urlencode(list(pairs)).encode()


# --- the shapes issue 15 found by hand, generated: each would have found its bug ----------------------------

# Every line break str.splitlines knows, NUL and other controls: none may reach a header.
BREAKING = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00\x07"
breaking_text = st.lists(
    st.one_of(st.sampled_from(list(BREAKING)), st.text(alphabet=string.ascii_letters + " :@<>", max_size=8)),
    min_size=1,
    max_size=8,
).map("".join)
HEADER_FIELDS = ["from", "to", "cc", "bcc", "subject", "h:Reply-To", "h:X-Campaign", "h:Message-Id", "o:tag"]
depth = st.integers(min_value=1, max_value=120_000)
deep_json = st.tuples(depth, st.sampled_from(["[", '{"a":'])).map(
    lambda d: d[1] * d[0] + ("1" if d[1] != "[" else "") + ("]" if d[1] == "[" else "}") * d[0]
)
JSON_FIELDS = ["recipient-variables", "h:X-Mailgun-Variables", "v:data"]
fragments = st.lists(
    st.sampled_from(
        [
            "<!--[if mso]>",
            "<!--[if gte mso 9]>",
            "<![endif]-->",
            "<![endif]>",
            "<!--",
            "-->",
            "<![CDATA[",
            "]]>",
            '<a href="https://example.org/x">',
            "</a>",
            "<table><tr><td>",
            "<v:roundrect href='https://example.org/v'>",
            "<",
            "\"'",
        ]
    ),
    max_size=300,
)
# One fragment repeated up to 3,000 times, between links: deep nesting and long runs of unclosed markup.
repeated_markup = st.tuples(
    st.sampled_from(["<!--[if mso]>", "<!--", "<![CDATA[", "<table><tr><td>", "<!--[if !mso]><!-->"]),
    st.integers(min_value=1, max_value=3000),
).map(lambda r: '<a href="https://example.org/a">' + r[0] * r[1] + '<a href="https://example.org/b">')
markup = st.one_of(fragments, repeated_markup).map(lambda parts: "<html><body>" + "".join(parts))
local_part = st.integers(min_value=1, max_value=2000).map(lambda n: "a" * n)
domain_part = st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=6).map(
    lambda labels: ".".join("d" * n for n in labels) + ".net"
)
address = st.tuples(local_part, domain_part).map("@".join)


@given(field=st.sampled_from(HEADER_FIELDS), value=breaking_text)
@SETTINGS
def test_header_breaking_characters_in_any_field_are_refused_cleanly(stack, aws, field, value):
    fields = [("from", "s@example.com"), ("to", "a@example.net"), ("html", "<p>x</p>"), (field, value)]
    before = _copies(aws)
    response = _submit(stack, fields)
    new = {key: copy for key, copy in _copies(aws).items() if key not in before}
    if response["statusCode"] == 200:  # accepted: then no line break reached a stored header
        for copy in new.values():
            head = copy.split(b"\r\n\r\n", 1)[0]
            for line in head.split(b"\r\n"):
                assert not any(ch.encode() in line for ch in "\n\r\x00\x0b\x0c"), line
    else:
        assert response["statusCode"] == 400, response
        assert new == {}


@given(field=st.sampled_from(JSON_FIELDS), value=deep_json)
@SETTINGS
def test_json_nested_to_any_depth_in_any_json_field_is_a_400_or_accepted(stack, aws, field, value):
    before = _copies(aws)
    response = _submit(
        stack, [("from", "s@example.com"), ("to", "a@example.net"), ("text", "x"), (field, value)]
    )
    assert response["statusCode"] in (200, 400), response
    if response["statusCode"] == 400:
        assert _copies(aws).keys() == before.keys()


@given(html=markup)
@SETTINGS
def test_nested_and_unclosed_conditionals_and_markup_are_tracked(stack, aws, html):
    fields = [
        ("from", "s@example.com"),
        ("to", "a@example.net"),
        ("html", html),
        ("o:tracking-clicks", "yes"),
    ]
    response = _submit(stack, fields)
    assert response["statusCode"] == 200, response


@given(to=address, field=st.sampled_from(["to", "cc", "bcc"]))
@SETTINGS
def test_oversized_addresses_are_a_400_naming_the_field(stack, aws, to, field):
    fields = [("from", "s@example.com"), ("to", "a@example.net"), ("text", "x"), (field, to)]
    before = _copies(aws)
    response = _submit(stack, fields)
    local, _, domain = to.partition("@")
    within_limits = (
        len(local) <= 64 and len(to) <= 254 and all(len(label) <= 63 for label in domain.split("."))
    )
    if within_limits:
        assert response["statusCode"] == 200, response
    else:
        assert response["statusCode"] == 400, response
        assert _copies(aws).keys() == before.keys()


parameter_list = st.tuples(
    st.sampled_from(["content-type", "content-disposition"]),
    st.sampled_from(['a="' + ";" * 10, "a=b; ", 'filename*0="x"; ', "; ", '"']),
    st.integers(min_value=0, max_value=20_000),
)


@given(header=parameter_list)
@SETTINGS
def test_long_parameter_lists_in_every_parsed_mime_header_are_accepted(stack, aws, header):
    name, piece, count = header
    content_type = "text/html; charset=utf-8"
    disposition = "inline"
    if name == "content-type":
        content_type += "; " + piece * count
    else:
        disposition += "; " + piece * count
    message = (
        "From: s@example.com\r\nTo: a@example.net\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
        "<html><body><p>x</p></body></html>\r\n"
    ).encode()
    response = _submit_mime(stack, message)
    assert response["statusCode"] == 200, response


def _submit(stack, fields) -> dict:
    route = next(r for r in ROUTES if r.function == "SubmitFunction" and not r.path.endswith(".mime"))
    hdrs = {"authorization": stack["auth"], "content-type": "application/x-www-form-urlencoded"}
    return call(stack, route, {"domain": "example.com"}, hdrs, _urlencode(fields), "")


def _submit_mime(stack, message: bytes) -> dict:
    route = next(r for r in ROUTES if r.path.endswith("messages.mime"))
    boundary = "hypothesisBoundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="to"\r\n\r\nr@example.net\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="message"; filename="m.eml"\r\n'
            f"Content-Type: message/rfc822\r\n\r\n"
        ).encode()
        + message
        + f"\r\n--{boundary}--\r\n".encode()
    )
    hdrs = {"authorization": stack["auth"], "content-type": f"multipart/form-data; boundary={boundary}"}
    return call(stack, route, {"domain": "example.com"}, hdrs, body, "")


def _copies(aws) -> dict[str, bytes]:
    """Every stored copy by its key (examples of one test share the moto state: compare before and after)."""
    s3 = boto3.client("s3")
    bucket = aws.ref("MessageBucket")
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}
