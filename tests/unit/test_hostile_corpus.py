"""Hostile inputs found by hand (issue 15), each through the real handler: a 400 with Mailgun's JSON shape,
never a 5xx, and a refused submission stores nothing. Each case failed before its fix (500 or 503, or
accepted and stored)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import boto3
import pytest

from devstack.events import make_http_event
from devstack.runtime import functions

SUBMIT = "POST /v3/{domain}/messages"
BASE = [("from", "Sender <s@example.com>"), ("html", "<p>hi %recipient.name%</p>")]
TO = ("to", "a@example.net")
DEEP = "[" * 100_000 + "]" * 100_000
ADDRESS_OF_255 = "a@" + ".".join(["b" * 63, "c" * 63, "d" * 63, "e" * 57]) + ".net"

# (name, form fields besides BASE, the field the error names)
HOSTILE_SUBMISSIONS = [
    ("subject with CRLF", [TO, ("subject", "Hi\r\nBcc: x@evil.example")], "subject"),
    ("subject with VT", [TO, ("subject", "Hi\x0bthere")], "subject"),
    ("subject with FF", [TO, ("subject", "Hi\x0cthere")], "subject"),
    ("subject with U+2028", [TO, ("subject", "Hi\u2028there")], "subject"),
    ("subject with NEL", [TO, ("subject", "Hi\x85there")], "subject"),
    ("h:Reply-To with U+2028", [TO, ("h:Reply-To", "r@x.example\u2028X: y")], "h:Reply-To"),
    ("two h:Message-Id", [TO, ("h:Message-Id", "<a@b>"), ("h:Message-Id", "<c@d>")], "h:Message-Id"),
    (
        "a recipient variable with CRLF in a header",
        [
            ("to", "a@example.net"),
            ("h:X-Campaign", "%recipient.name%"),
            ("recipient-variables", json.dumps({"a@example.net": {"name": "x\r\nBcc: y@evil.example"}})),
        ],
        "h:X-Campaign",
    ),
    ("from with CRLF", [TO, ("from", "S <s@example.com>\r\nBcc: y@evil.example")], "from"),
    ("an h:Message-Id that is not one", [TO, ("h:Message-Id", "not an id")], "h:Message-Id"),
    ("recipient-variables nested 100,000 deep", [TO, ("recipient-variables", DEEP)], "recipient-variables"),
    ("h:X-Mailgun-Variables 100,000 deep", [TO, ("h:X-Mailgun-Variables", DEEP)], "X-Mailgun-Variables"),
    ("an address over 1,024 bytes", [("to", "a" * 1100 + "@example.net")], "to"),
    ("a local part of 65 octets", [("to", "a" * 65 + "@example.net")], "to"),
    ("an address of 255 octets", [("to", ADDRESS_OF_255)], "to"),
    ("a NUL in an address", [("to", "\x00@example.net")], "to"),
    ("a control character in a cc address", [TO, ("cc", "b\x07@example.net")], "cc"),
]  # fmt: skip


@pytest.fixture
def handlers(aws, tracked_domain):
    return functions(aws)


def submit(handlers, basic_auth, fields) -> dict:
    event = make_http_event(
        "POST",
        "/v3/example.com/messages",
        route_key=SUBMIT,
        path_parameters={"domain": "example.com"},
        headers={"authorization": basic_auth, "content-type": "application/x-www-form-urlencoded"},
        body=urlencode(fields).encode(),
    )
    return handlers["SubmitFunction"].invoke(event)


def stored(aws) -> tuple[int, int]:
    objects = boto3.client("s3").list_objects_v2(Bucket=aws.ref("MessageBucket")).get("KeyCount", 0)
    items = boto3.resource("dynamodb").Table(aws.ref("DataTable")).scan()["Items"]
    return objects, sum(1 for item in items if item["pk"].startswith(("MSG#", "COPY#")))


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [case[1:] for case in HOSTILE_SUBMISSIONS],
    ids=[case[0] for case in HOSTILE_SUBMISSIONS],
)
def test_a_hostile_submission_is_refused_and_stores_nothing(aws, handlers, basic_auth, fields, field_name):
    # WHEN the submission arrives (fields override BASE by coming later: Form.last)
    response = submit(handlers, basic_auth, [*BASE, *fields])

    # THEN a 400 in Mailgun's shape that names the field, and nothing kept
    assert response["statusCode"] == 400, response
    message = json.loads(response["body"])["message"]
    assert field_name in message, message
    assert stored(aws) == (0, 0)


def test_the_same_fields_without_the_hostile_part_are_accepted(aws, handlers, basic_auth):
    # the cases above are refused for what is hostile in them, not for their shape
    response = submit(
        handlers,
        basic_auth,
        [
            *BASE,
            ("to", "a" * 64 + "@example.net"),
            ("cc", "b@example.net"),
            ("subject", "Hi\tthere, ünïcode"),
            ("h:Reply-To", "r@example.com"),
            ("h:Message-Id", "<a@b>"),
            ("h:X-Campaign", "%recipient.name%"),
            ("recipient-variables", json.dumps({"a" * 64 + "@example.net": {"name": "Ann"}})),
        ],
    )
    assert response["statusCode"] == 200, response
    # the sender's own Message-Id names the message, as with Mailgun
    assert json.loads(response["body"])["id"] == "<a@b>"
    assert stored(aws)[0] == 2  # one copy for 'to', one for 'cc'


@pytest.mark.parametrize("name", ["1.2.3.4", "10.0.0.1", "192.168.1.1."])
def test_an_ip_address_is_not_a_sending_domain(aws, handlers, basic_auth, name):
    event = make_http_event(
        "POST",
        "/v3/domains",
        route_key="POST /v3/domains",
        headers={"authorization": basic_auth, "content-type": "application/x-www-form-urlencoded"},
        body=urlencode({"name": name}).encode(),
    )
    response = handlers["ApiFunction"].invoke(event)
    assert response["statusCode"] == 400, response
    assert "IP address" in json.loads(response["body"])["message"]
