"""A real browser unsubscribes from a received copy: Debian's headless Chromium, with the tracking host mapped
to the local stack, follows the copy's unsubscribe link (the default footer, added because unsubscribe
tracking is on) and sees the confirmation page (which records nothing: link scanners GET too); the one-click
POST (RFC 8058) unsubscribes; the official SDK then reads the `unsubscribed` event, the address is on the
unsubscribes list, and the next message to it is not sent (`failed`, `suppress-unsubscribe`)."""

from __future__ import annotations

import email
import re
import time
from email import policy

import pytest
import requests
from mailgun.client import Client

from devstack.process import start_stack
from devstack.smtp_server import MailSink
from tests.helpers import browser
from tests.helpers.polling import wait_for

DOMAIN = "unsub.example.com"
READER = "unsub-reader@example.net"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    """The local stack delivering to an SMTP server of the test's own: a suppressed send shows."""
    sink = MailSink().start()
    stack = start_stack(tmp_path_factory.mktemp("unsubscribe-stack"), extra_env={"SMTP_RELAY": sink.address})
    yield stack
    assert stack.stop() == 0, "\n".join(stack.output[-40:])
    sink.stop()


def send(sdk: Client, subject: str):
    response = sdk.messages.create(
        domain=DOMAIN,
        data={
            "from": f"news@{DOMAIN}",
            "to": READER,
            "subject": subject,
            "o:tag": "weekly",
            "html": "<html><body><h1>This week</h1><p>News.</p></body></html>",
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["id"].strip("<>")


def chromium(page, tmp_path, port: int):
    return browser.render(
        page,
        profile=tmp_path / "profile",
        host=f"email.{DOMAIN}",
        port=port,
        user_agent=FIREFOX,
        extra=["--disable-features=HttpsUpgrades"],  # plain http on the local stack
        budget_ms=8000,
    )


def events(sdk: Client, **filters) -> list[dict]:
    response = sdk.events.get(domain=DOMAIN, filters=filters)
    assert response.status_code == 200, response.text
    return response.json()["items"]


@pytest.mark.skipif(not browser.AVAILABLE, reason=browser.MISSING)
def test_chromium_unsubscribes_from_a_copy_and_the_next_message_is_not_sent(local_stack, tmp_path):
    local_stack.create_tracked_domain(DOMAIN)
    switched = local_stack.call("PUT", f"/v3/domains/{DOMAIN}/tracking/unsubscribe", data={"active": "yes"})
    assert switched.status_code == 200, switched.text
    with Client(auth=("api", local_stack.api_key), api_url=local_stack.api_url) as sdk:
        send(sdk, "This week")
        ((_record, data),) = wait_for(lambda: local_stack.copies_of(READER))
        parsed = email.message_from_bytes(data, policy=policy.default)
        # GIVEN the copy: the one-click headers, and the footer's link on the tracking host
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        html = parsed.get_body(("html",)).get_content()
        (url,) = re.findall(rf'href="(http://email\.{re.escape(DOMAIN)}/u/[^"]+)"', html)
        assert parsed["List-Unsubscribe"] == f"<{url}>"

        # WHEN the reader clicks it: the confirmation page, and nothing recorded yet
        copy_page = tmp_path / "copy.html"
        copy_page.write_text(
            html.replace('">unsubscribe</a>', '" id="leave">unsubscribe</a>').replace(
                "</body>", "<script>document.getElementById('leave').click()</script></body>"
            )
        )
        asked = chromium(copy_page, tmp_path, local_stack.port)
        assert "Stop all emails from this sender?" in asked.stdout, asked.stderr[-2000:]
        assert '<form method="post">' in asked.stdout or "<form method=post>" in asked.stdout
        time.sleep(1.0)
        assert events(sdk, event="unsubscribed") == []

        # AND the reader's mailbox provider sends RFC 8058's one-click POST to the List-Unsubscribe URL (the
        # page's button posts the same; headless Chromium's --dump-dom cannot follow a form's navigation)
        one_click = requests.post(
            url.replace(f"http://email.{DOMAIN}", local_stack.api_url),
            headers={"Host": f"email.{DOMAIN}", "User-Agent": FIREFOX},
            data={"List-Unsubscribe": "One-Click"},
            timeout=10,
        )
        assert one_click.status_code == 200 and "You are unsubscribed" in one_click.text

        # THEN the SDK reads the unsubscribed event, with the reader's browser
        (event,) = wait_for(lambda: events(sdk, event="unsubscribed"))
        assert (event["recipient"], event["tags"]) == (READER, ["weekly"])
        assert event["client-info"]["client-name"] == "Firefox"
        # AND the address is on the unsubscribes list, for all mail
        record = wait_for(
            lambda: (r := sdk.unsubscribes.get(domain=DOMAIN, unsubscribe_address=READER)).ok and r.json()
        )
        assert (record["address"], record["tags"]) == (READER, ["*"])
        # AND the next message to it is not sent
        later = send(sdk, "Next week")
        (failed,) = wait_for(lambda: events(sdk, event="failed", **{"message-id": later}))
        assert (failed["severity"], failed["reason"]) == ("permanent", "suppress-unsubscribe")
