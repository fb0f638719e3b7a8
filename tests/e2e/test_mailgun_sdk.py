"""The official Mailgun Python SDK, unchanged, pointed at the local stack."""

from __future__ import annotations

import email
import json
import re
from email import policy

import pytest
from mailgun.client import Client

DOMAIN = "sdk.example.com"


@pytest.fixture(scope="module")
def client(local_stack):
    local_stack.create_tracked_domain(DOMAIN)
    with Client(auth=("api", local_stack.api_key), api_url=local_stack.api_url) as sdk:
        yield sdk


def copy_for(local_stack, recipient: str) -> email.message.EmailMessage:
    ((_record, data),) = local_stack.copies_of(recipient)
    return email.message_from_bytes(data, policy=policy.default)


def test_sdk_sends_a_tagged_tracked_message(local_stack, client):
    # GIVEN the SDK's own example payload shape: repeated o:tag, o:tracking-opens
    data = {
        "from": f"Excited User <mailgun@{DOMAIN}>",
        "to": "sdk-reader@example.net",
        "cc": "sdk-cc@example.net",
        "subject": "Hello from the SDK",
        "text": "Testing some Mailgun awesomeness!",
        "html": "<html><body><h1>Testing some Mailgun awesomeness!</h1></body></html>",
        "o:tag": ["September newsletter", "newsletters"],
        "o:tracking-opens": "yes",
        "v:campaign": "sdk",
    }
    # WHEN it is sent through client.messages
    response = client.messages.create(data=data, domain=DOMAIN)
    # THEN Mailgun's answer, and each recipient has a tracked copy tagged as sent
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "Queued. Thank you."
    assert re.fullmatch(rf"<\d{{14}}\.[0-9a-f]{{16}}@{re.escape(DOMAIN)}>", body["id"])
    assert body["tracking"]["opens"] is True
    for recipient in ("sdk-reader@example.net", "sdk-cc@example.net"):
        message = copy_for(local_stack, recipient)
        html = message.get_body(("html",)).get_content()
        assert html.count(f"http://email.{DOMAIN}/o/") == 1
        assert message["Message-Id"] == body["id"]


def test_sdk_sends_a_mime_message_with_tracking_headers(local_stack, client):
    mime = (
        f"From: Sender <sender@{DOMAIN}>\r\nTo: sdk-mime@example.net\r\nSubject: MIME via SDK\r\n"
        "MIME-Version: 1.0\r\nX-Mailgun-Track-Opens: yes\r\nX-Mailgun-Tag: receipts\r\n"
        'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nreceipt\r\n"
        "--b1\r\nContent-Type: text/html\r\n\r\n<html><body><p>receipt</p></body></html>\r\n--b1--\r\n"
    ).encode()
    response = client.mimemessage.create(
        data={"to": "sdk-mime@example.net"}, files={"message": mime}, domain=DOMAIN
    )
    assert response.status_code == 200, response.text
    tracking = response.json()["tracking"]
    assert (tracking["opens"], tracking["reason"], tracking["detail"]) == (True, None, None)
    message = copy_for(local_stack, "sdk-mime@example.net")
    assert "X-Mailgun-Track-Opens" not in message
    assert "X-Mailgun-Tag" not in message
    assert message.get_body(("html",)).get_content().count(f"http://email.{DOMAIN}/o/") == 1


def test_sdk_sees_mailgun_errors(local_stack, client):
    response = client.messages.create(data={"to": "x@example.net", "text": "no sender"}, domain=DOMAIN)
    assert response.status_code == 400
    assert json.loads(response.text) == {"message": "'from' parameter is missing"}


def test_sdk_with_a_wrong_key_is_refused(local_stack):
    with Client(auth=("api", "wrong-key"), api_url=local_stack.api_url) as sdk:
        response = sdk.messages.create(
            data={"from": f"a@{DOMAIN}", "to": "b@example.net", "text": "x"}, domain=DOMAIN
        )
    assert response.status_code == 401
