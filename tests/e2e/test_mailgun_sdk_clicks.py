"""Click tracking through the official Mailgun SDK, unchanged: the domain's click setting, `clicked`
webhooks, and the `clicked` event of a followed link read back with its URL."""

from __future__ import annotations

import re
import time

import pytest
import requests
from mailgun.client import Client

DOMAIN = "sdk-clicks.example.com"
READER = "sdk-click-reader@example.net"
TARGET = "https://docs.example.org/getting-started?ref=mail"


@pytest.fixture(scope="module")
def client(local_stack):
    local_stack.create_tracked_domain(DOMAIN)
    with Client(auth=("api", local_stack.api_key), api_url=local_stack.api_url) as sdk:
        yield sdk


def test_sdk_sets_the_domain_click_setting(client):
    # WHEN the SDK switches click tracking to HTML only
    response = client.domains_tracking_click.put(domain=DOMAIN, data={"active": "htmlonly"})
    # THEN Mailgun's answer, and the tracking settings show it
    assert response.status_code == 200, response.text
    assert response.json()["click"]["active"] == "htmlonly"
    tracking = client.domains_tracking.get(domain=DOMAIN).json()["tracking"]
    assert tracking["click"] == {"active": "htmlonly", "implies_open": True}
    assert client.domains_tracking_click.put(domain=DOMAIN, data={"active": "maybe"}).status_code == 400


def test_sdk_manages_clicked_webhooks(client):
    created = client.domains_webhooks.create(
        domain=DOMAIN, data={"id": "clicked", "url": "https://hooks.example.net/clicked"}
    )
    assert created.status_code == 200, created.text
    listed = client.domains_webhooks.get(domain=DOMAIN).json()
    assert listed == {"webhooks": {"clicked": {"urls": ["https://hooks.example.net/clicked"]}}}
    assert client.domains_webhooks.delete(domain=DOMAIN, webhook_name="clicked").status_code == 200


def test_sdk_reads_the_clicked_event_of_a_followed_link(local_stack, client):
    # GIVEN a message sent with the SDK under the domain's click setting (htmlonly, set above or now)
    client.domains_tracking_click.put(domain=DOMAIN, data={"active": "htmlonly"})
    sent = client.messages.create(
        domain=DOMAIN,
        data={
            "from": f"docs@{DOMAIN}",
            "to": READER,
            "subject": "Start here",
            "o:tag": "onboarding",
            "html": f'<html><body><a href="{TARGET}">Read the docs</a></body></html>',
            "text": f"Read the docs: {TARGET}",
        },
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["tracking"]["clicks"] == {
        "mode": "htmlonly",
        "links": 1,
        "reason": None,
        "detail": None,
    }
    ((record, data),) = local_stack.copies_of(READER)
    (link,) = re.findall(rb'href="(http://email\.' + re.escape(DOMAIN.encode()) + rb'/c/[^"]+)"', data)
    assert TARGET.encode() in data  # the text part keeps its URL under htmlonly
    # WHEN the link is followed (the tracking host named, as the recipient's DNS would route it)
    path = link.decode().split(f"email.{DOMAIN}", 1)[1]
    followed = requests.get(
        local_stack.api_url + path, headers={"Host": f"email.{DOMAIN}"}, allow_redirects=False, timeout=10
    )
    # THEN a redirect to the original URL
    assert (followed.status_code, followed.headers["Location"]) == (302, TARGET)
    # AND the SDK reads the clicked event with its URL and tag (a script's click: flagged as a machine)
    deadline, items = time.monotonic() + 30, []
    while time.monotonic() < deadline and not items:
        response = client.events.get(domain=DOMAIN, filters={"event": "clicked", "recipient": READER})
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        time.sleep(0.3)
    (event,) = items
    assert (event["event"], event["url"], event["tags"]) == ("clicked", TARGET, ["onboarding"])
    assert event["message"]["headers"]["message-id"] == record["message_id"]
    assert event["client-info"]["bot"] == "generic"
