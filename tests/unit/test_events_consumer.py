"""The stream consumer: raw opens joined into Mailgun `opened` events, uniqueness, counters, bots, and
idempotency under replay. Records come from moto's own DynamoDB stream, shaped as Lambda delivers them."""

from __future__ import annotations

import json

import pytest

from devstack.handlers import load_handler
from devstack.streams import read_all
from devstack.user_agents import CASES

OUTLOOK, SAFARI_IOS, GMAIL_PROXY = CASES[0][0], CASES[2][0], CASES[4][0]


def test_an_open_becomes_a_mailgun_opened_event_and_is_counted(world):
    # GIVEN a tagged message to two recipients, accepted an hour ago, opened by one of them in Outlook
    message_id = world.send()
    world.backdate("a@example.net")
    world.open("a@example.net", ip="198.51.100.9")
    # WHEN the stream is consumed
    response = world.consume()
    # THEN no failures, and one opened event in Mailgun's shape
    assert response == {"batchItemFailures": []}
    (event,) = world.opened()
    assert event["event"] == "opened"
    assert len(event["id"]) == 22
    assert event["recipient"] == "a@example.net" and event["recipient-domain"] == "example.net"
    assert event["tags"] == ["launch"]
    assert event["user-variables"] == {"plan": "pro"}
    assert event["ip"] == "198.51.100.9"
    assert event["geolocation"] == {"country": "Unknown", "region": "Unknown", "city": "Unknown"}
    assert event["message"] == {"headers": {"message-id": message_id}}
    assert event["log-level"] == "info" and isinstance(event["timestamp"], float)
    assert event["client-info"] == {
        "client-type": "email client",
        "client-os": "Windows",
        "client-name": "Outlook",
        "device-type": "desktop",
        "user-agent": OUTLOOK,
        "bot": "",
    }
    # AND counted per domain and per tag: 2 accepted, 1 opened, 1 unique
    expected = {"accepted_total": 2, "opened_total": 1, "opened_unique": 1, "opened_machine_total": 0}
    assert world.counters() == expected
    assert world.counters("launch") == expected


def test_replaying_the_same_batch_changes_nothing(world):
    world.send()
    world.backdate("a@example.net")
    world.open("a@example.net")
    world.consume()
    before = (world.opened(), world.counters(), world.counters("launch"))
    world.consume()
    world.consume()
    assert (world.opened(), world.counters(), world.counters("launch")) == before


def test_second_open_counts_in_total_but_not_unique(world):
    world.send()
    world.backdate("a@example.net")
    world.open("a@example.net")
    world.open("a@example.net", user_agent=SAFARI_IOS)
    world.consume()
    assert world.counters()["opened_total"] == 2
    assert world.counters()["opened_unique"] == 1
    names = sorted(e["client-info"]["client-name"] for e in world.opened())
    assert names == ["Apple Mail", "Outlook"]
    mobile = next(e for e in world.opened() if e["client-info"]["client-name"] == "Apple Mail")
    assert mobile["client-info"]["device-type"] == "mobile"


@pytest.mark.parametrize(
    ("user_agent", "method", "backdate", "bot"),
    [
        ("Mozilla/5.0", "GET", True, "apple"),  # Apple Mail Privacy Protection prefetch
        (OUTLOOK, "HEAD", True, "generic"),  # scanners check with HEAD
        ("Mozilla/5.0 (compatible; Barracuda Sentinel)", "GET", True, "generic"),
        (OUTLOOK, "GET", False, "generic"),  # loaded seconds after acceptance
        (GMAIL_PROXY, "GET", True, ""),  # a person reading in Gmail, through Google's proxy
    ],
)
def test_machine_opens_are_flagged_and_counted_apart(world, user_agent, method, backdate, bot):
    world.send()
    if backdate:
        world.backdate("a@example.net")
    world.open("a@example.net", user_agent=user_agent, method=method)
    world.consume()
    (event,) = world.opened()
    assert event["client-info"]["bot"] == bot
    assert event["bot-reason"]
    counters = world.counters()
    assert counters["opened_total"] == 1
    assert counters["opened_machine_total"] == (1 if bot else 0)
    assert counters["opened_unique"] == (0 if bot else 1)


def test_a_bad_record_fails_alone(world, aws, lambda_context):
    world.send()
    world.backdate("a@example.net")
    world.open("a@example.net")
    batch = read_all(aws.get_att("DataTable", "StreamArn"))
    # a raw open whose image lost its timestamp cannot be joined
    broken = json.loads(
        json.dumps(next(r for r in batch["Records"] if r["dynamodb"]["NewImage"]["type"]["S"] == "open"))
    )
    del broken["dynamodb"]["NewImage"]["ts"]
    broken["dynamodb"]["SequenceNumber"] = "999999999999"
    batch["Records"].append(broken)
    response = load_handler("functions/events").lambda_handler(batch, lambda_context)
    assert response == {"batchItemFailures": [{"itemIdentifier": "999999999999"}]}
    assert len(world.opened()) == 1


def test_an_open_from_an_apple_egress_address_is_an_apple_machine_open(world):
    # GIVEN Apple Mail's own iOS user agent (a person, by the agent alone) loading from Apple's 17.0.0.0/8
    world.send()
    world.backdate("a@example.net")
    world.open("a@example.net", user_agent=SAFARI_IOS, ip="17.58.63.1")
    # WHEN the stream is consumed
    world.consume()
    # THEN the address decides: Mail Privacy Protection's proxy, counted as a machine open, never unique
    (event,) = world.opened()
    assert event["client-info"]["bot"] == "apple"
    assert "Apple egress address (17.0.0.0/8" in event["bot-reason"]
    counters = world.counters()
    assert (counters["opened_machine_total"], counters["opened_unique"]) == (1, 0)
