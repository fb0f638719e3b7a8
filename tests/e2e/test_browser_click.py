"""A real browser follows a tracked link in a stored copy: Debian's headless Chromium, with the tracking host
mapped to the local stack, clicks the link; the click redirect sends it to the original URL, served on
loopback; the click is recorded and joined into Mailgun's `clicked` event (with its tag and URL), which the
official SDK reads back, and the tag's stats count it. A tampered link leads nowhere."""

from __future__ import annotations

import email
import http.server
import subprocess
import threading
import time
from email import policy
from typing import ClassVar

import pytest
import requests
from mailgun.client import Client

from opentracking.tracking import bots
from tests.helpers import browser

DOMAIN = "clicks.example.com"
READER = "click-reader@example.net"
APPLE_MAIL = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
LANDED = "You landed on the shop"


class Landing(http.server.BaseHTTPRequestHandler):
    """The sender's own site, where a followed link must land."""

    paths: ClassVar[list[str]] = []

    def do_GET(self):
        self.paths.append(self.path)
        body = f"<html><body><h1>{LANDED}</h1></body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


@pytest.fixture(scope="module")
def landing():
    # Threaded: a browser opens speculative connections that must not block the real request.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Landing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def sent(local_stack, landing):
    local_stack.create_tracked_domain(DOMAIN)
    target = f"{landing}/spring-sale?from=mail&item=42"
    with Client(auth=("api", local_stack.api_key), api_url=local_stack.api_url) as sdk:
        response = sdk.messages.create(
            domain=DOMAIN,
            data={
                "from": f"news@{DOMAIN}",
                "to": READER,
                "subject": "Spring sale",
                "o:tag": "Clicks",
                "o:tracking": "yes",  # opens and clicks, as Mailgun reads it
                "html": (
                    "<html><body><h1>Spring sale</h1>"
                    f'<p><a id="shop" href="{target.replace("&", "&amp;")}">Shop now</a></p>'
                    '<p><a href="%unsubscribe_url%">Unsubscribe</a></p></body></html>'
                ),
                "text": f"Shop now: {target}",
            },
        )
    assert response.status_code == 200, response.text
    assert response.json()["tracking"]["clicks"]["mode"] == "yes"
    ((record, data),) = local_stack.copies_of(READER)
    # A person clicks later than a link scanner does: clicks within seconds of acceptance count as machines.
    time.sleep(max(0.0, float(record["created_at"]) + bots.SCANNER_WINDOW_SECONDS + 1 - time.time()))
    html = email.message_from_bytes(data, policy=policy.default).get_body(("html",)).get_content()
    return record, html, target


def chromium(page, profile, port: int) -> subprocess.CompletedProcess:
    return browser.render(
        page,
        profile=profile,
        host=f"email.{DOMAIN}",
        port=port,
        user_agent=APPLE_MAIL,
        extra=["--disable-features=HttpsUpgrades"],  # the links are plain http on the local stack
        budget_ms=8000,
    )


@pytest.mark.skipif(not browser.AVAILABLE, reason=browser.MISSING)
def test_chromium_follows_a_tracked_link_lands_on_the_target_and_the_click_is_recorded(
    local_stack, sent, tmp_path
):
    record, html, target = sent
    # GIVEN the stored copy: its link now points at the tracking host, not at the target
    assert f'href="http://email.{DOMAIN}/c/' in html
    assert target not in html and "&amp;item=42" not in html
    assert 'href="%unsubscribe_url%"' in html  # the unsubscribe link is never rewritten
    # WHEN the browser renders the copy and its reader clicks the link (a DOM click on the real element)
    page = tmp_path / "copy.html"
    page.write_text(
        html.replace("</body>", "<script>document.getElementById('shop').click()</script></body>")
    )
    result = chromium(page, tmp_path / "profile", local_stack.port)
    # THEN the browser lands on the original URL, served on loopback
    assert LANDED in result.stdout, result.stderr[-2000:]
    assert "/spring-sale?from=mail&item=42" in Landing.paths

    # AND one click is recorded for that copy, with the URL followed
    copy_id = record["pk"].removeprefix("COPY#")
    deadline, clicks = time.monotonic() + 15, []
    while time.monotonic() < deadline and not clicks:
        clicks = local_stack.copy_items(copy_id, "CLICK#")
        time.sleep(0.2)
    assert len(clicks) == 1
    assert clicks[0]["url"]["S"] == target and clicks[0]["user_agent"]["S"] == APPLE_MAIL

    # AND the official SDK reads it back as Mailgun's clicked event, with its tag and URL
    with Client(auth=("api", local_stack.api_key), api_url=local_stack.api_url) as sdk:
        deadline, items = time.monotonic() + 30, []
        while time.monotonic() < deadline and not items:
            response = sdk.events.get(domain=DOMAIN, filters={"event": "clicked", "recipient": READER})
            assert response.status_code == 200, response.text
            items = response.json()["items"]
            time.sleep(0.3)
        (event,) = items
        assert (event["event"], event["recipient"], event["tags"], event["url"]) == (
            "clicked",
            READER,
            ["clicks"],
            target,
        )
        assert event["client-info"]["client-name"] == "Apple Mail" and event["client-info"]["bot"] == ""
        assert event["message"]["headers"]["message-id"] == record["message_id"]
        # AND the tag's stats count it, total and unique
        stats = sdk.tags_stats.get(
            domain=DOMAIN, tag_name="clicks", filters={"event": ["clicked"], "duration": "1d"}
        )
        assert stats.status_code == 200, stats.text
        clicked = [row["clicked"] for row in stats.json()["stats"]]
        assert (sum(c["total"] for c in clicked), sum(c["unique"] for c in clicked)) == (1, 1)


def test_a_tampered_link_leads_nowhere(local_stack, sent):
    _record, html, _target = sent
    link = html.split(f'href="http://email.{DOMAIN}/c/', 1)[1].split('"', 1)[0]
    tampered = link[:20] + ("A" if link[20] != "A" else "B") + link[21:]
    response = requests.get(
        f"{local_stack.api_url}/c/{tampered}",
        headers={"Host": f"email.{DOMAIN}"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 404 and "Location" not in response.headers
    assert "This link is not valid" in response.text
