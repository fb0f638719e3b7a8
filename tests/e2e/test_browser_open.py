"""A real browser opens a stored copy, as a recipient's mail client would: Debian's headless Chromium,
with the tracking host mapped to the local stack and Apple Mail's user agent, loads the pixel; the open is
recorded, joined into Mailgun's `opened` event that the official SDK reads back, and counted in the tag's
stats."""

from __future__ import annotations

import email
import socket
import ssl
import time
from email import policy

import pytest
import requests
from mailgun.client import Client

from opentracking.tracking import bots
from tests.helpers import browser
from tests.helpers.polling import wait_for

DOMAIN = "browser.example.com"
READER = "browser-reader@example.net"
# Apple Mail on macOS renders HTML mail in WebKit and sends this user agent for images.
APPLE_MAIL = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"


@pytest.fixture(scope="module")
def tracked_copy(local_stack):
    local_stack.create_tracked_domain(DOMAIN)
    response = requests.post(
        f"{local_stack.api_url}/v3/{DOMAIN}/messages",
        auth=("api", local_stack.api_key),
        data=[
            ("from", f"news@{DOMAIN}"),
            ("to", READER),
            ("subject", "Browser test"),
            ("o:tag", "Browser"),
            ("html", "<html><body><h1>Hello</h1><p>Images on.</p></body></html>"),
            ("text", "Hello"),
        ],
        timeout=30,
    )
    assert response.status_code == 200, response.text
    ((record, data),) = local_stack.copies_of(READER)
    # A person opens mail later than a scanner does: loads within seconds of acceptance count as machines.
    time.sleep(max(0.0, float(record["created_at"]) + bots.SCANNER_WINDOW_SECONDS + 1 - time.time()))
    return record, email.message_from_bytes(data, policy=policy.default)


@pytest.mark.skipif(not browser.AVAILABLE, reason=browser.MISSING)
def test_chromium_loading_the_copy_records_the_open_for_that_recipient_and_tag(
    local_stack, tracked_copy, tmp_path
):
    record, message = tracked_copy
    assert local_stack.copy_items(record["pk"].removeprefix("COPY#"), "OPEN#") == []
    page = tmp_path / "copy.html"
    page.write_text(message.get_body(("html",)).get_content())

    # WHEN the browser renders the stored HTML copy
    result = browser.render(
        page,
        profile=tmp_path / "profile",
        host=f"email.{DOMAIN}",
        port=local_stack.port,
        user_agent=APPLE_MAIL,
    )
    assert "<h1>Hello</h1>" in result.stdout, result.stderr[-2000:]

    # THEN one open is recorded for that copy (polled briefly: the write happens as the image loads)
    copy_id = record["pk"].removeprefix("COPY#")
    deadline = time.monotonic() + 15
    opens = []
    while time.monotonic() < deadline and not opens:
        opens = local_stack.copy_items(copy_id, "OPEN#")
        time.sleep(0.2)
    assert len(opens) == 1
    raw_open = opens[0]
    assert raw_open["method"]["S"] == "GET"
    assert raw_open["ip"]["S"] == "127.0.0.1"
    assert raw_open["user_agent"]["S"] == APPLE_MAIL
    # AND the copy it names is that recipient's, with the message's tag
    assert record["recipient"] == READER
    assert record["tags"] == ["browser"]

    # AND the official SDK reads it back as Mailgun's opened event, once the stream consumer has run
    with Client(auth=("api", local_stack.api_key), api_url=local_stack.api_url) as sdk:
        deadline, items = time.monotonic() + 30, []
        while time.monotonic() < deadline and not items:
            response = sdk.events.get(domain=DOMAIN, filters={"event": "opened", "recipient": READER})
            assert response.status_code == 200, response.text
            items = response.json()["items"]
            time.sleep(0.3)
        (event,) = items
        assert (event["event"], event["recipient"], event["tags"]) == ("opened", READER, ["browser"])
        assert event["client-info"] == {
            "client-type": "email client",
            "client-os": "Mac OS X",
            "client-name": "Apple Mail",
            "device-type": "desktop",
            "user-agent": APPLE_MAIL,
            "bot": "",
        }
        assert event["message"]["headers"]["message-id"] == record["message_id"]
        # AND the tag's stats count it, total and unique
        stats = sdk.tags_stats.get(
            domain=DOMAIN, tag_name="browser", filters={"event": ["opened"], "duration": "1d"}
        )
        assert stats.status_code == 200, stats.text
        opened = [row["opened"] for row in stats.json()["stats"]]
        assert sum(o["total"] for o in opened) == 1
        assert sum(o["unique"] for o in opened) == 1


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory):
    from devstack.process import start_stack

    stack = start_stack(tmp_path_factory.mktemp("tls-browser"), tls=True)
    yield stack
    stack.stop()


@pytest.mark.skipif(not browser.AVAILABLE, reason=browser.MISSING)
def test_chromium_loads_an_https_pixel_from_the_tls_local_stack(tls_stack, tmp_path):
    # GIVEN a tracked message on the TLS local stack: its pixel link is https on the tracking host
    domain = "tls-browser.example.com"
    tls_stack.create_tracked_domain(domain)
    sent = tls_stack.call(
        "POST",
        f"/v3/{domain}/messages",
        data={
            "from": f"news@{domain}",
            "to": "tls-reader@example.net",
            "o:tag": "tls",
            "html": "<html><body><h1>Secure hello</h1></body></html>",
        },
    )
    assert sent.status_code == 200, sent.text
    ((record, data),) = tls_stack.copies_of("tls-reader@example.net")
    html = email.message_from_bytes(data, policy=policy.default).get_body(("html",)).get_content()
    assert f'src="https://email.{domain}/o/' in html
    page = tmp_path / "copy.html"
    page.write_text(html)
    # WHEN Chromium renders it, trusting only the local CA (by its key pin), with the host mapped to us
    copy_id = record["pk"].removeprefix("COPY#")
    # Under two test workers the first handshake with a host whose certificate is being made can miss
    # Chromium's budget (seen once in a CI run): a page that loaded no pixel in 15 s is loaded once more.
    for _attempt in range(2):
        result = browser.render(
            page,
            profile=tmp_path / "profile",
            host=f"email.{domain}",
            port=tls_stack.port,
            user_agent=APPLE_MAIL,
            extra=[f"--ignore-certificate-errors-spki-list={tls_stack.state['tls_ca_pin']}"],
        )
        assert "Secure hello" in result.stdout, result.stderr[-2000:]
        opens = wait_for(lambda: tls_stack.copy_items(copy_id, "OPEN#"), seconds=15)
        if opens:
            break
    # THEN the open is recorded over HTTPS, once, with a certificate made for that very host name
    assert len(opens) == 1, result.stderr[-2000:]
    served = ssl.get_server_certificate(("127.0.0.1", tls_stack.port))  # no SNI: the default certificate
    assert served.startswith("-----BEGIN CERTIFICATE-----")
    context = ssl.create_default_context(cafile=tls_stack.verify)
    with (
        socket.create_connection(("127.0.0.1", tls_stack.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=f"email.{domain}") as secure,
    ):
        names = [value for kind, value in secure.getpeercert()["subjectAltName"] if kind == "DNS"]
    assert names == [f"email.{domain}"]
