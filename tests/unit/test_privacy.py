"""Per-domain IP anonymisation and retention: the settings API, the token that carries them to the
pixel, and the events consumer that applies them again."""

from __future__ import annotations

import base64
import ipaddress
import json
import time

import boto3
import pytest

from opentracking.core.config import settings
from opentracking.privacy import policy
from opentracking.tracking import anonymity, tokens
from opentracking.tracking.anonymity import anonymize_ip, is_anonymized
from tests.helpers.invoke import pixel_event
from tests.helpers.spill import spilled

ROUTE = "/v3/domains/{name}/tracking/privacy"
DAY = 86400


@pytest.fixture
def configure(invoke, tracked_domain):
    def call(method="PUT", domain="example.com", **fields):
        return invoke(
            "privacy",
            method,
            f"/v3/domains/{domain}/tracking/privacy",
            route=ROUTE,
            params={"name": domain},
            fields=fields if method == "PUT" else None,
        )

    return call


def scan(aws) -> list[dict]:
    return boto3.resource("dynamodb").Table(aws.ref("DataTable")).scan()["Items"]


@pytest.mark.parametrize(
    ("address", "anonymized"),
    [
        ("198.51.100.9", "198.51.100.0"),
        ("203.0.113.255", "203.0.113.0"),
        ("2001:db8:abcd:12:34::1", "2001:db8:abcd::"),
        ("::ffff:198.51.100.77", "198.51.100.0"),  # IPv4-mapped: anonymised as IPv4
        ("fe80::1%eth0", "fe80::"),
        ("", "unknown"),
        ("not an address", "unknown"),  # never kept whole just because it does not parse
    ],
)
def test_addresses_lose_their_host_part(address, anonymized):
    assert anonymize_ip(address) == anonymized
    assert is_anonymized(anonymized)  # truncating twice changes nothing


# ------------------------------------------------------------------------------------ tokens


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _ring() -> tokens.KeyRing:
    return tokens.KeyRing.from_secret({"active": "1", "1": "k" * 40})


def test_privacy_token_carries_its_signed_instructions():
    copy_id = tokens.new_copy_id()
    token = tokens.issue_token(_ring(), copy_id, "example.com", anonymize_ip=True, retention_days=7)
    claims = tokens.verify_token(_ring(), token)
    assert (claims.copy_id, claims.domain, claims.anonymize_ip, claims.retention_days) == (
        copy_id.hex(),
        "example.com",
        True,
        7,
    )
    assert "@" not in token and len(token) <= tokens.MAX_TOKEN_CHARS


def test_a_copy_without_instructions_keeps_the_short_version_1_token():
    plain = tokens.issue_token(_ring(), tokens.new_copy_id(), "example.com")
    with_options = tokens.issue_token(_ring(), tokens.new_copy_id(), "example.com", anonymize_ip=True)
    assert (_raw(plain)[0], _raw(with_options)[0]) == (1, 2)
    assert len(with_options) - len(plain) == 4
    claims = tokens.verify_token(_ring(), plain)
    assert (claims.anonymize_ip, claims.retention_days) == (False, None)


def test_every_edit_of_a_privacy_token_is_rejected():
    # Flipping the anonymisation flag (or any other bit) must not verify: a reader cannot opt back in.
    token = tokens.issue_token(
        _ring(), tokens.new_copy_id(), "example.com", anonymize_ip=True, retention_days=9
    )
    raw = bytearray(_raw(token))
    for index in range(len(raw)):
        for bit in range(8):
            edited = bytearray(raw)
            edited[index] ^= 1 << bit
            forged = tokens._b64encode(bytes(edited))
            with pytest.raises(tokens.InvalidToken):
                tokens.verify_token(_ring(), forged)


def test_retention_outside_the_token_range_is_refused():
    with pytest.raises(ValueError, match="retention days"):
        tokens.issue_token(_ring(), tokens.new_copy_id(), "example.com", retention_days=0)


# ------------------------------------------------------------------------------------ the API


def test_settings_default_to_the_deployment_and_can_be_changed_and_reset(configure):
    status, body = configure("GET")
    assert status == 200
    assert body["privacy"] == {
        "anonymize_ip": False,
        "event_retention_days": 30,
        "stats_retention_days": 400,
        "defaults": {"event_retention_days": 30, "stats_retention_days": 400},
    }
    status, body = configure(anonymize_ip="yes", event_retention_days="7", stats_retention_days="90")
    assert status == 200
    assert body["message"] == "Domain privacy settings have been updated"
    assert body["privacy"]["anonymize_ip"] is True
    assert (body["privacy"]["event_retention_days"], body["privacy"]["stats_retention_days"]) == (7, 90)
    # a field left out keeps its value; "default" goes back to the deployment's
    status, body = configure(event_retention_days="default")
    assert status == 200
    assert body["privacy"]["anonymize_ip"] is True
    assert (body["privacy"]["event_retention_days"], body["privacy"]["stats_retention_days"]) == (30, 90)
    assert configure("GET")[1]["privacy"] == body["privacy"]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"anonymize_ip": "maybe"},
        {"event_retention_days": "0"},
        {"event_retention_days": "-3"},
        {"stats_retention_days": "3651"},
        {"stats_retention_days": "ten"},
        {"stats_retention_days": "²"},  # a digit to str.isdigit(), not to int()
        {"anonymize_ip": "yes", "event_retention_days": "1.5"},  # one bad field: nothing changes
    ],
)
def test_bad_settings_are_a_400_and_change_nothing(configure, fields):
    before = configure("GET")[1]
    status, body = configure(**fields)
    assert status == 400
    assert set(body) == {"message"}
    assert configure("GET")[1] == before


def test_unknown_domain_is_a_404(configure):
    assert configure("GET", domain="nowhere.example")[0] == 404
    status, body = configure(domain="nowhere.example", anonymize_ip="yes")
    assert (status, set(body)) == (404, {"message"})


def test_deleting_the_domain_forgets_its_settings(configure, invoke):
    configure(anonymize_ip="yes")
    status, _ = invoke(
        "api", "DELETE", "/v3/domains/example.com", route="/v3/domains/{name}", params={"name": "example.com"}
    )
    assert status == 200
    assert policy.get("example.com") == policy.PrivacySettings()


# ------------------------------------------------------------------------------------ end to end


FULL_V4, FULL_V6 = "198.51.100.9", "2001:db8:abcd:12:34::1"


def _no_full_address(aws) -> None:
    dump = json.dumps(scan(aws), default=str)
    assert FULL_V4 not in dump and "2001:db8:abcd:12" not in dump


def test_an_anonymising_domain_never_stores_a_full_address(world, configure, aws):
    configure(anonymize_ip="yes")
    world.send(recipients="a@example.net")
    world.backdate("a@example.net")
    world.open("a@example.net", ip=FULL_V4)
    world.open("a@example.net", ip=FULL_V6)
    raw = [i for i in scan(aws) if i["sk"].startswith("OPEN#")]
    # the pixel truncated before its one write
    assert sorted(i["ip"] for i in raw) == ["198.51.100.0", "2001:db8:abcd::"]
    world.consume()
    assert sorted(e["ip"] for e in world.opened()) == ["198.51.100.0", "2001:db8:abcd::"]
    _no_full_address(aws)


def test_a_domain_that_does_not_anonymise_keeps_the_address(world, aws):
    world.send(recipients="a@example.net")
    world.open("a@example.net", ip=FULL_V4)
    world.consume()
    assert [e["ip"] for e in world.opened()] == [FULL_V4]


def test_switching_on_later_also_covers_links_already_sent(world, configure, aws):
    # GIVEN a message sent before anonymisation was on (its token carries no instruction)
    world.send(recipients="a@example.net")
    configure(anonymize_ip="yes")
    world.open("a@example.net", ip=FULL_V4)
    # WHEN the consumer sees the raw open THEN it truncates it in place and in the event
    world.consume()
    assert [e["ip"] for e in world.opened()] == ["198.51.100.0"]
    assert [i["ip"] for i in scan(aws) if i["sk"].startswith("OPEN#")] == ["198.51.100.0"]
    _no_full_address(aws)


def test_a_spilled_open_of_an_anonymising_domain_waits_without_its_full_address(
    aws, tracked_domain, lambda_context
):
    from devstack.handlers import load_handler
    from opentracking.core.aws import client

    keyring = tokens.load_keyring(settings().token_secret_name)
    token = tokens.issue_token(keyring, tokens.new_copy_id(), "example.com", anonymize_ip=True)

    def fail(**_kwargs):
        raise client("dynamodb").exceptions.ProvisionedThroughputExceededException(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}, "PutItem"
        )

    client("dynamodb", "pixel").meta.events.register("before-call.dynamodb.PutItem", fail)
    load_handler("functions/pixel").lambda_handler(pixel_event(token, source_ip=FULL_V4), lambda_context)
    (message,) = spilled(aws)
    assert json.loads(message["Body"])["source_ip"] == "198.51.100.0"


def test_retention_overrides_set_every_ttl(world, configure, aws):
    configure(event_retention_days="7", stats_retention_days="60")
    started = time.time()
    world.send(recipients="a@example.net", tags=("Launch",))
    world.backdate("a@example.net")
    world.open("a@example.net")
    world.consume()
    items = scan(aws)

    def ttl_days(item) -> float:
        return (int(item["expires_at"]) - started) / DAY

    by_kind = {
        "message": [i for i in items if i["sk"] == "MESSAGE"],
        "copy": [i for i in items if i["sk"] == "COPY"],
        "event": [i for i in items if i.get("type") == "event"],
        "raw open": [i for i in items if i["sk"].startswith("OPEN#")],
        "counter": [i for i in items if i["pk"].startswith("STATS#")],
        "tag": [i for i in items if i["pk"].startswith("TAGS#")],
    }
    assert all(by_kind.values()), {k: len(v) for k, v in by_kind.items()}
    for kind in ("message", "copy", "event", "raw open"):
        assert all(6.9 < ttl_days(i) < 7.1 for i in by_kind[kind]), kind
    for kind in ("counter", "tag"):
        assert all(59.9 < ttl_days(i) < 60.1 for i in by_kind[kind]), kind


def test_without_overrides_the_deployment_defaults_apply(world, aws):
    started = time.time()
    world.send(recipients="a@example.net")
    world.open("a@example.net")
    world.consume()
    items = scan(aws)
    events = [i for i in items if i.get("type") == "event" or i["sk"].startswith("OPEN#")]
    counters = [i for i in items if i["pk"].startswith("STATS#")]
    assert events and counters
    assert all(29.9 < (int(i["expires_at"]) - started) / DAY < 30.1 for i in events)
    assert all(399.9 < (int(i["expires_at"]) - started) / DAY < 400.1 for i in counters)


def test_every_apple_range_is_wider_than_what_anonymisation_keeps():
    # An anonymised address stays inside any range at least as wide as its kept prefix, so bot
    # classification by Apple egress address gives the same verdict with or without anonymisation. A
    # refresh of the ranges file that brings narrower ranges (Private Relay publishes /64s) must first
    # teach the classifier to match truncated networks.
    import csv
    from importlib import resources

    from opentracking.tracking import bots

    text = resources.files("opentracking").joinpath(bots.APPLE_RANGES_FILE).read_text()
    rows = list(
        csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    )
    assert rows
    kept = {4: anonymity.IPV4_PREFIX, 6: anonymity.IPV6_PREFIX}
    for row in rows:  # every network of the file, also those merged into a neighbour for lookups
        network = ipaddress.ip_network(row["network"].strip())
        assert network.prefixlen <= kept[network.version], network


def test_an_anonymised_apple_load_is_still_an_apple_load(world, configure):
    configure(anonymize_ip="yes")
    world.send(recipients="a@example.net")
    world.backdate("a@example.net")
    world.open("a@example.net", ip="17.58.101.77")  # an ordinary user agent, from Apple's 17.0.0.0/8
    world.consume()
    (event,) = world.opened()
    assert event["ip"] == "17.58.101.0"
    assert event["client-info"]["bot"] == "apple"
