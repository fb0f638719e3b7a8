"""Submission through the submit handler, under moto with the template's own table, bucket and secret."""

from __future__ import annotations

import base64
import email
import email.message
import json
import re
from email import policy
from urllib.parse import urlencode, urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError

from devstack.events import make_http_event
from devstack.handlers import load_event, load_handler
from devstack.server import DEFAULT_API_KEY
from opentracking.domains import registry

PIXEL_RE = re.compile(r'<img src="(https://email\.example\.com/o/([A-Za-z0-9_-]+))"')
BOUNDARY = "otBoundary1234"


def put_ready_domain(**changes) -> None:
    """example.com with a valid tracking CNAME (what verify records once DNS is right)."""
    ready = {"cname_target": "track.opentracking.test", "cname_valid": "valid", "tracking_ready": True}
    registry.put(registry.Domain(name="example.com", **{**ready, **changes}))


@pytest.fixture
def submit(aws, lambda_context, basic_auth):
    put_ready_domain()
    handler = load_handler("functions/submit")

    def call(
        fields=(),
        *,
        files=(),
        mime=False,
        headers=None,
        domain="example.com",
        raw_body=None,
        content_type=None,
    ):
        if files or content_type == "multipart":
            body, content_type = multipart(fields, files)
        elif raw_body is not None:
            body = raw_body
        else:
            body, content_type = urlencode(list(fields)).encode(), "application/x-www-form-urlencoded"
        path = f"/v3/{domain}/messages" + (".mime" if mime else "")
        headers = {"authorization": basic_auth, **(headers or {})}
        if content_type is not None:
            headers = {"content-type": content_type, **headers}
        event = make_http_event(
            "POST",
            path,
            route_key="POST /v3/{domain}/messages" + (".mime" if mime else ""),
            path_parameters={"domain": domain},
            headers=headers or {},
            body=body,
        )
        response = handler.lambda_handler(event, lambda_context)
        return response["statusCode"], json.loads(response["body"])

    return call


def multipart(fields, files):
    chunks = []
    for name, value in fields:
        chunks.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, filename, content_type, data in files:
        chunks.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={BOUNDARY}"


def stored_objects(stack) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    bucket = stack.ref("MessageBucket")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def items(stack, prefix: str = "") -> list[dict]:
    table = boto3.resource("dynamodb").Table(stack.ref("DataTable"))
    return [i for i in table.scan()["Items"] if i["pk"].startswith(prefix)]


BASE = [
    ("from", "Sender <sender@example.com>"),
    ("subject", "Hello"),
    ("text", "Hello there"),
    ("html", "<html><body><p>Hello there</p></body></html>"),
]


def test_tagged_tracked_message_to_three_recipients_yields_three_tracked_copies(aws, submit):
    # GIVEN a tagged message with open tracking asked for, to three envelope recipients (to, cc, bcc)
    fields = [
        *BASE,
        ("to", "alice@example.net"),
        ("cc", "bob@example.org"),
        ("bcc", "carol@example.com"),
        ("o:tag", "Welcome"),
        ("o:tracking-opens", "yes"),
        ("v:plan", "pro"),
    ]
    # WHEN it is submitted
    status, body = submit(fields)
    # THEN Mailgun's answer, and opens are tracked
    assert status == 200, body
    assert body["message"] == "Queued. Thank you."
    assert re.fullmatch(r"<\d{14}\.[0-9a-f]{16}@example\.com>", body["id"])
    assert {k: body["tracking"][k] for k in ("opens", "reason", "detail")} == {
        "opens": True,
        "reason": None,
        "detail": None,
    }
    # AND three S3 objects, each with exactly one pixel and its own token
    objects = stored_objects(aws)
    assert len(objects) == 3
    tokens = []
    for key, data in objects.items():
        assert re.fullmatch(r"messages/example\.com/\d{4}/\d{2}/\d{2}/[0-9a-f]{32}/[0-9a-f]{32}\.eml", key)
        message = email.message_from_bytes(data, policy=policy.default)
        html = message.get_body(("html",)).get_content()
        found = PIXEL_RE.findall(html)
        assert len(found) == 1
        assert html.index(found[0][0]) < html.index("</body>")
        tokens.append(found[0][1])
        assert "Bcc" not in message
        assert message["Message-Id"] == body["id"]
    assert len(set(tokens)) == 3
    # AND one message record, one copy record and one accepted event per recipient
    messages = items(aws, "MSG#")
    assert len(messages) == 1 and messages[0]["tags"] == ["welcome"] and messages[0]["recipient_count"] == 3
    copies = [i for i in items(aws, "COPY#") if i["sk"] == "COPY"]
    assert sorted(c["recipient"] for c in copies) == [
        "alice@example.net",
        "bob@example.org",
        "carol@example.com",
    ]
    assert all(c["tracked"] and c["s3_key"] in objects for c in copies)
    events = [json.loads(i["payload"]) for i in items(aws, "COPY#") if i["sk"].startswith("EVENT#")]
    assert sorted(e["recipient"] for e in events) == sorted(c["recipient"] for c in copies)
    assert all(
        e["event"] == "accepted" and e["tags"] == ["welcome"] and e["user-variables"] == {"plan": "pro"}
        for e in events
    )
    assert {e["message"]["headers"]["message-id"] for e in events} == {body["id"].strip("<>")}


def accepted_events(stack) -> dict[str, dict]:
    found = [json.loads(i["payload"]) for i in items(stack, "COPY#") if i["sk"].startswith("EVENT#")]
    return {e["recipient"]: e for e in found if e["event"] == "accepted"}


def test_the_accepted_event_is_in_mailguns_shape(aws, submit):
    # Mailgun's "Webhook Payloads" page: id of 22 url-safe characters, From with its display name, To,
    # the message's size, attachments and recipients.
    status, _ = submit(
        [*BASE, ("to", "Ann <ann@example.net>")],
        files=[("attachment", "report.pdf", "application/pdf", b"%PDF-1.4")],
    )
    assert status == 200
    event = accepted_events(aws)["ann@example.net"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", event["id"])
    headers = event["message"]["headers"]
    assert headers["from"] == "Sender <sender@example.com>" and headers["to"] == "Ann <ann@example.net>"
    assert headers["subject"] == "Hello"
    assert event["message"]["recipients"] == ["ann@example.net"]
    assert event["message"]["attachments"] == [
        {"filename": "report.pdf", "content-type": "application/pdf", "size": 8}
    ]
    assert event["message"]["size"] > 8 and event["storage"]["key"]


def test_a_mime_messages_attachments_are_listed_in_its_accepted_event(aws, submit):
    # the same shape as for form attachments: name, type and decoded size, in order; inline parts and
    # bodies are not attachments; an attached message is one
    message = email.message.EmailMessage()
    message["From"], message["To"], message["Subject"] = "sender@example.com", "d@example.net", "Files"
    message.set_content("text body")
    message.add_alternative("<p>html body</p>", subtype="html")
    message.add_attachment(bytes(range(256)) * 4, maintype="application", subtype="pdf", filename="q.pdf")
    message.add_attachment("na\u00efve\n" * 10, filename="notes.txt", cte="quoted-printable")
    forwarded = email.message.EmailMessage()
    forwarded["Subject"] = "forwarded"
    forwarded.set_content("inner")
    message.add_attachment(forwarded)
    raw = message.as_bytes()
    status, _ = submit(
        [("to", "d@example.net")], files=[("message", "m.eml", "message/rfc822", raw)], mime=True
    )
    assert status == 200
    listed = accepted_events(aws)["d@example.net"]["message"]["attachments"]
    assert [(a["filename"], a["content-type"]) for a in listed] == [
        ("q.pdf", "application/pdf"),
        ("notes.txt", "text/plain"),
        ("", "message/rfc822"),
    ]
    assert listed[0]["size"] == 1024 and listed[1]["size"] == len(("na\u00efve\n" * 10).encode())


def test_an_accepted_event_names_no_other_recipient(aws, submit):
    # A To header naming three recipients: each one's event shows its own address only, so erasing an
    # address reaches every record of it. Batch sending's copies show their own To.
    assert submit([*BASE, ("to", "Ann <ann@example.net>, bob@example.net, cy@example.net")])[0] == 200
    assert {r: e["message"]["headers"]["to"] for r, e in accepted_events(aws).items()} == {
        "ann@example.net": "ann@example.net",
        "bob@example.net": "bob@example.net",
        "cy@example.net": "cy@example.net",
    }


def test_the_stored_message_is_read_back_through_the_events_storage_url(
    aws, submit, invoke, basic_auth, lambda_context
):
    # Mailgun's message-storage API: GET on the accepted event's storage.url returns the copy as sent
    png = b"\x89PNG\r\n\x1a\n" + bytes(20)
    status, _ = submit(
        [*BASE, ("to", "ann@example.net"), ("o:tracking", "yes")],
        files=[
            ("attachment", "report.pdf", "application/pdf", b"%PDF-1.4"),
            ("inline", "logo.png", "image/png", png),
        ],
    )
    assert status == 200
    storage = accepted_events(aws)["ann@example.net"]["storage"]
    assert re.fullmatch(r"[0-9a-f]{32}", storage["key"])
    # the API's own address (the domain API Gateway served the call on), not the client's Host header
    assert storage["url"].endswith(f"/v3/domains/example.com/messages/{storage['key']}")
    path = urlsplit(storage["url"]).path
    status, message = invoke("api", "GET", path)
    assert status == 200, message
    assert (message["recipients"], message["sender"], message["subject"]) == (
        "ann@example.net",
        "sender@example.com",
        "Hello",
    )
    assert message["from"] == "Sender <sender@example.com>" and message["body-plain"].strip() == "Hello there"
    assert (
        "<p>Hello there</p>" in message["body-html"] and "/o/" in message["body-html"]
    )  # as sent: its pixel
    assert ["Subject", "Hello"] in message["message-headers"]
    (attached,) = message["attachments"]
    assert (attached["name"], attached["content-type"], attached["size"]) == (
        "report.pdf",
        "application/pdf",
        8,
    )
    (inline,) = message["content-id-map"].values()
    assert (inline["name"], inline["size"]) == ("logo.png", len(png))
    # the files themselves
    handler = load_handler("functions/api")
    for described, body in ((attached, b"%PDF-1.4"), (inline, png)):
        file_path = urlsplit(described["url"]).path
        _, _, _, name, _, key, _, index = file_path.split("/")
        event = make_http_event(
            "GET",
            file_path,
            route_key="GET /v3/domains/{name}/messages/{key}/attachments/{index}",
            path_parameters={"name": name, "key": key, "index": index},
            headers={"authorization": basic_auth},
        )
        response = handler.lambda_handler(event, lambda_context)
        assert response["statusCode"] == 200, response
        assert base64.b64decode(response["body"]) == body
    # the raw MIME, as Mailgun answers Accept: message/rfc2822
    status, raw = invoke("api", "GET", path, headers={"accept": "message/rfc2822"})
    assert status == 200 and set(raw) == {"recipients", "sender", "from", "subject", "body-mime"}
    parsed = email.message_from_string(raw["body-mime"], policy=policy.default)
    assert parsed["Subject"] == "Hello" and parsed["To"] == "ann@example.net"
    # only through its own domain; an unknown or malformed key is a 404
    registry.put(registry.Domain(name="example.org", cname_target="t.example", tracking_ready=True))
    assert invoke("api", "GET", path.replace("example.com", "example.org"))[0] == 404
    assert invoke("api", "GET", path.replace(storage["key"], "0" * 32))[0] == 404
    assert invoke("api", "GET", path.replace(storage["key"], "not-a-key"))[0] == 404


def use_sample_key(stack) -> None:
    """The sample events authenticate with the local stack's default key."""
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack.ref("ApiKeysSecret"), SecretString=json.dumps({"account": DEFAULT_API_KEY})
    )


def test_sample_event_is_accepted(aws, submit, lambda_context):
    use_sample_key(aws)
    handler = load_handler("functions/submit")
    response = handler.lambda_handler(load_event("submit_messages.json"), lambda_context)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["tracking"]["opens"] is True
    assert len(stored_objects(aws)) == 2


def test_sample_mime_event_consumes_control_headers(aws, submit, lambda_context):
    use_sample_key(aws)
    handler = load_handler("functions/submit")
    response = handler.lambda_handler(load_event("submit_mime.json"), lambda_context)
    assert response["statusCode"] == 200, response["body"]
    (data,) = stored_objects(aws).values()
    assert b"X-Mailgun" not in data
    assert len(PIXEL_RE.findall(data.decode())) == 1
    (message,) = items(aws, "MSG#")
    assert message["tags"] == ["receipts"]


def test_mime_submission_preserves_every_byte_but_consumed_headers_and_the_pixel(aws, submit):
    # GIVEN a raw MIME message with control headers and a DKIM-free html part
    raw = (
        b"Message-Id: <abc@example.com>\r\nFrom: s@example.com\r\nTo: d@example.net\r\nSubject: t\r\n"
        b'X-Mailgun-Track: yes\r\nX-Mailgun-Tag: A\r\nX-Mailgun-Tag: b\r\nX-Mailgun-Variables: {"k": "v"}\r\n'
        b"Bcc: hidden@example.org\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hi</p>\r\n"
    )
    # WHEN submitted with `to` and the file
    status, body = submit(
        [("to", "d@example.net")], files=[("message", "m.eml", "message/rfc822", raw)], mime=True
    )
    # THEN accepted under its own Message-Id, the headers consumed, the pixel appended
    assert status == 200, body
    assert body["id"] == "<abc@example.com>"
    (data,) = stored_objects(aws).values()
    expected_prefix = (
        b"Message-Id: <abc@example.com>\r\nFrom: s@example.com\r\nTo: d@example.net\r\nSubject: t\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hi</p>"
    )
    assert data.startswith(expected_prefix)
    assert data.endswith(b" />\r\n")
    assert len(PIXEL_RE.findall(data.decode())) == 1
    (message,) = items(aws, "MSG#")
    assert message["tags"] == ["a", "b"]
    (copy,) = [i for i in items(aws, "COPY#") if i["sk"] == "COPY"]
    assert json.loads(copy["user_variables"]) == {"k": "v"}


def test_attachments_and_inline_images_build_a_proper_mime_tree(aws, submit):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    status, body = submit(
        [
            *BASE[:3],
            ("html", '<html><body><img src="cid:logo.png"></body></html>'),
            ("to", "a@example.net"),
            ("o:tracking", "yes"),
            ("h:X-Campaign", "fall"),
            ("h:Reply-To", "help@example.com"),
        ],
        files=[
            ("inline", "logo.png", "image/png", png),
            ("attachment", "report.pdf", "application/pdf", b"%PDF-1.4"),
            ("attachment", "notes.txt", "text/plain", b"notes"),
        ],
    )
    assert status == 200, body
    (data,) = stored_objects(aws).values()
    message = email.message_from_bytes(data, policy=policy.default)
    structure = [part.get_content_type() for part in message.walk()]
    assert structure == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
        "application/pdf",
        "text/plain",
    ]
    inline = next(p for p in message.walk() if p.get_content_type() == "image/png")
    assert inline["Content-ID"] == "<logo.png>" and inline.get_content() == png
    attachments = [(a.get_filename(), a.get_content()) for a in message.iter_attachments()]
    assert attachments == [("report.pdf", b"%PDF-1.4"), ("notes.txt", "notes")]
    assert message["X-Campaign"] == "fall" and message["Reply-To"] == "help@example.com"
    assert len(PIXEL_RE.findall(message.get_body(("html",)).get_content())) == 1


def test_recipient_variables_make_personal_copies(aws, submit):
    status, _ = submit(
        [
            ("from", "s@example.com"),
            ("to", "a@example.net, b@example.net"),
            ("subject", "Hi %recipient.name%"),
            ("html", "<html><body>Dear %recipient.name%</body></html>"),
            ("o:tracking", "yes"),
            ("v:user", "%recipient.id%"),
            (
                "recipient-variables",
                json.dumps(
                    {"a@example.net": {"name": "Ann", "id": 1}, "b@example.net": {"name": "Ben", "id": 2}}
                ),
            ),
        ]
    )
    assert status == 200
    seen = {}
    for data in stored_objects(aws).values():
        message = email.message_from_bytes(data, policy=policy.default)
        seen[message["To"]] = (message["Subject"], "Dear " in message.get_body(("html",)).get_content())
        assert "%recipient" not in message.get_body(("html",)).get_content()
    assert seen == {"a@example.net": ("Hi Ann", True), "b@example.net": ("Hi Ben", True)}
    copies = {
        c["recipient"]: json.loads(c["user_variables"]) for c in items(aws, "COPY#") if c["sk"] == "COPY"
    }
    assert copies == {"a@example.net": {"user": "1"}, "b@example.net": {"user": "2"}}


def test_any_key_of_a_recipients_variables_is_substituted(aws, submit):
    # A framework's Mailgun backend sends per-recipient metadata as v:cust=%recipient.v:cust%, and a
    # per-recipient header as h:List-Unsubscribe=%recipient.h:List-Unsubscribe%: keys with ":" (and any
    # other key of the JSON object) must be substituted, not left as placeholders.
    variables = {
        "a@example.net": {
            "v:cust": "1",
            "h:List-Unsubscribe": "<https://example.com/u/a>",
            "first name": "Ann",
            "50%": "half",
            "vip": True,
            "plan": {"n": 2},
        }
    }
    status, _ = submit(
        [
            ("from", "s@example.com"),
            ("to", "a@example.net"),
            ("subject", "Hi %recipient.first name% (%recipient.50%%)"),
            ("html", "<html><body>%recipient.vip% %recipient.plan% %recipient.missing:key%</body></html>"),
            ("v:cust", "%recipient.v:cust%"),
            ("h:List-Unsubscribe", "%recipient.h:List-Unsubscribe%"),
            ("recipient-variables", json.dumps(variables)),
        ]
    )
    assert status == 200
    (data,) = stored_objects(aws).values()
    message = email.message_from_bytes(data, policy=policy.default)
    assert message["Subject"] == "Hi Ann (half)"
    assert message["List-Unsubscribe"] == "<https://example.com/u/a>"
    assert '<body>true {"n": 2} %recipient.missing:key%</body>' in message.get_body(("html",)).get_content()
    (copy,) = [c for c in items(aws, "COPY#") if c["sk"] == "COPY"]
    assert json.loads(copy["user_variables"]) == {"cust": "1"}


@pytest.mark.parametrize(
    ("domain_on", "fields", "opens", "reason"),
    [
        (False, [], False, "tracking-disabled"),
        (True, [], True, None),
        (True, [("o:tracking", "no")], False, "disabled-by-message"),
        (False, [("h:X-Mailgun-Track-Opens", "yes")], True, None),
    ],
)
def test_domain_setting_and_overrides(aws, submit, domain_on, fields, opens, reason):
    put_ready_domain(open_tracking=domain_on)
    status, body = submit([*BASE, ("to", "a@example.net"), *fields])
    assert status == 200
    assert (body["tracking"]["opens"], body["tracking"]["reason"]) == (opens, reason)
    (data,) = stored_objects(aws).values()
    assert len(PIXEL_RE.findall(data.decode())) == (1 if opens else 0)
    assert b"X-Mailgun" not in data


def test_no_pixel_while_the_tracking_cname_is_not_valid(aws, submit):
    # GIVEN a domain whose tracking CNAME was found missing
    put_ready_domain(open_tracking=True, tracking_ready=False, cname_valid="invalid")
    # WHEN a message asks for open tracking
    status, body = submit([*BASE, ("to", "a@example.net"), ("o:tracking", "yes")])
    # THEN it is accepted without a pixel pointing at a dead host, and the response says why
    assert status == 200
    assert body["tracking"]["opens"] is False
    assert body["tracking"]["reason"] == "tracking-cname-invalid"
    assert "CNAME" in body["tracking"]["detail"]
    (data,) = stored_objects(aws).values()
    assert b"/o/" not in data


def test_text_only_message_is_stored_untracked_with_the_reason(aws, submit):
    status, body = submit(
        [("from", "s@example.com"), ("to", "a@example.net"), ("text", "plain"), ("o:tracking-opens", "yes")]
    )
    assert status == 200
    assert body["tracking"]["opens"] is False and body["tracking"]["reason"] == "no-html-part"
    assert "HTML" in body["tracking"]["detail"]
    (copy,) = [c for c in items(aws, "COPY#") if c["sk"] == "COPY"]
    assert copy["tracked"] is False


def test_pixel_at_the_top_when_asked(aws, submit):
    status, _ = submit(
        [
            *BASE[:3],
            ("html", "<html><body><p>first</p><p>last</p></body></html>"),
            ("to", "a@example.net"),
            ("o:tracking", "yes"),
            ("o:tracking-pixel-location-top", "yes"),
        ]
    )
    assert status == 200
    (data,) = stored_objects(aws).values()
    html = email.message_from_bytes(data, policy=policy.default).get_body(("html",)).get_content()
    assert re.search(r"<body><img src=\"https://email\.example\.com/o/", html)


def assert_nothing_stored(stack):
    assert stored_objects(stack) == {}
    assert [i["pk"] for i in items(stack)] == ["DOMAIN#example.com"]


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ([("to", "a@example.net"), ("text", "x")], 400, "'from' parameter is missing"),
        ([("from", "s@example.com"), ("text", "x")], 400, "'to' parameter is missing"),
        (
            [("from", "s@example.com"), ("to", "a@example.net")],
            400,
            "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified",
        ),
        (
            [("from", "s@example.com"), ("to", "not-an-address"), ("text", "x")],
            400,
            "'to' parameter is not a valid address",
        ),
        (
            [*BASE, ("to", "a@example.net"), ("o:tracking", "maybe")],
            400,
            "'o:tracking' parameter must be one of",
        ),
        (
            [*BASE, ("to", "a@example.net"), ("recipient-variables", "{")],
            400,
            "'recipient-variables' must be",
        ),
        (
            [*BASE, ("to", "a@example.net"), ("h:Bad Header", "x")],
            400,
            "'h:Bad Header' is not a valid header",
        ),
        ([*BASE, ("to", ",".join(f"r{i}@example.net" for i in range(1001)))], 400, "Too many recipients"),
    ],
)
def test_bad_input_gets_mailgun_errors_and_stores_nothing(aws, submit, fields, status, message):
    got_status, body = submit(fields)
    assert got_status == status
    assert body["message"].startswith(message)
    assert_nothing_stored(aws)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic",
        "Bearer abc",
        "Basic !!!",
        "Basic " + base64.b64encode(b"api:wrong").decode(),
        "Basic " + base64.b64encode(b"user:KEY").decode(),
        "Basic " + base64.b64encode(b"api:").decode(),
    ],
)
def test_requests_without_a_valid_key_are_401_and_store_nothing(aws, submit, api_key, authorization):
    if authorization is not None:
        authorization = authorization.replace("KEY", api_key)
    status, body = submit([*BASE, ("to", "a@example.net")], headers={"authorization": authorization or ""})
    assert status == 401
    assert body["message"].startswith("Forbidden")
    assert_nothing_stored(aws)


def test_unknown_domain_is_404(aws, submit):
    status, body = submit([*BASE, ("to", "a@example.net")], domain="unknown.example")
    assert (status, body) == (404, {"message": "Domain not found: unknown.example"})
    assert_nothing_stored(aws)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        (None, b"to=x"),
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=zz", b"garbage without boundary"),
        ("application/x-www-form-urlencoded", b"\xff\xfe"),
    ],
)
def test_malformed_bodies_are_400(aws, submit, content_type, body):
    status, response = submit(raw_body=body, content_type=content_type)
    assert status == 400, response
    assert isinstance(response["message"], str)
    assert_nothing_stored(aws)


def test_mime_without_message_is_400(aws, submit):
    status, body = submit([("to", "a@example.net")], mime=True, content_type="multipart")
    assert (status, body["message"]) == (400, "'message' parameter is missing")
    assert_nothing_stored(aws)


PROFILES = ((), ("bulk",))  # opentracking.core.aws: the clients a submission calls AWS with (as it asks)


def fail_on(operation: str, *, after: int = 0, times: int = 1):
    """A botocore hook that lets `after` calls of an operation through, then fails `times` calls like
    DynamoDB or S3 would (a transient fault by default)."""
    calls = {"n": 0}

    def hook(**_kwargs):
        calls["n"] += 1
        if after < calls["n"] <= after + times:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, operation)

    return hook


RECIPIENTS_60 = [f"r{i}@example.net" for i in range(60)]
# Each copy its own message: 60 objects (the same message for all is stored once, as its template).
OWN_OBJECTS = (("recipient-variables", json.dumps({r: {"n": n} for n, r in enumerate(RECIPIENTS_60)})),)


@pytest.mark.parametrize(
    ("service", "event", "after", "times", "extra"),
    [
        ("dynamodb", "before-call.dynamodb.TransactWriteItems", 0, 1, ()),  # after the template's put
        ("dynamodb", "before-call.dynamodb.TransactWriteItems", 1, 1, ()),  # after the first 100 records
        ("s3", "before-call.s3.PutObject", 0, 1, ()),  # the message's one template
        ("dynamodb", "before-call.dynamodb.TransactWriteItems", 0, 1, OWN_OBJECTS),  # after 60 puts
        ("s3", "before-call.s3.PutObject", 30, 1, OWN_OBJECTS),  # half-way through the copies
        ("s3", "before-call.s3.PutObject", 59, 1, OWN_OBJECTS),  # the last copy
    ],
)
def test_a_failure_at_any_step_leaves_nothing_half_stored(aws, submit, service, event, after, times, extra):
    # GIVEN a storage fault at one step (60 recipients -> 121 records in 2 transactions, and one template
    # or 60 objects)
    from opentracking.core.aws import client

    hook = fail_on(event, after=after, times=times)
    for profile in PROFILES:  # whichever client the submission uses for the call
        client(service, *profile).meta.events.register(event, hook)
    recipients = ",".join(RECIPIENTS_60)
    # WHEN a tracked message is submitted
    status, body = submit([*BASE, ("to", recipients), ("o:tracking", "yes"), *extra])
    # THEN the client is told to retry, and nothing at all was kept
    assert status == 503
    assert "nothing was kept" in body["message"]
    for profile in PROFILES:
        client(service, *profile).meta.events.unregister(event, hook)
    assert_nothing_stored(aws)


def test_dynamodb_down_for_a_small_message_keeps_nothing(aws, submit):
    # GIVEN DynamoDB refusing every transaction (an outage, not a blip)
    from opentracking.core.aws import client

    event = "before-call.dynamodb.TransactWriteItems"
    hook = fail_on(event, times=10**6)
    for profile in PROFILES:
        client("dynamodb", *profile).meta.events.register(event, hook)
    # WHEN a message to three recipients is submitted
    status, _ = submit([*BASE, ("to", "a@example.net, b@example.net, c@example.net")])
    # THEN it is refused and neither S3 nor DynamoDB keeps anything (one transaction commits it all)
    assert status == 503
    for profile in PROFILES:
        client("dynamodb", *profile).meta.events.unregister(event, hook)
    assert_nothing_stored(aws)


def test_same_idempotency_key_is_stored_once(aws, submit):
    fields = [*BASE, ("to", "a@example.net, b@example.net"), ("o:tracking", "yes")]
    first = submit(fields, headers={"Idempotency-Key": "order-42"})
    second = submit(fields, headers={"Idempotency-Key": "order-42"})
    assert first[0] == second[0] == 200
    assert first[1] == second[1]
    assert len(stored_objects(aws)) == 2
    assert len(items(aws, "MSG#")) == 1
    # a different key is a different message
    third = submit(fields, headers={"Idempotency-Key": "order-43"})
    assert third[1]["id"] != first[1]["id"]
    assert len(items(aws, "MSG#")) == 2


def test_idempotency_key_reused_with_another_message_is_refused(aws, submit):
    submit([*BASE, ("to", "a@example.net")], headers={"Idempotency-Key": "k1"})
    status, body = submit([*BASE, ("to", "other@example.net")], headers={"Idempotency-Key": "k1"})
    assert status == 400 and "Idempotency-Key" in body["message"]
    assert len(items(aws, "MSG#")) == 1


def test_failed_submission_can_be_retried_with_the_same_key(aws, submit):
    from opentracking.core.aws import client

    hook = fail_on("PutObject")
    client("s3").meta.events.register("before-call.s3.PutObject", hook)
    fields = [*BASE, ("to", "a@example.net")]
    assert submit(fields, headers={"Idempotency-Key": "retry-me"})[0] == 503
    client("s3").meta.events.unregister("before-call.s3.PutObject", hook)
    status, body = submit(fields, headers={"Idempotency-Key": "retry-me"})
    assert status == 200, body
    assert len(stored_objects(aws)) == 1
