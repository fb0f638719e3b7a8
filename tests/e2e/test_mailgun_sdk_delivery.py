"""Delivery end to end (issue 16): the official Mailgun SDK sends through `make run`, which delivers to an
SMTP server named in SMTP_RELAY (aiosmtpd on loopback, the recipient's mail server); Chromium renders the HTML
of the message as that server received it, with the tracking host mapped to the local stack; the SDK then
reads Mailgun's `delivered` and `opened` events for the recipient."""

from __future__ import annotations

import email
import time
from email import policy

import pytest
from mailgun.client import Client

from devstack.process import start_stack
from devstack.smtp_server import MailSink
from opentracking.tracking import bots
from tests.helpers import browser

DOMAIN = "inbox.example.com"
READER = "reader@example.net"
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.0"


@pytest.fixture(scope="module")
def relay():
    sink = MailSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def stack(relay, tmp_path_factory):
    running = start_stack(tmp_path_factory.mktemp("delivery-e2e"), extra_env={"SMTP_RELAY": relay.address})
    running.create_tracked_domain(DOMAIN)
    yield running
    assert running.stop() == 0, "\n".join(running.output[-40:])


def events(sdk: Client, event: str) -> list[dict]:
    response = sdk.events.get(domain=DOMAIN, filters={"event": event, "recipient": READER})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def poll(read, seconds: float = 30.0) -> list[dict]:
    deadline, items = time.monotonic() + seconds, []
    while time.monotonic() < deadline and not items:
        items = read()
        time.sleep(0.3)
    return items


@pytest.mark.skipif(not browser.AVAILABLE, reason=browser.MISSING)
def test_the_sdk_sends_the_server_receives_the_reader_opens_and_the_sdk_reads_both(stack, relay, tmp_path):
    with Client(auth=("api", stack.api_key), api_url=stack.api_url) as sdk:
        sent_at = time.time()
        response = sdk.messages.create(
            data={
                "from": f"Inbox <news@{DOMAIN}>",
                "to": READER,
                "subject": "Delivered for real",
                "html": "<html><body><h1>Hello reader</h1></body></html>",
                "o:tag": "inbox",
            },
            domain=DOMAIN,
        )
        assert response.status_code == 200, response.text
        # the recipient's server received it: one transaction for the reader, headers intact
        received = poll(lambda: relay.to(READER))
        assert len(received) == 1 and received[0].recipients == (READER,)
        message = email.message_from_bytes(received[0].data, policy=policy.default)
        assert message["Subject"] == "Delivered for real"
        (delivered,) = poll(lambda: events(sdk, "delivered"))
        assert delivered["delivery-status"]["code"] == 250 and delivered["tags"] == ["inbox"]

        # a person opens mail later than a scanner would
        time.sleep(max(0.0, sent_at + bots.SCANNER_WINDOW_SECONDS + 1 - time.time()))
        page = tmp_path / "received.html"
        page.write_text(message.get_body(("html",)).get_content())
        result = browser.render(
            page,
            profile=tmp_path / "profile",
            host=f"email.{DOMAIN}",
            port=stack.port,
            user_agent=THUNDERBIRD,
        )
        assert "<h1>Hello reader</h1>" in result.stdout, result.stderr[-2000:]
        (opened,) = poll(lambda: events(sdk, "opened"))
        assert opened["message"]["headers"]["message-id"] == delivered["message"]["headers"]["message-id"]
        assert opened["client-info"]["client-name"] == "Thunderbird" and opened["client-info"]["bot"] == ""
