"""Unsubscribe tracking (Mailgun's third tracking kind): the domain setting, each copy's signed links (its
placeholders, else the footers) with RFC 8058's one-click headers, the /u/{token} page that asks on GET and
records on POST, and what an unsubscribe does next: the event once, the unsubscribes list, stats, the
webhook, and the next message not sent."""

from __future__ import annotations

import json
import re

import boto3
import pytest

from devstack.events import make_http_event
from devstack.handlers import load_handler
from opentracking.delivery import sender, smtp
from opentracking.messages import copies

UNSUB = re.compile(rb"(https?)://email\.example\.com/u/([A-Za-z0-9_-]+)")
OK = smtp.Reply(smtp.Outcome.DELIVERED, 250, "2.0.0 Ok", tls=True, mx_host="mx.test", session_seconds=0.1)


@pytest.fixture
def unsubscribing(world, invoke):
    status, body = invoke(
        "api", "PUT", "/v3/domains/example.com/tracking/unsubscribe", fields=[("active", "yes")]
    )
    assert status == 200, body
    return world


def items(aws) -> list[dict]:
    return boto3.resource("dynamodb").Table(aws.ref("DataTable")).scan()["Items"]


def stored(world, recipient: str) -> bytes:
    return copies.read(world.copy(recipient))


def link(message: bytes, index: int = 0) -> str:
    return UNSUB.findall(message)[index][1].decode()


def visit(token: str, method: str = "GET", lambda_context=None, body: str | None = None) -> dict:
    event = make_http_event(
        method,
        f"/u/{token}",
        route_key=f"{method} /u/{{token}}",
        path_parameters={"token": token},
        headers={"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"},
        body=body,
        source_ip="198.51.100.7",
    )
    return load_handler("functions/unsubscribe").lambda_handler(event, lambda_context)


def unsubscribed(aws) -> list[dict]:
    return [json.loads(i["payload"]) for i in items(aws) if i.get("event") == "unsubscribed"]


def test_the_setting_in_mailguns_shape(tracked_domain, invoke):
    status, body = invoke("api", "GET", "/v3/domains/example.com/tracking")
    assert body["tracking"]["unsubscribe"] == {
        "active": False,
        "html_footer": '\n<br>\n<p><a href="%unsubscribe_url%">unsubscribe</a></p>\n',
        "text_footer": "\n\nTo unsubscribe click: <%unsubscribe_url%>\n\n",
    }
    status, body = invoke(
        "api",
        "PUT",
        "/v3/domains/example.com/tracking/unsubscribe",
        fields=[("active", "true"), ("html_footer", '<p><a href="%tag_unsubscribe_url%">Stop these</a></p>')],
    )
    assert status == 200
    assert body == {
        "message": "Domain tracking settings have been updated",
        "unsubscribe": {
            "active": True,
            "html_footer": '<p><a href="%tag_unsubscribe_url%">Stop these</a></p>',
            "text_footer": "\n\nTo unsubscribe click: <%unsubscribe_url%>\n\n",
        },
    }
    assert invoke("api", "GET", "/v3/domains/example.com/tracking")[1]["tracking"]["unsubscribe"]["active"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([], "parameter is required"),
        ([("active", "maybe")], "active"),
        ([("text_footer", "Unsubscribe here")], "%unsubscribe_url%"),
        ([("html_footer", "x" * 10_001 + "%unsubscribe_url%")], "at most"),
    ],
)
def test_bad_settings_are_a_400_and_change_nothing(tracked_domain, invoke, fields, message):
    status, body = invoke("api", "PUT", "/v3/domains/example.com/tracking/unsubscribe", fields=fields)
    assert status == 400 and message in body["message"]
    assert (
        invoke("api", "GET", "/v3/domains/example.com/tracking")[1]["tracking"]["unsubscribe"]["active"]
        is False
    )


def test_it_cannot_be_switched_on_before_the_tracking_host_serves_us(aws, invoke):
    from opentracking.domains import registry

    registry.put(registry.Domain(name="example.com", cname_target="t.example"))
    status, body = invoke(
        "api", "PUT", "/v3/domains/example.com/tracking/unsubscribe", fields=[("active", "yes")]
    )
    assert status == 400 and "Unsubscribe tracking cannot be enabled" in body["message"]


@pytest.mark.parametrize("recipients", [2, 6], ids=["copy by copy", "from the template"])
def test_each_copy_gets_its_own_link_in_a_footer_and_the_one_click_headers(unsubscribing, recipients):
    addresses = [f"r{n}@example.net" for n in range(recipients)]
    unsubscribing.send(", ".join(addresses))
    tokens = set()
    for address in addresses:
        message = stored(unsubscribing, address)
        head, _, body = message.partition(b"\r\n\r\n")
        one_click = re.search(
            rb"^List-Unsubscribe: <(https?://email\.example\.com/u/[^>]+)>\r$", head + b"\r", re.M
        )
        assert one_click, head
        assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in head + b"\r\n"
        footer_links = UNSUB.findall(body)
        assert len(footer_links) == 1  # the default HTML footer, once
        assert footer_links[0][1] == one_click.group(1).rsplit(b"/", 1)[1]
        assert b">unsubscribe</a></p>" in body and b"/o/" in body  # the footer, and the pixel still
        tokens.add(footer_links[0][1])
    assert len(tokens) == recipients  # every copy its own link
    assert unsubscribing.last_response["tracking"]["unsubscribes"] == {
        "active": True,
        "reason": None,
        "detail": None,
    }
    if recipients > 4:
        assert all(unsubscribing.copy(a).get("template") for a in addresses)


def test_placeholders_are_replaced_and_then_no_footer_is_added(unsubscribing):
    unsubscribing.send(
        "p@example.net",
        extra=[
            ("text", "Leave: %tag_unsubscribe_url%"),
            (
                "html",
                '<html><body><a href="%unsubscribe_url%">Leave all</a> or '
                '<a href="%tag_unsubscribe_url%">these</a></body></html>',
            ),
        ],
    )
    message = stored(unsubscribing, "p@example.net")
    assert b"%unsubscribe_url%" not in message and b"%tag_unsubscribe_url%" not in message
    assert b">unsubscribe</a>" not in message and b"To unsubscribe click" not in message
    found = {token for _, token in UNSUB.findall(message)}
    assert len(found) == 2  # one link for all mail (also in the header), one for the tags


def test_o_tracking_no_and_a_domain_without_it_add_nothing(unsubscribing, world, invoke):
    unsubscribing.send("off@example.net", extra=[("o:tracking", "no")])
    assert b"/u/" not in stored(unsubscribing, "off@example.net")
    assert unsubscribing.last_response["tracking"]["unsubscribes"]["active"] is False
    invoke("api", "PUT", "/v3/domains/example.com/tracking/unsubscribe", fields=[("active", "no")])
    world.send("none@example.net")
    assert b"/u/" not in stored(world, "none@example.net")


def test_a_list_unsubscribe_of_the_senders_own_is_kept(unsubscribing):
    unsubscribing.send("own@example.net", extra=[("h:List-Unsubscribe", "<mailto:leave@example.com>")])
    message = stored(unsubscribing, "own@example.net")
    assert message.lower().count(b"list-unsubscribe:") == 1
    assert b"<mailto:leave@example.com>" in message and b"List-Unsubscribe-Post" not in message


def test_a_tracking_opt_out_still_gets_its_unsubscribe_link(unsubscribing, invoke):
    invoke(
        "privacy", "POST", "/v3/example.com/tracking-suppressions", fields=[("address", "quiet@example.net")]
    )
    unsubscribing.send(", ".join(["quiet@example.net"] + [f"r{n}@example.net" for n in range(5)]))
    message = stored(unsubscribing, "quiet@example.net")
    assert b"/o/" not in message and UNSUB.search(message)


def test_get_asks_and_post_records_once(unsubscribing, aws, lambda_context, invoke):
    from opentracking.webhooks import subscriptions

    subscriptions.create("example.com", "unsubscribed", ["https://hooks.example.net/unsubscribed"])
    unsubscribing.send("leaver@example.net", tags=("Launch",))
    token = link(stored(unsubscribing, "leaver@example.net"))

    page = visit(token, "GET", lambda_context)
    assert page["statusCode"] == 200 and "<form method=post>" in page["body"]
    assert page["headers"]["Content-Security-Policy"].startswith("default-src 'none'")
    assert "leaver" not in page["body"]  # whoever holds the link does not learn the address
    assert unsubscribed(aws) == []  # a link scanner's GET unsubscribes no one

    done = visit(token, "POST", lambda_context, body="List-Unsubscribe=One-Click")  # RFC 8058
    assert done["statusCode"] == 200 and "You are unsubscribed" in done["body"]
    assert visit(token, "POST", lambda_context)["statusCode"] == 200
    (event,) = unsubscribed(aws)  # once, however often
    assert (event["recipient"], event["tags"], event["ip"]) == (
        "leaver@example.net",
        ["launch"],
        "198.51.100.7",
    )
    assert event["client-info"]["client-name"] and event["message"]["headers"]["message-id"]

    unsubscribing.consume()
    unsubscribing.consume()
    status, record = invoke("suppressions", "GET", "/v3/example.com/unsubscribes/leaver@example.net")
    assert status == 200 and record["tags"] == ["*"]
    status, stats = invoke("api", "GET", "/v3/example.com/stats/total", query="event=unsubscribed")
    assert sum(row["unsubscribed"]["total"] for row in stats["stats"]) == 1
    hooks = boto3.client("sqs").receive_message(QueueUrl=aws.ref("WebhookQueue"), MaxNumberOfMessages=10)
    posted = [json.loads(m["Body"]) for m in hooks.get("Messages", [])]
    assert {(p["url"], p["event"]["event"]) for p in posted} == {
        ("https://hooks.example.net/unsubscribed", "unsubscribed")
    }


def test_a_tag_link_unsubscribes_from_that_tag_and_later_mail_of_it_is_not_sent(
    unsubscribing, aws, lambda_context, invoke, monkeypatch
):
    unsubscribing.send(
        "t@example.net",
        tags=("Launch",),
        extra=[("html", '<html><body><a href="%tag_unsubscribe_url%">Stop launches</a></body></html>')],
    )
    body = stored(unsubscribing, "t@example.net").partition(b"\r\n\r\n")[2]  # (the header's link is for all)
    assert visit(link(body), "POST", lambda_context)["statusCode"] == 200
    unsubscribing.consume()
    assert invoke("suppressions", "GET", "/v3/example.com/unsubscribes/t@example.net")[1]["tags"] == [
        "launch"
    ]

    monkeypatch.setenv("DELIVERY_TRANSPORT", "smtp")
    monkeypatch.setenv("SMTP_RELAY", "relay.example.test:587")
    sender.reset_cache()
    sqs = boto3.client("sqs")
    while sqs.receive_message(QueueUrl=aws.ref("SendQueue"), MaxNumberOfMessages=10).get("Messages"):
        pass  # (the first message's job, sent before anything was on the list)
    unsubscribing.send("t@example.net", tags=("launch",))
    unsubscribing.send("t@example.net", tags=("receipts",))
    sent = []
    for message in sqs.receive_message(QueueUrl=aws.ref("SendQueue"), MaxNumberOfMessages=10)["Messages"]:
        sender.process(message["Body"], transport=lambda s, r, m: sent.append(m) or OK)
    assert len(sent) == 1  # the receipt; the launch was not sent
    reasons = [json.loads(i["payload"])["reason"] for i in items(aws) if i.get("event") == "failed"]
    assert reasons == ["suppress-unsubscribe"]


def test_forged_edited_and_foreign_tokens_get_the_invalid_page(unsubscribing, aws, lambda_context):
    unsubscribing.send(
        "f@example.net",
        extra=[
            ("o:tracking-clicks", "yes"),
            ("html", '<html><body><a href="https://shop.example/">Shop</a></body></html>'),
        ],
    )
    message = stored(unsubscribing, "f@example.net")
    token = link(message)
    edited = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    click_token = message.split(b"/c/", 1)[1].split(b'"', 1)[0].decode()
    for bad in (edited, "x" * 40, click_token):
        for method in ("GET", "POST"):
            assert visit(bad, method, lambda_context)["statusCode"] == 404, (bad, method)
    # and the unsubscribe token is no redirect at /c/
    click = load_handler("functions/click")
    event = make_http_event(
        "GET", f"/c/{token}", route_key="GET /c/{token}", path_parameters={"token": token}
    )
    assert click.lambda_handler(event, lambda_context)["statusCode"] == 404
    assert unsubscribed(aws) == []


def test_an_erased_recipients_link_records_nothing(unsubscribing, aws, lambda_context, invoke):
    unsubscribing.send("gone@example.net")
    token = link(stored(unsubscribing, "gone@example.net"))
    invoke("privacy", "POST", "/v3/example.com/erasures", fields=[("address", "gone@example.net")])
    assert visit(token, "POST", lambda_context)["statusCode"] == 200
    assert unsubscribed(aws) == []
