"""Delivery through the local stack (issue 16): `make run` with SMTP_RELAY naming an SMTP server of the test's
own (aiosmtpd on loopback) that answers 250, 550 or 451 per recipient. One transaction per recipient, each
copy with its own pixel and its headers intact; `delivered` and `failed` events in the events API; a
temporary failure retried until the schedule is spent; o:testmode sends nothing; opening the received copy
records an open."""

from __future__ import annotations

import email
import re
import time
from urllib.parse import urlsplit

import pytest
import requests

from devstack.process import start_stack
from devstack.smtp_server import MailSink
from tests.helpers.polling import wait_for

DOMAIN = "deliver.example.com"
SENDER = "News <news@deliver.example.com>"
PIXEL = re.compile(rb'src="(http://[^"]+/o/[^"]+)"')


@pytest.fixture(scope="module")
def relay():
    sink = MailSink().start()
    sink.replies.update(
        {
            "bounce@example.net": "550 5.1.1 No such user",
            "hooked-bounce@example.net": "550 5.1.1 No such user",
            "listed@example.net": "550 5.1.1 No such user",
            "busy@example.net": "451 4.3.0 Busy",
        }
    )
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def stack(relay, hooks, tmp_path_factory):
    running = start_stack(
        tmp_path_factory.mktemp("delivery-stack"),
        extra_env={"SMTP_RELAY": relay.address, "DELIVERY_RETRY_SCHEDULE": "1,1"},
    )
    running.create_tracked_domain(DOMAIN)
    for kind in ("delivered", "permanent_fail"):
        created = running.call("POST", f"/v3/domains/{DOMAIN}/webhooks", data={"id": kind, "url": hooks.url})
        assert created.status_code == 200, created.text
    yield running
    assert running.stop() == 0, "\n".join(running.output[-40:])


def send(stack, recipients: list[str], *extra: tuple[str, str]) -> str:
    fields = [
        ("from", SENDER),
        ("to", ", ".join(recipients)),
        ("subject", "November news"),
        ("html", "<html><body><p>Hello %recipient.name%</p></body></html>"),
        ("o:tag", "november"),
        ("h:X-Campaign", "nov-26"),
        *extra,
    ]
    response = stack.call("POST", f"/v3/{DOMAIN}/messages", data=fields)
    assert response.status_code == 200, response.text
    return response.json()["id"].strip("<>")


def events(stack, message_id: str, event: str) -> list[dict]:
    response = stack.call("GET", f"/v3/{DOMAIN}/events", params={"message-id": message_id, "event": event})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_three_recipients_get_one_transaction_each_with_their_own_pixel(stack, relay):
    recipients = ["ann@example.net", "bob@example.net", "cy@example.net"]
    message_id = send(stack, recipients)
    delivered = wait_for(
        lambda: len(events(stack, message_id, "delivered")) == 3 and events(stack, message_id, "delivered")
    )
    assert sorted(e["recipient"] for e in delivered) == recipients
    pixels = set()
    for recipient in recipients:
        [received] = relay.to(recipient)
        assert received.recipients == (recipient,) and received.mail_from == "news@deliver.example.com"
        parsed = email.message_from_bytes(received.data)
        assert parsed["Subject"] == "November news" and parsed["X-Campaign"] == "nov-26"
        assert parsed["Message-ID"].strip("<>") == message_id
        [pixel] = PIXEL.findall(received.data)
        pixels.add(pixel)
    assert len(pixels) == 3  # each copy its own signed pixel
    event = delivered[0]
    assert event["delivery-status"]["code"] == 250 and event["delivery-status"]["attempt-no"] == 1
    assert event["envelope"] == {
        "transport": "smtp",
        "sender": "news@deliver.example.com",
        "targets": event["recipient"],
    }
    assert event["message"]["headers"]["message-id"] == message_id and event["tags"] == ["november"]
    assert (
        event["message"]["headers"]["from"] == SENDER
        and event["message"]["headers"]["subject"] == "November news"
    )
    # the recipient opens the copy they received: an opened event for that copy
    [received] = relay.to("bob@example.net")
    [pixel] = PIXEL.findall(received.data)
    # (the tracking host is served by the local stack: the request goes there, naming the host)
    url = urlsplit(pixel.decode())
    reader = {"Host": url.netloc, "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Thunderbird/128.0"}
    assert requests.get(f"{stack.api_url}{url.path}", headers=reader, timeout=10).status_code == 200
    opened = wait_for(lambda: events(stack, message_id, "opened"))
    assert [e["recipient"] for e in opened] == ["bob@example.net"]


def test_the_delivered_and_permanent_fail_webhooks_fire(stack, hooks):
    # (each test bounces its own address: a bounced address is suppressed from then on)
    message_id = send(stack, ["hooked@example.net", "hooked-bounce@example.net"])

    def posted() -> list[tuple[str, str]]:
        return sorted(
            (p["event-data"]["event"], p["event-data"]["recipient"])
            for p in hooks.payloads()
            if p["event-data"]["message"]["headers"]["message-id"] == message_id
        )

    assert wait_for(lambda: len(posted()) >= 2 and posted()) == [
        ("delivered", "hooked@example.net"),
        ("failed", "hooked-bounce@example.net"),
    ]


def test_a_refused_recipient_fails_permanently_and_is_not_retried(stack, relay):
    message_id = send(stack, ["bounce@example.net"])
    failed = wait_for(lambda: events(stack, message_id, "failed"))
    [event] = failed
    assert (event["severity"], event["reason"], event["delivery-status"]["code"]) == (
        "permanent",
        "bounce",
        550,
    )
    time.sleep(2.5)  # longer than the test's retry schedule: still one failure, nothing delivered
    assert len(events(stack, message_id, "failed")) == 1 and events(stack, message_id, "delivered") == []


def test_a_bounced_address_joins_bounces_and_is_not_sent_to_again(stack, relay):
    first = send(stack, ["listed@example.net"])
    wait_for(lambda: events(stack, first, "failed"))
    bounce = wait_for(
        lambda: (
            (found := stack.call("GET", f"/v3/{DOMAIN}/bounces/listed@example.net")).status_code == 200
            and found.json()
        )
    )
    assert (bounce["address"], bounce["code"], bounce["error"]) == (
        "listed@example.net",
        "550",
        "5.1.1 No such user",
    )
    assert relay.asked_for("listed@example.net") == 1

    second = send(stack, ["listed@example.net"])
    [event] = wait_for(lambda: events(stack, second, "failed"))
    assert (event["severity"], event["reason"], event["delivery-status"]["code"]) == (
        "permanent",
        "suppress-bounce",
        605,
    )
    assert relay.asked_for("listed@example.net") == 1  # the second message never reached the relay

    # removing the bounce lets mail through again (and it bounces again, so it is listed again)
    assert stack.call("DELETE", f"/v3/{DOMAIN}/bounces/listed@example.net").status_code == 200
    third = send(stack, ["listed@example.net"])
    [event] = wait_for(lambda: events(stack, third, "failed"))
    assert event["reason"] == "bounce" and relay.asked_for("listed@example.net") == 2


def test_a_temporary_failure_is_retried_until_the_schedule_is_spent(stack, relay):
    message_id = send(stack, ["busy@example.net"])
    failures = wait_for(lambda: (found := events(stack, message_id, "failed")) and len(found) == 3 and found)
    by_attempt = sorted(failures, key=lambda e: e["delivery-status"]["attempt-no"])
    assert [e["delivery-status"]["attempt-no"] for e in by_attempt] == [1, 2, 3]
    assert [e["severity"] for e in by_attempt] == ["temporary", "temporary", "permanent"]
    assert all(e["delivery-status"]["code"] == 451 for e in by_attempt)


def test_testmode_accepts_and_sends_nothing(stack, relay):
    message_id = send(stack, ["quiet@example.net"], ("o:testmode", "yes"))
    assert wait_for(lambda: events(stack, message_id, "accepted"))
    time.sleep(2.0)
    assert relay.to("quiet@example.net") == [] and events(stack, message_id, "delivered") == []
