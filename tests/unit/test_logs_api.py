"""Mailgun's Logs API (POST /v1/analytics/logs): the account's events by time, filtered and paged."""

from __future__ import annotations

import json

import pytest

PATH = "/v1/analytics/logs"


@pytest.fixture
def history(world):
    """launch to a and b (a opens twice: one unique open), digest to c: 3 accepted, 2 opened."""
    world.send("a@example.net, b@gmail.com", tags=("Launch",))
    world.send("c@example.net", tags=("digest",))
    for recipient in ("a@example.net", "b@gmail.com"):
        world.backdate(recipient)
    world.open("a@example.net", ip="8.8.8.8")
    world.open("a@example.net", ip="8.8.8.8")
    world.consume()


def logs(invoke, body):
    status, answer = invoke("api", "POST", PATH, json_body=body)
    assert status == 200, answer
    return answer


def test_every_event_of_the_last_day_newest_first_in_the_logs_shape(invoke, history):
    answer = logs(invoke, {})
    events = [item["event"] for item in answer["items"]]
    assert sorted(events) == ["accepted"] * 3 + ["opened"] * 2
    stamps = [item["@timestamp"] for item in answer["items"]]
    assert stamps == sorted(stamps, reverse=True) and all(s.endswith("Z") and "T" in s for s in stamps)
    opened = next(item for item in answer["items"] if item["event"] == "opened")
    assert opened["domain"] == {"name": "example.com"} and len(opened["account"]["id"]) == 24
    assert opened["recipient"] == "a@example.net" and opened["recipient-provider"] == "other"
    assert json.loads(opened["user-variables"]) == {"plan": "pro"}  # a JSON string, as the Logs API sends
    assert opened["geolocation"]["country"] == "US" and "timestamp" not in opened
    accepted = next(item for item in answer["items"] if item["event"] == "accepted")
    assert isinstance(accepted["storage"]["url"], list) and accepted["storage"]["key"]
    assert answer["aggregates"] == {} and answer["pagination"] == {}
    assert answer["start"].endswith("UTC") and answer["end"].endswith("UTC")


def test_events_metric_events_and_attribute_filters(invoke, history):
    assert {i["event"] for i in logs(invoke, {"events": ["opened"]})["items"]} == {"opened"}
    unique = logs(invoke, {"events": ["unique_opened"]})["items"]
    assert len(unique) == 1 and unique[0]["event"] == "opened"  # the first human open of the copy
    assert len(logs(invoke, {"metric_events": ["processed"]})["items"]) == 3
    assert logs(invoke, {"metric_events": ["delivered_http", "stored"]})["items"] == []

    def where(attribute, comparator, *values):
        rows = [{"label": v, "value": v} for v in values]
        return {"filter": {"AND": [{"attribute": attribute, "comparator": comparator, "values": rows}]}}

    tagged = logs(invoke, {"events": ["accepted"], **where("tag", "=", "launch")})["items"]
    assert sorted(i["recipient"] for i in tagged) == ["a@example.net", "b@gmail.com"]
    others = logs(invoke, {"events": ["accepted"], **where("tag", "!=", "LAUNCH")})["items"]
    assert [i["recipient"] for i in others] == ["c@example.net"]
    gmail = logs(invoke, where("recipient_domain", "contains", "gmail"))["items"]
    assert [i["recipient"] for i in gmail] == ["b@gmail.com"]
    assert logs(invoke, where("domain", "=", "example.com"))["items"]
    assert logs(invoke, where("domain", "=", "elsewhere.example"))["items"] == []


def test_pages_follow_the_token_to_the_end_without_gaps_or_repeats(invoke, history):
    seen, body = [], {"pagination": {"limit": 2, "sort": "timestamp:asc"}, "include_totals": True}
    for _ in range(5):
        answer = logs(invoke, body)
        assert answer["pagination"]["total"] == 5 and answer["aggregates"]["all"] == 5
        seen += [item["id"] for item in answer["items"]]
        if "next" not in answer["pagination"]:
            break
        body = {**body, "pagination": {**body["pagination"], "token": answer["pagination"]["next"]}}
    assert len(seen) == len(set(seen)) == 5
    # a token only goes with the query it came from: the same events, filter and order ...
    token = body["pagination"]["token"]
    other = {"events": ["opened"], "pagination": {"limit": 2, "token": token, "sort": "timestamp:asc"}}
    status, error = invoke("api", "POST", PATH, json_body=other)
    assert status == 400 and "another query" in error["message"]
    reversed_order = {"pagination": {"limit": 2, "token": token, "sort": "timestamp:desc"}}
    assert invoke("api", "POST", PATH, json_body=reversed_order)[0] == 400
    # ... while the window may move, as clients compute "the last day" again for every page
    moved = {"duration": "2d", "pagination": {"limit": 3, "token": token, "sort": "timestamp:asc"}}
    assert invoke("api", "POST", PATH, json_body=moved)[0] == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"events": ["bounced"]}, "not an event of the Logs API"),
        ({"metric_events": ["planets"]}, "not a metric event"),
        ({"events": "opened"}, "'events' must be a list"),
        ({"start": "yesterday"}, "'start'"),
        ({"duration": "forever"}, "'duration'"),
        ({"start": "Tue, 02 Jan 2024 00:00:00 +0000", "end": "Mon, 01 Jan 2024 00:00:00 +0000"}, "before"),
        ({"pagination": {"limit": 0}}, "'pagination.limit'"),
        ({"pagination": {"limit": 1001}}, "'pagination.limit'"),
        ({"pagination": {"sort": "recipient:asc"}}, "'pagination.sort'"),
        ({"pagination": {"token": "!!!"}}, "token"),
        ({"pagination": []}, "'pagination'"),
        ({"filter": {"OR": []}}, "'filter'"),
        (
            {"filter": {"AND": [{"attribute": "ip_pool", "comparator": "=", "values": [{"value": "x"}]}]}},
            "ip_pool",
        ),
        ({"filter": {"AND": [{"attribute": "tag", "comparator": "~", "values": [{"value": "x"}]}]}}, "'~'"),
        ({"filter": {"AND": [{"attribute": "tag", "comparator": "=", "values": []}]}}, "values"),
        ({"include_totals": "yes"}, "'include_totals'"),
        (
            {"filter": {"AND": [{"attribute": "tag", "comparator": "=", "values": [{"value": "x"}]}] * 21}},
            "at most 20 predicates",
        ),
        ([1], "JSON object"),
    ],
)
def test_a_query_that_is_not_one_is_a_400(invoke, history, body, message):
    status, answer = invoke("api", "POST", PATH, json_body=body)
    assert status == 400 and message in answer["message"], answer
