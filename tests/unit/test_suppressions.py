"""The tracking suppression list: its API (Mailgun's suppression shapes, addresses in bodies only) and
what it does to a submission (no pixel for a suppressed recipient, the copy still stored)."""

from __future__ import annotations

import json

import boto3
import pytest

ROUTE = "/v3/{domain}/tracking-suppressions"


@pytest.fixture
def suppressions(invoke, tracked_domain):
    def call(method, fields=None, query="", domain="example.com"):
        return invoke(
            "privacy",
            method,
            f"/v3/{domain}/tracking-suppressions",
            route=ROUTE,
            params={"domain": domain},
            query=query,
            fields=fields,
        )

    return call


def listed(suppressions, **query) -> list[str]:
    from urllib.parse import urlencode

    status, body = suppressions("GET", query=urlencode(query))
    assert status == 200
    return [item["address"] for item in body["items"]]


def table_items(aws) -> list[dict]:
    return boto3.resource("dynamodb").Table(aws.ref("DataTable")).scan()["Items"]


def test_add_list_and_remove_an_address(suppressions):
    status, body = suppressions("POST", [("address", "Alice@Example.NET"), ("reason", "asked by phone")])
    assert status == 200
    assert body == {
        "message": "Address has been added to the tracking suppressions table",
        "address": "Alice@Example.NET",
    }
    status, body = suppressions("GET")
    assert status == 200
    (item,) = body["items"]
    assert item["address"] == "alice@example.net"  # compared case-insensitively, listed lower-cased
    assert item["reason"] == "asked by phone"
    assert item["created_at"].endswith("GMT")
    assert set(body["paging"]) == {"first", "next", "previous", "last"}

    status, body = suppressions("DELETE", [("address", "ALICE@example.net")])
    assert status == 200
    assert body == {"message": "Tracking suppression has been removed", "address": "ALICE@example.net"}
    assert listed(suppressions) == []


def test_many_addresses_at_once_and_paging_walks_them_all(suppressions):
    addresses = [f"r{i}@example.net" for i in range(7)]
    status, body = suppressions("POST", [("address", a) for a in addresses])
    assert status == 200
    assert body["message"] == "7 addresses have been added to the tracking suppressions table"
    seen, query = [], {"limit": "3"}
    for _ in range(5):  # bounded: 7 addresses in pages of 3
        status, body = suppressions("GET", query="&".join(f"{k}={v}" for k, v in query.items()))
        assert status == 200
        # the cursor is a digest, never an address
        assert "@" not in body["paging"]["next"] and "%40" not in body["paging"]["next"]
        if not body["items"]:
            break
        seen += [item["address"] for item in body["items"]]
        query = dict(pair.split("=") for pair in body["paging"]["next"].split("?", 1)[1].split("&"))
    assert sorted(seen) == sorted(addresses)


def test_adding_again_is_harmless(suppressions):
    suppressions("POST", [("address", "a@example.net")])
    suppressions("POST", [("address", "A@example.net")])
    assert listed(suppressions) == ["a@example.net"]


@pytest.mark.parametrize(
    ("method", "fields"),
    [
        ("POST", []),
        ("POST", [("address", "")]),
        ("POST", [("address", "not-an-address")]),
        ("POST", [("address", "a@example.net"), ("reason", "x" * 256)]),
        ("POST", [("address", f"r{i}@example.net") for i in range(1001)]),
        ("DELETE", []),
        ("DELETE", [("address", "nonsense")]),
    ],
)
def test_bad_input_is_a_400_and_changes_nothing(suppressions, aws, method, fields):
    suppressions("POST", [("address", "kept@example.net")])
    before = table_items(aws)
    status, body = suppressions(method, fields)
    assert (status, set(body)) == (400, {"message"})
    assert table_items(aws) == before


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "limit=%C2%B2", "page=not-a-digest"])
def test_bad_list_parameters_are_a_400(suppressions, query):
    status, body = suppressions("GET", query=query)
    assert (status, set(body)) == (400, {"message"})


def test_removing_an_address_that_is_not_listed_is_a_404(suppressions):
    status, body = suppressions("DELETE", [("address", "nobody@example.net")])
    assert (status, set(body)) == (404, {"message"})


def test_unknown_domain_is_a_404_for_every_method(suppressions):
    for method, fields in (
        ("GET", None),
        ("POST", [("address", "a@x.net")]),
        ("DELETE", [("address", "a@x.net")]),
    ):
        status, body = suppressions(method, fields, domain="nowhere.example")
        assert (status, set(body)) == (404, {"message"}), method


def test_lists_are_per_domain(suppressions, invoke):
    from opentracking.domains import registry

    registry.put(registry.Domain(name="other.example", cname_target="t.example"))
    suppressions("POST", [("address", "a@example.net")])
    assert listed(suppressions) == ["a@example.net"]
    assert suppressions("GET", domain="other.example")[1]["items"] == []


def stored_copy(aws, copy: dict) -> bytes:
    return boto3.client("s3").get_object(Bucket=aws.ref("MessageBucket"), Key=copy["s3_key"])["Body"].read()


def test_a_suppressed_recipient_gets_no_pixel_but_the_copy_is_stored(world, suppressions, aws):
    suppressions("POST", [("address", "B@example.net")])
    world.send(recipients="a@example.net, b@example.net")
    # clicks and unsubscribe links: off here
    tracking = {
        k: v for k, v in world.last_response["tracking"].items() if k not in ("clicks", "unsubscribes")
    }
    assert tracking == {"opens": True, "reason": None, "detail": None, "suppressed": 1}
    tracked, untracked = world.copy("a@example.net"), world.copy("b@example.net")
    assert b"/o/" in stored_copy(aws, tracked)
    assert tracked["tracked"] is True and "untracked_reason" not in tracked
    assert b"/o/" not in stored_copy(aws, untracked)  # stored, untracked
    assert b"<body>hi</body>" in stored_copy(aws, untracked)
    assert untracked["tracked"] is False
    assert untracked["untracked_reason"] == "recipient-suppressed"


def test_when_every_recipient_is_suppressed_the_message_says_why(world, suppressions):
    suppressions("POST", [("address", "a@example.net")])
    world.send(recipients="a@example.net")
    tracking = world.last_response["tracking"]
    assert (tracking["opens"], tracking["reason"], tracking["suppressed"]) == (
        False,
        "recipient-suppressed",
        1,
    )
    assert "suppression list" in tracking["detail"]


def test_lifting_the_suppression_brings_the_pixel_back(world, suppressions, aws):
    suppressions("POST", [("address", "a@example.net")])
    suppressions("DELETE", [("address", "a@example.net")])
    world.send(recipients="a@example.net")
    assert "suppressed" not in world.last_response["tracking"]
    assert b"/o/" in stored_copy(aws, world.copy("a@example.net"))


def test_deleting_the_domain_forgets_its_list(suppressions, invoke, aws):
    suppressions("POST", [("address", "a@example.net")])
    status, _ = invoke(
        "api", "DELETE", "/v3/domains/example.com", route="/v3/domains/{name}", params={"name": "example.com"}
    )
    assert status == 200
    assert not [i for i in table_items(aws) if i["pk"].startswith("SUPPRESS#")]


def test_addresses_are_kept_out_of_keys(suppressions, aws):
    suppressions("POST", [("address", "a@example.net")])
    (item,) = [i for i in table_items(aws) if i["pk"] == "SUPPRESS#example.com"]
    assert "@" not in json.dumps({"pk": item["pk"], "sk": item["sk"]})


def test_diagnose_names_the_opt_out(world, suppressions, aws):
    from opentracking.domains import diagnose, registry

    suppressions("POST", [("address", "b@example.net")])
    world.send(recipients="a@example.net, b@example.net")
    copies = [world.copy("a@example.net"), world.copy("b@example.net")]
    check = diagnose._opted_out(registry.get("example.com"), copies)
    assert (check.check, check.status) == ("recipient_opted_out", diagnose.FAIL)
    assert check.detail.startswith("1 of 2 copies got no pixel")
    assert diagnose._opted_out(registry.get("example.com"), copies[:1]) is None
