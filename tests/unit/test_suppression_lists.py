"""Mailgun's suppression lists (bounces, complaints, unsubscribes, whitelists): their API in Mailgun's shapes
and paths (as mailgun.js, mailgun-go and the Python SDK call them), and what they do to delivery: a listed
recipient is not sent to and gets Mailgun's `suppress-*` failure; hard bounces, complaints and unsubscribes
fill the lists by themselves; erasure and domain deletion empty them."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import pytest

from opentracking.delivery import sender, smtp, suppression_lists
from opentracking.delivery.jobs import SendJob

RFC2822_UTC = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} UTC$")
OK = smtp.Reply(smtp.Outcome.DELIVERED, 250, "2.0.0 Ok", tls=True, mx_host="mx.test", session_seconds=0.1)
BOUNCE = smtp.Reply(
    smtp.Outcome.PERMANENT, 550, "5.1.1 No such user", tls=True, mx_host="mx.test", session_seconds=0.1
)


@pytest.fixture
def lists(invoke, tracked_domain):
    """lists("POST", "bounces", fields=[...]) -> (status, body), through the template's routes."""

    def call(method, kind, value=None, *, fields=None, json_body=None, query="", domain="example.com", **kw):
        path = f"/v3/{domain}/{kind}" + (f"/{quote(value, safe='')}" if value is not None else "")
        return invoke("suppressions", method, path, fields=fields, json_body=json_body, query=query, **kw)

    return call


def table_items(aws) -> list[dict]:
    return boto3.resource("dynamodb").Table(aws.ref("DataTable")).scan()["Items"]


def walk(lists, kind: str, limit: int) -> list[str]:
    """Every address, following `paging.next` until a page comes back empty."""
    seen: list[str] = []
    query = f"limit={limit}"
    for _ in range(100):
        status, body = lists("GET", kind, query=query)
        assert status == 200, body
        if not body["items"]:
            return seen
        seen += [item.get("address") or item.get("value") for item in body["items"]]
        query = urlsplit(body["paging"]["next"]).query
    raise AssertionError("paging did not end")


def test_a_bounce_added_read_listed_and_removed_in_mailguns_shapes(lists):
    status, body = lists(
        "POST",
        "bounces",
        fields=[("address", "Alice@Example.NET"), ("code", "550"), ("error", "No such mailbox")],
    )
    assert (status, body) == (
        200,
        {"message": "Address has been added to the bounces table", "address": "alice@example.net"},
    )

    status, record = lists("GET", "bounces", "alice@example.net")
    assert status == 200
    assert set(record) == {"address", "code", "error", "created_at"}
    assert (record["address"], record["code"], record["error"]) == (
        "alice@example.net",
        "550",
        "No such mailbox",
    )
    assert RFC2822_UTC.match(record["created_at"])
    status, listed = lists("GET", "bounces")
    assert listed["items"] == [record]
    assert set(listed["paging"]) == {"first", "next", "previous", "last"}
    assert "alice" not in json.dumps(listed["paging"])  # no address in a paging URL: a digest

    status, body = lists("DELETE", "bounces", "ALICE@example.net")
    assert (status, body) == (
        200,
        {"message": "Bounced address has been removed", "address": "alice@example.net"},
    )
    status, body = lists("GET", "bounces", "alice@example.net")
    assert (status, body) == (404, {"message": "Address not found in bounces table"})
    assert lists("DELETE", "bounces", "alice@example.net")[0] == 404


def test_defaults_and_a_given_date(lists):
    lists(
        "POST",
        "bounces",
        fields=[("address", "b@example.net"), ("created_at", "Fri, 21 Oct 2011 11:02:55 GMT")],
    )
    record = lists("GET", "bounces", "b@example.net")[1]
    assert (record["code"], record["error"], record["created_at"]) == (
        "550",
        "",
        "Fri, 21 Oct 2011 11:02:55 UTC",
    )


def test_a_thousand_records_at_once_as_json_and_paging_walks_every_one(lists):
    records = [{"address": f"user{n:04d}@example.net", "code": 550, "error": "gone"} for n in range(1000)]
    status, body = lists("POST", "bounces", json_body=records)
    assert (status, body) == (200, {"message": "1000 addresses have been added to the bounces table"})
    addresses = walk(lists, "bounces", 300)
    assert sorted(addresses) == sorted(r["address"] for r in records)

    first = lists("GET", "bounces", query="limit=10")[1]
    second = lists("GET", "bounces", query=urlsplit(first["paging"]["next"]).query)[1]
    back = lists("GET", "bounces", query=urlsplit(second["paging"]["previous"]).query)[1]
    assert back["items"] == first["items"] and second["items"] != first["items"]
    last = lists("GET", "bounces", query=urlsplit(first["paging"]["last"]).query)[1]
    assert len(last["items"]) == 10 and last["items"][-1]["address"] == addresses[-1]
    # Mailgun's own pivot, an address, works too (clients build it themselves)
    pivot = first["items"][-1]["address"]
    by_address = lists("GET", "bounces", query=f"page=next&address={quote(pivot)}&limit=10")[1]
    assert by_address["items"] == second["items"]


def test_term_keeps_addresses_that_start_with_it(lists):
    lists("POST", "bounces", json_body=[{"address": a} for a in ("ann@x.net", "anna@x.net", "bob@x.net")])
    status, body = lists("GET", "bounces", query="term=ann&limit=1")
    assert status == 200 and len(body["items"]) == 1
    assert dict(parse_qsl(urlsplit(body["paging"]["next"]).query))["term"] == "ann"
    assert sorted(i["address"] for i in lists("GET", "bounces", query="term=ANN")[1]["items"]) == [
        "ann@x.net",
        "anna@x.net",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fields": [("code", "550")]}, "'address' parameter is missing"),
        ({"fields": [("address", "not an address")]}, "not a valid address"),
        ({"fields": [("address", "a@x.net"), ("created_at", "yesterday")]}, "RFC 2822"),
        ({"json_body": [{"address": "a@x.net"}, {"address": "broken"}]}, "not a valid address"),
        ({"json_body": [{"address": f"u{n}@x.net"} for n in range(1001)]}, "At most 1000"),
        ({"json_body": "a@x.net"}, "array of records"),
        ({"json_body": [["a@x.net"]]}, "array of records"),
        ({"json_body": []}, "'address' parameter is missing"),
        ({"json_body": [{"address": "a@x.net", "error": "x" * 2000}]}, "at most"),
    ],
)
def test_bad_input_is_a_400_and_writes_nothing(lists, aws, kwargs, message):
    before = table_items(aws)
    status, body = lists("POST", "bounces", **kwargs)
    assert status == 400 and message in body["message"]
    assert table_items(aws) == before


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "page=sideways"])
def test_bad_list_parameters_are_a_400(lists, query):
    status, body = lists("GET", "bounces", query=query)
    assert status == 400 and body["message"]


def test_unknown_domain_or_list_is_a_404(lists):
    for method, kind, value in [
        ("GET", "bounces", None),
        ("POST", "complaints", None),
        ("DELETE", "whitelists", "a@x.net"),
    ]:
        status, body = lists(method, kind, value, domain="unknown.example", fields=[("address", "a@x.net")])
        assert status == 404 and body["message"]


def test_a_list_mailgun_does_not_have_is_a_404(lists):
    for method, value in (("GET", None), ("POST", None), ("DELETE", None), ("GET", "a@x.net")):
        status, body = lists(method, "bouncez", value, fields=[("address", "a@x.net")])
        assert (status, body) == (404, {"message": "Not found"})


def test_unsubscribes_by_tag_merge_and_are_removed_one_tag_at_a_time(lists):
    assert lists("POST", "unsubscribes", fields=[("address", "u@x.net"), ("tag", "Newsletter")])[0] == 200
    assert lists("POST", "unsubscribes", fields=[("address", "u@x.net"), ("tag", "offers")])[0] == 200
    record = lists("GET", "unsubscribes", "u@x.net")[1]
    assert set(record) == {"address", "tags", "created_at"}
    assert record["tags"] == ["newsletter", "offers"]
    status, body = lists("DELETE", "unsubscribes", "u@x.net", query="tag=newsletter")
    assert (status, body["message"]) == (200, "Unsubscribe event has been removed")
    assert lists("GET", "unsubscribes", "u@x.net")[1]["tags"] == ["offers"]
    lists("DELETE", "unsubscribes", "u@x.net", query="tag=offers")
    assert lists("GET", "unsubscribes", "u@x.net")[0] == 404

    lists("POST", "unsubscribes", fields=[("address", "all@x.net")])  # no tag: all mail
    assert lists("GET", "unsubscribes", "all@x.net")[1]["tags"] == ["*"]
    status, body = lists("POST", "unsubscribes", json_body=[{"address": "j@x.net", "tags": ["a", "b"]}])
    assert status == 200 and lists("GET", "unsubscribes", "j@x.net")[1]["tags"] == ["a", "b"]


def test_complaints_and_the_whitelist(lists):
    assert lists("POST", "complaints", fields=[("address", "c@x.net")])[1] == {
        "message": "Address has been added to the complaints table",
        "address": "c@x.net",
    }
    record = lists("GET", "complaints", "c@x.net")[1]
    assert (record["address"], record["count"]) == ("c@x.net", 1) and RFC2822_UTC.match(record["created_at"])

    status, body = lists("POST", "whitelists", fields=[("domain", "Partner.Example"), ("reason", "our QA")])
    assert (status, body) == (
        200,
        {
            "message": "Domain has been added to the whitelists table",
            "type": "domain",
            "value": "partner.example",
        },
    )
    status, body = lists("POST", "whitelists", fields=[("address", "qa@x.net")])
    assert body["type"] == "address" and body["value"] == "qa@x.net"
    record = lists("GET", "whitelists", "partner.example")[1]
    assert set(record) == {"value", "reason", "type", "createdAt"}
    assert (record["value"], record["type"], record["reason"]) == ("partner.example", "domain", "our QA")
    assert lists("POST", "whitelists", fields=[("domain", "not a domain")])[0] == 400
    status, body = lists("DELETE", "whitelists", "qa@x.net")
    assert (status, body) == (
        200,
        {"message": "Whitelist address/domain has been removed", "value": "qa@x.net"},
    )


def test_deleting_a_whole_list_leaves_the_others(lists):
    lists("POST", "bounces", json_body=[{"address": "a@x.net"}, {"address": "b@x.net"}])
    lists("POST", "complaints", fields=[("address", "a@x.net")])
    status, body = lists("DELETE", "bounces")
    assert (status, body) == (200, {"message": "Bounced addresses for this domain have been removed"})
    assert lists("GET", "bounces")[1]["items"] == []
    assert len(lists("GET", "complaints")[1]["items"]) == 1


def test_lists_are_per_domain_and_name_no_address_in_a_key(lists, aws):
    from opentracking.domains import registry

    registry.put(registry.Domain(name="other.example", cname_target="t.example"))
    lists("POST", "bounces", fields=[("address", "a@x.net")])
    assert lists("GET", "bounces", domain="other.example")[1]["items"] == []
    for item in table_items(aws):
        assert "a@x.net" not in item["pk"] + item["sk"]


# --- what the lists do to delivery ------------------------------------------------------------------


class Relay:
    def __init__(self, answers: dict[str, smtp.Reply]):
        self.answers, self.sent = answers, []

    def __call__(self, sender_address: str, recipient: str, message: bytes) -> smtp.Reply:
        self.sent.append(recipient)
        return self.answers.get(recipient, OK)


@pytest.fixture
def delivering(world, monkeypatch):
    monkeypatch.setenv("DELIVERY_TRANSPORT", "smtp")
    monkeypatch.setenv("SMTP_RELAY", "relay.example.test:587")
    sender.reset_cache()
    return world


def send_all(aws, relay: Relay) -> list[str]:
    sqs = boto3.client("sqs")
    results = []
    for _ in range(20):
        batch = sqs.receive_message(QueueUrl=aws.ref("SendQueue"), MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return results
        for message in batch:
            results.append(sender.process(message["Body"], transport=relay))
            sqs.delete_message(QueueUrl=aws.ref("SendQueue"), ReceiptHandle=message["ReceiptHandle"])
    return results


def failures(aws) -> list[dict]:
    return [json.loads(i["payload"]) for i in table_items(aws) if i.get("event") == "failed"]


def test_a_hard_bounce_joins_bounces_and_the_next_message_is_not_sent_to_it(delivering, aws, lists):
    relay = Relay({"gone@example.net": BOUNCE})
    delivering.send("gone@example.net, ok@example.net")
    assert sorted(send_all(aws, relay)) == ["delivered", "failed"]
    delivering.consume()
    record = lists("GET", "bounces", "gone@example.net")[1]
    assert (record["code"], record["error"]) == ("550", "5.1.1 No such user")

    relay.sent.clear()
    delivering.send("gone@example.net, ok@example.net")
    assert sorted(send_all(aws, relay)) == ["delivered", "failed"]
    assert relay.sent == ["ok@example.net"]  # nothing at all went to the bounced address
    suppressed = [e for e in failures(aws) if e["reason"] == "suppress-bounce"]
    (event,) = suppressed
    assert (event["severity"], event["log-level"]) == ("permanent", "error")
    assert event["delivery-status"]["code"] == 605
    assert event["delivery-status"]["description"] == "Not delivering to previously bounced address"

    delivering.consume()
    lists("DELETE", "bounces", "gone@example.net")  # delivery resumes
    relay.sent.clear()
    delivering.send("gone@example.net")
    send_all(aws, relay)
    assert relay.sent == ["gone@example.net"]


def test_the_suppressed_failures_are_counted_in_stats_by_reason(delivering, aws, lists, invoke):
    lists("POST", "bounces", fields=[("address", "b@example.net")])
    lists("POST", "complaints", fields=[("address", "c@example.net")])
    lists("POST", "unsubscribes", fields=[("address", "u@example.net")])
    delivering.send("b@example.net, c@example.net, u@example.net, ok@example.net")
    relay = Relay({})
    send_all(aws, relay)
    assert relay.sent == ["ok@example.net"]
    reasons = {e["recipient"]: e["reason"] for e in failures(aws)}
    assert reasons == {
        "b@example.net": "suppress-bounce",
        "c@example.net": "suppress-complaint",
        "u@example.net": "suppress-unsubscribe",
    }
    assert {e["delivery-status"]["code"] for e in failures(aws)} == {605, 606, 607}
    delivering.consume()
    status, body = invoke("api", "GET", "/v3/example.com/stats/total", query="event=failed")
    assert status == 200
    permanent = {
        key: sum(row["failed"]["permanent"][key] for row in body["stats"])
        for key in ("suppress-bounce", "suppress-complaint", "suppress-unsubscribe", "bounce", "total")
    }
    assert permanent == {
        "suppress-bounce": 1,
        "suppress-complaint": 1,
        "suppress-unsubscribe": 1,
        "bounce": 0,
        "total": 3,
    }
    assert lists("GET", "bounces", "c@example.net")[0] == 404  # a suppressed failure is not a new bounce


def test_an_unsubscribe_from_one_tag_stops_that_tag_only(delivering, aws, lists):
    lists("POST", "unsubscribes", fields=[("address", "u@example.net"), ("tag", "launch")])
    relay = Relay({})
    delivering.send("u@example.net", tags=("Launch",))
    delivering.send("u@example.net", tags=("receipts",))
    send_all(aws, relay)
    assert relay.sent == ["u@example.net"]
    (event,) = failures(aws)
    assert event["reason"] == "suppress-unsubscribe" and event["tags"] == ["launch"]


def test_a_whitelisted_address_or_domain_never_joins_bounces(delivering, aws, lists):
    lists("POST", "whitelists", fields=[("address", "qa@example.net")])
    lists("POST", "whitelists", fields=[("domain", "staging.example")])
    relay = Relay({"qa@example.net": BOUNCE, "x@staging.example": BOUNCE, "y@example.org": BOUNCE})
    delivering.send("qa@example.net, x@staging.example, y@example.org")
    send_all(aws, relay)
    delivering.consume()
    assert [i["address"] for i in lists("GET", "bounces")[1]["items"]] == ["y@example.org"]


def test_a_complaint_joins_complaints_once_however_often_the_stream_replays(delivering, aws, lists):
    from opentracking.delivery import events

    delivering.send("c@example.net")
    send_all(aws, Relay({}))
    copy = delivering.copy("c@example.net")
    job = SendJob.from_body(copy["send_job"])
    complaint = events.complained(copy, job, time.time())  # as SES's report records it
    assert sender.record(aws.ref("DataTable"), copy, complaint, final=None, after_outcome=True)
    delivering.consume()
    delivering.consume()
    record = lists("GET", "complaints", "c@example.net")[1]
    assert record["count"] == 1


def test_erasure_takes_the_address_off_every_list(delivering, aws, lists, invoke):
    for kind in ("bounces", "complaints", "unsubscribes", "whitelists"):
        lists("POST", kind, fields=[("address", "e@example.net")])
    lists("POST", "bounces", fields=[("address", "keep@example.net")])
    status, body = invoke(
        "privacy", "POST", "/v3/example.com/erasures", fields=[("address", "E@example.net")]
    )
    assert status == 200 and body["erased"]["list_records"] == 4
    for kind in ("bounces", "complaints", "unsubscribes", "whitelists"):
        assert lists("GET", kind, "e@example.net")[0] == 404
    assert lists("GET", "bounces", "keep@example.net")[0] == 200


def test_deleting_the_domain_empties_its_lists(lists, invoke, aws):
    lists("POST", "bounces", fields=[("address", "a@x.net")])
    lists("POST", "whitelists", fields=[("domain", "x.net")])
    assert invoke("api", "DELETE", "/v3/domains/example.com")[0] == 200
    assert not [i for i in table_items(aws) if i["pk"].startswith("LIST#")]


def test_blocking_is_one_read_of_three_records(aws, tracked_domain):
    calls = []
    from opentracking.core.aws import client

    client("dynamodb").meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
    )
    assert suppression_lists.blocking("example.com", "nobody@example.net", ["launch"]) is None
    assert calls == ["BatchGetItem"]


def test_json_nested_past_the_parsers_stack_is_a_400(aws, tracked_domain):
    from opentracking.core.errors import BadRequest

    with pytest.raises(BadRequest, match="array of records"):
        suppression_lists.add(
            suppression_lists.Kind.BOUNCES, "example.com", "application/json", b"[" * 100_000
        )
