"""Clicks end to end in-process: a submission with `o:tracking=yes` gets its links rewritten, a followed
link becomes Mailgun's `clicked` event (with its `url`), counted total, unique and per URL, read through the
events, stats and aggregates APIs; a click with no open recorded implies one (derived); webhooks fire."""

from __future__ import annotations

import email
import json
import re
from email import policy

import boto3
import pytest

from devstack.events import make_http_event
from devstack.handlers import load_handler
from devstack.user_agents import CASES
from opentracking.domains import registry
from opentracking.reporting import consumer
from tests.helpers.invoke import send_message

OUTLOOK = CASES[0][0]
SHOP = "https://shop.example.org/spring?utm=mail"
DOCS = "https://docs.example.org/start"
HTML = (
    "<html><body><p>Hello</p>"
    f'<a href="{SHOP}">Shop</a> <a href="{DOCS}">Docs</a> '
    '<a href="mailto:help@example.com">Help</a> <a href="%unsubscribe_url%">Unsubscribe</a>'
    "</body></html>"
)
TEXT = f"Shop: {SHOP}\nDocs: {DOCS}\n"


@pytest.fixture
def clicks_world(world, aws, basic_auth, lambda_context, invoke):
    submit, click = load_handler("functions/submit"), load_handler("functions/click")
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))

    class ClicksWorld:
        def send(self, *options: tuple[str, str], recipients: str = "a@example.net, b@example.net") -> dict:
            fields = [
                ("from", "s@example.com"),
                ("to", recipients),
                ("subject", "Spring"),
                ("text", TEXT),
                ("html", HTML),
                ("o:tag", "Spring"),
                *options,
            ]
            return send_message(submit, lambda_context, fields, auth=basic_auth)

        def stored(self, recipient: str) -> email.message.EmailMessage:
            copy = world.copy(recipient)
            data = (
                boto3.client("s3")
                .get_object(Bucket=aws.ref("MessageBucket"), Key=copy["s3_key"])["Body"]
                .read()
            )
            return email.message_from_bytes(data, policy=policy.default)

        def links(self, recipient: str, part: str = "html") -> list[str]:
            body = self.stored(recipient).get_body((part,)).get_content()
            return re.findall(r"https://email\.example\.com/c/[A-Za-z0-9_-]+", body)

        def click(self, link: str, *, user_agent: str = OUTLOOK, method: str = "GET") -> dict:
            token = link.rsplit("/", 1)[1]
            event = make_http_event(
                method,
                f"/c/{token}",
                route_key=f"{method} /c/{{token}}",
                path_parameters={"token": token},
                headers={"user-agent": user_agent},
                source_ip="198.51.100.20",
            )
            return click.lambda_handler(event, lambda_context)

        def events_named(self, name: str) -> list[dict]:
            items = [i for i in table.scan()["Items"] if i.get("event") == name]
            return sorted((json.loads(i["payload"]) for i in items), key=lambda e: e["timestamp"])

        def counters(self, tag: str = consumer.ALL_TAGS) -> dict[str, int]:
            totals: dict[str, int] = {}
            for item in table.scan()["Items"]:
                if item["pk"].startswith(f"STATS#example.com#{tag}#"):
                    for field, value in item.items():
                        if field.startswith(("opened_", "clicked_")):
                            totals[field] = totals.get(field, 0) + int(value)
            return totals

        def api(self, path: str, route: str, params: dict, query: str = "") -> dict:
            status, body = invoke("api", "GET", path, route=route, params=params, query=query)
            assert status == 200, body
            return body

    return ClicksWorld()


def test_o_tracking_yes_rewrites_html_and_text_links_per_copy(clicks_world):
    # WHEN a message is sent with o:tracking=yes (opens and clicks, as Mailgun reads it)
    response = clicks_world.send(("o:tracking", "yes"))
    # THEN the response says both are tracked, and each copy has its own tracking links
    assert response["tracking"]["opens"] is True
    assert response["tracking"]["clicks"] == {"mode": "yes", "links": 4, "reason": None, "detail": None}
    a_links, b_links = clicks_world.links("a@example.net"), clicks_world.links("b@example.net")
    assert len(a_links) == 2 and len(b_links) == 2 and not set(a_links) & set(b_links)
    html = clicks_world.stored("a@example.net").get_body(("html",)).get_content()
    assert SHOP not in html and DOCS not in html
    assert 'href="mailto:help@example.com"' in html and 'href="%unsubscribe_url%"' in html
    # AND the text part too (clicks "yes"); the same link in both parts is the same token
    assert clicks_world.links("a@example.net", "plain") == a_links


def test_htmlonly_leaves_the_text_part_alone(clicks_world):
    response = clicks_world.send(("o:tracking-clicks", "htmlonly"))
    assert response["tracking"]["clicks"]["mode"] == "htmlonly"
    assert response["tracking"]["opens"] is True  # the domain's open setting still applies
    assert len(clicks_world.links("a@example.net")) == 2
    assert SHOP in clicks_world.stored("a@example.net").get_body(("plain",)).get_content()


def test_no_click_tracking_unless_asked_or_set_on_the_domain(clicks_world):
    response = clicks_world.send()
    assert response["tracking"]["clicks"]["mode"] == "no"
    assert response["tracking"]["clicks"]["reason"] == "click-tracking-disabled"
    assert clicks_world.links("a@example.net") == []


def test_domain_click_setting_applies_and_the_message_can_turn_it_off(clicks_world, invoke):
    status, body = invoke(
        "api",
        "PUT",
        "/v3/domains/example.com/tracking/click",
        route="/v3/domains/{name}/tracking/click",
        params={"name": "example.com"},
        fields={"active": "htmlonly"},
    )
    assert status == 200, body
    assert body == {
        "message": "Domain tracking settings have been updated",
        "click": {"active": "htmlonly", "implies_open": True},
    }
    status, tracking = invoke(
        "api",
        "GET",
        "/v3/domains/example.com/tracking",
        route="/v3/domains/{name}/tracking",
        params={"name": "example.com"},
    )
    assert tracking["tracking"]["click"] == {"active": "htmlonly", "implies_open": True}
    assert clicks_world.send(recipients="a@example.net")["tracking"]["clicks"]["mode"] == "htmlonly"
    off = clicks_world.send(("o:tracking-clicks", "no"), recipients="b@example.net")
    assert off["tracking"]["clicks"]["reason"] == "clicks-disabled-by-message"


def test_click_tracking_cannot_be_switched_on_without_a_valid_cname(aws, invoke):
    registry.put(registry.Domain(name="new.example", cname_target="t.example"))
    status, body = invoke(
        "api",
        "PUT",
        "/v3/domains/new.example/tracking/click",
        route="/v3/domains/{name}/tracking/click",
        params={"name": "new.example"},
        fields={"active": "yes"},
    )
    assert status == 400 and "CNAME" in body["message"]
    status, body = invoke(
        "api",
        "PUT",
        "/v3/domains/new.example/tracking/click",
        route="/v3/domains/{name}/tracking/click",
        params={"name": "new.example"},
        fields={"active": "sometimes"},
    )
    assert status == 400 and "htmlonly" in body["message"]


def test_a_click_becomes_a_mailgun_clicked_event_counted_per_tag_and_url(clicks_world, world):
    # GIVEN a tracked message accepted an hour ago, whose first link a@ follows twice and b@ once
    message_id = clicks_world.send(("o:tracking", "yes"))["id"].strip("<>")
    world.backdate("a@example.net")
    world.backdate("b@example.net")
    shop_a, docs_a = clicks_world.links("a@example.net")
    shop_b, _docs_b = clicks_world.links("b@example.net")
    for link, target in ((shop_a, SHOP), (shop_a, SHOP), (docs_a, DOCS), (shop_b, SHOP)):
        response = clicks_world.click(link)
        assert (response["statusCode"], response["headers"]["Location"]) == (302, target)
    # WHEN the stream is consumed
    assert world.consume() == {"batchItemFailures": []}
    # THEN four clicked events in Mailgun's shape, with the URL followed
    clicked = clicks_world.events_named("clicked")
    assert len(clicked) == 4
    event = clicked[0]
    assert (event["event"], event["recipient"], event["url"], event["tags"]) == (
        "clicked",
        "a@example.net",
        SHOP,
        ["spring"],
    )
    assert event["ip"] == "198.51.100.20" and event["client-info"]["client-name"] == "Outlook"
    assert event["message"] == {"headers": {"message-id": message_id}}
    assert event["client-info"]["bot"] == "" and len(event["id"]) == 22
    # AND counted: 4 clicks, 2 unique (one per recipient who clicked); each click implied an open once
    counters = clicks_world.counters()
    assert counters["clicked_total"] == 4 and counters["clicked_unique"] == 2
    assert counters["opened_total"] == 2 and counters["opened_unique"] == 2
    assert clicks_world.counters("spring")["clicked_total"] == 4
    # AND per URL: the shop 3 times by 2 people, the docs once
    aggregates = clicks_world.api(
        "/v3/example.com/tags/spring/stats/aggregates/urls",
        "/v3/{domain}/tags/{tag}/stats/aggregates/urls",
        {"domain": "example.com", "tag": "spring"},
    )
    assert aggregates == {
        "tag": "spring",
        "urls": {SHOP: {"clicked": 3, "unique_clicked": 2}, DOCS: {"clicked": 1, "unique_clicked": 1}},
    }
    domain_wide = clicks_world.api(
        "/v3/example.com/stats/aggregates/urls",
        "/v3/{domain}/stats/aggregates/urls",
        {"domain": "example.com"},
    )
    assert domain_wide["urls"] == aggregates["urls"]
    # AND the events API filters clicked events, and the tag's stats show clicked totals
    listed = clicks_world.api(
        "/v3/example.com/events",
        "/v3/{domain}/events",
        {"domain": "example.com"},
        "event=clicked&recipient=b@example.net",
    )
    assert [(e["event"], e["url"]) for e in listed["items"]] == [("clicked", SHOP)]
    stats = clicks_world.api(
        "/v3/example.com/tags/spring/stats",
        "/v3/{domain}/tags/{tag}/stats",
        {"domain": "example.com", "tag": "spring"},
        "event=clicked&event=opened&duration=1d",
    )
    assert sum(row["clicked"]["total"] for row in stats["stats"]) == 4
    assert sum(row["clicked"]["unique"] for row in stats["stats"]) == 2
    assert sum(row["opened"]["unique"] for row in stats["stats"]) == 2


def test_a_click_with_no_open_implies_a_derived_open_once(clicks_world, world):
    clicks_world.send(("o:tracking", "yes"), recipients="a@example.net")
    world.backdate("a@example.net")
    shop, docs = clicks_world.links("a@example.net")
    clicks_world.click(shop)
    clicks_world.click(docs)
    world.consume()
    world.consume()  # a replayed batch derives nothing again
    (opened,) = clicks_world.events_named("opened")
    first_click = clicks_world.events_named("clicked")[0]
    assert opened["derived"] is True and opened["derived-from"] == first_click["id"]
    assert (opened["recipient"], opened["tags"], opened["timestamp"]) == (
        "a@example.net",
        ["spring"],
        first_click["timestamp"],
    )
    assert (
        clicks_world.counters()["opened_total"] == 1 and clicks_world.counters()["opened_derived_total"] == 1
    )


def test_a_real_open_before_the_click_means_no_derived_open(clicks_world, world):
    clicks_world.send(("o:tracking", "yes"), recipients="a@example.net")
    world.backdate("a@example.net")
    world.open("a@example.net")
    world.consume()
    clicks_world.click(clicks_world.links("a@example.net")[0])
    world.consume()
    (opened,) = clicks_world.events_named("opened")
    assert "derived" not in opened
    assert clicks_world.counters()["opened_unique"] == 1


def test_the_domain_can_switch_derived_opens_off(clicks_world, world, invoke):
    status, body = invoke(
        "api",
        "PUT",
        "/v3/domains/example.com/tracking/click",
        route="/v3/domains/{name}/tracking/click",
        params={"name": "example.com"},
        fields={"implies_open": "no"},
    )
    assert status == 200 and body["click"] == {"active": False, "implies_open": False}
    clicks_world.send(("o:tracking", "yes"), recipients="a@example.net")
    world.backdate("a@example.net")
    clicks_world.click(clicks_world.links("a@example.net")[0])
    world.consume()
    assert clicks_world.events_named("opened") == [] and len(clicks_world.events_named("clicked")) == 1


@pytest.mark.parametrize(
    ("user_agent", "method", "backdate"),
    [
        ("Mozilla/5.0", "GET", True),  # bare agent: on a link, a scanner
        ("Mozilla/5.0 (compatible; Barracuda Sentinel)", "GET", True),
        (OUTLOOK, "HEAD", True),
        (OUTLOOK, "GET", False),  # within seconds of acceptance: a link checker
    ],
)
def test_machine_clicks_are_flagged_not_unique_and_imply_no_open(
    clicks_world, world, user_agent, method, backdate
):
    clicks_world.send(("o:tracking", "yes"), recipients="a@example.net")
    if backdate:
        world.backdate("a@example.net")
    clicks_world.click(clicks_world.links("a@example.net")[0], user_agent=user_agent, method=method)
    world.consume()
    (event,) = clicks_world.events_named("clicked")
    assert event["client-info"]["bot"] == "generic"
    counters = clicks_world.counters()
    assert counters["clicked_total"] == 1 and counters["clicked_machine_total"] == 1
    assert counters.get("clicked_unique", 0) == 0 and clicks_world.events_named("opened") == []


def test_clicked_webhooks_are_accepted_and_fed(clicks_world, world, aws, invoke):
    status, body = invoke(
        "webhooks",
        "POST",
        "/v3/domains/example.com/webhooks",
        route="/v3/domains/{name}/webhooks",
        params={"name": "example.com"},
        fields={"id": "clicked", "url": "https://hooks.example.net/clicks"},
    )
    assert status == 200, body
    clicks_world.send(("o:tracking", "yes"), recipients="a@example.net")
    world.backdate("a@example.net")
    clicks_world.click(clicks_world.links("a@example.net")[0])
    world.consume()
    queued = boto3.client("sqs").receive_message(QueueUrl=aws.ref("WebhookQueue"), MaxNumberOfMessages=10)
    bodies = [json.loads(m["Body"]) for m in queued.get("Messages", [])]
    assert [(b["url"], b["event"]["event"], b["event"]["url"]) for b in bodies] == [
        ("https://hooks.example.net/clicks", "clicked", SHOP)
    ]


# --- privacy: anonymisation, retention, the suppression list and erasure apply to clicks too ---------


def _privacy(invoke, **fields) -> None:
    status, body = invoke(
        "privacy",
        "PUT",
        "/v3/domains/example.com/tracking/privacy",
        route="/v3/domains/{name}/tracking/privacy",
        params={"name": "example.com"},
        fields=fields,
    )
    assert status == 200, body


def test_an_anonymising_domain_never_stores_a_clicker_full_address(clicks_world, world, invoke, aws):
    # GIVEN a domain that anonymises addresses and keeps events 7 days
    _privacy(invoke, anonymize_ip="yes", event_retention_days="7")
    clicks_world.send(("o:tracking", "yes"), recipients="a@example.net")
    world.backdate("a@example.net")
    # WHEN a link is followed from a full address
    response = clicks_world.click(clicks_world.links("a@example.net")[0])
    assert (response["statusCode"], response["headers"]["Location"]) == (302, SHOP)
    # THEN the redirect truncated it before its one write, and keeps the raw click 7 days
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))
    (raw,) = [i for i in table.scan()["Items"] if i["sk"].startswith("CLICK#")]
    assert raw["ip"] == "198.51.100.0"
    assert int(raw["expires_at"]) - float(raw["ts"]) == pytest.approx(7 * 86400, abs=2)
    # AND the clicked event (and the open it implies) carry only the truncated address
    world.consume()
    (clicked,) = clicks_world.events_named("clicked")
    (opened,) = clicks_world.events_named("opened")
    assert clicked["ip"] == opened["ip"] == "198.51.100.0"


def test_a_suppressed_recipient_gets_the_original_links(clicks_world, invoke):
    status, _body = invoke(
        "privacy",
        "POST",
        "/v3/example.com/tracking-suppressions",
        route="/v3/{domain}/tracking-suppressions",
        params={"domain": "example.com"},
        fields={"address": "b@example.net"},
    )
    assert status == 200
    clicks_world.send(("o:tracking", "yes"))
    # the opted-out recipient's copy keeps every link as written; the other copy is tracked
    assert clicks_world.links("b@example.net") == []
    assert SHOP in clicks_world.stored("b@example.net").get_body(("html",)).get_content()
    assert len(clicks_world.links("a@example.net")) == 2


def test_erasure_removes_the_recipient_clicks(clicks_world, world, invoke, aws):
    clicks_world.send(("o:tracking", "yes"), recipients="a@example.net")
    world.backdate("a@example.net")
    clicks_world.click(clicks_world.links("a@example.net")[0])
    world.consume()
    assert clicks_world.events_named("clicked")
    status, body = invoke(
        "privacy",
        "POST",
        "/v3/example.com/erasures",
        route="/v3/{domain}/erasures",
        params={"domain": "example.com"},
        fields={"address": "a@example.net"},
    )
    assert status == 200, body
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))
    left = [i for i in table.scan()["Items"] if i["pk"].startswith("COPY#")]
    assert left == [] and clicks_world.events_named("clicked") == []
