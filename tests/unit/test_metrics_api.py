"""Mailgun's Metrics API (POST /v1/analytics/metrics) over the hourly counters."""

from __future__ import annotations

import pytest

PATH = "/v1/analytics/metrics"


@pytest.fixture
def history(world):
    """launch to a and b (a opens twice), digest to c: 3 accepted, 2 opens, 1 unique."""
    world.send("a@example.net, b@example.net", tags=("Launch",))
    world.send("c@example.net", tags=("digest",))
    for recipient in ("a@example.net", "b@example.net"):
        world.backdate(recipient)
    world.open("a@example.net")
    world.open("a@example.net")
    world.consume()


def metrics(invoke, body):
    status, answer = invoke("api", "POST", PATH, json_body=body)
    assert status == 200, answer
    return answer


def test_counts_and_rates_of_the_account(invoke, history):
    answer = metrics(
        invoke,
        {
            "duration": "1d",
            "metrics": [
                "accepted_count",
                "opened_count",
                "unique_opened_count",
                "opened_rate",
                "delivered_count",
            ],
            "include_aggregates": True,
        },
    )
    assert answer["dimensions"] == [] and answer["duration"] == "1d" and answer["resolution"] == "day"
    (item,) = answer["items"]
    assert item["dimensions"] == []
    assert item["metrics"] == {
        "accepted_count": 3,
        "opened_count": 2,
        "unique_opened_count": 1,
        "opened_rate": "0.00",  # nothing delivered: the local stack sends nothing in this tier
        "delivered_count": 0,
    }
    assert answer["aggregates"] == {"metrics": item["metrics"]}
    assert answer["pagination"] == {"sort": "", "skip": 0, "limit": 10, "total": 1}


def test_by_time_every_bucket_zero_filled(invoke, history):
    answer = metrics(
        invoke, {"duration": "3h", "resolution": "hour", "dimensions": ["time"], "metrics": ["opened_count"]}
    )
    items = answer["items"]
    assert len(items) in (4, 5) and answer["pagination"]["total"] == len(items)
    assert sum(item["metrics"]["opened_count"] for item in items) == 2
    times = [item["dimensions"][0]["value"] for item in items]
    assert all(t.endswith(":00:00 +0000") for t in times)  # "Tue, 24 Sep 2024 10:00:00 +0000"


def test_by_tag_filtered_sorted_and_paged(invoke, history):
    body = {"duration": "1d", "dimensions": ["tag"], "metrics": ["accepted_count", "unique_opened_count"]}
    by_tag = {i["dimensions"][0]["value"]: i["metrics"] for i in metrics(invoke, body)["items"]}
    assert by_tag == {
        "digest": {"accepted_count": 1, "unique_opened_count": 0},
        "launch": {"accepted_count": 2, "unique_opened_count": 1},
    }
    only = {
        "AND": [{"attribute": "tag", "comparator": "=", "values": [{"label": "Launch", "value": "Launch"}]}]
    }
    assert [i["dimensions"][0]["value"] for i in metrics(invoke, {**body, "filter": only})["items"]] == [
        "launch"
    ]
    sorted_page = metrics(invoke, {**body, "pagination": {"sort": "accepted_count:desc", "limit": 1}})
    assert [i["dimensions"][0]["value"] for i in sorted_page["items"]] == ["launch"]
    assert sorted_page["pagination"]["total"] == 2
    next_page = metrics(
        invoke, {**body, "pagination": {"sort": "accepted_count:desc", "limit": 1, "skip": 1}}
    )
    assert [i["dimensions"][0]["value"] for i in next_page["items"]] == ["digest"]


def test_by_domain_with_a_domain_filter(invoke, history):
    body = {"duration": "1d", "dimensions": ["domain"], "metrics": ["accepted_count"]}
    assert [(i["dimensions"][0]["value"], i["metrics"]) for i in metrics(invoke, body)["items"]] == [
        ("example.com", {"accepted_count": 3})
    ]
    other = {
        "AND": [
            {"attribute": "domain", "comparator": "!=", "values": [{"label": "x", "value": "example.com"}]}
        ]
    }
    assert metrics(invoke, {**body, "filter": other})["items"] == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"metrics": ["opens"]}, "'opens' is not a metric"),
        ({"dimensions": ["planet"]}, "'planet' is not a dimension"),
        ({"dimensions": ["country"]}, "has no data in this deployment"),
        ({"resolution": "week"}, "'resolution'"),
        ({"start": "yesterday"}, "'start'"),
        ({"duration": "forever"}, "'duration'"),
        ({"duration": "99999999999d"}, "at most 3650d"),  # timedelta would overflow: a 400, not a 500
        ({"start": "nan"}, "'start'"),
        ({"start": "1e300"}, "'start'"),
        ({"start": "0", "resolution": "hour"}, "At most 10000 hours"),
        ({"filter": {"OR": []}}, "'filter'"),
        (
            {"filter": {"AND": [{"attribute": "ip", "comparator": "=", "values": [{"value": "1"}]}]}},
            "not supported",
        ),
        ({"pagination": {"limit": 0}}, "'pagination.limit'"),
        ({"pagination": []}, "'pagination'"),  # an empty list is not "no pagination"
        ({"filter": []}, "'filter'"),
        (
            {"filter": {"AND": [{"attribute": "tag", "comparator": "=", "values": [{"value": "x"}]}] * 21}},
            "at most 20 predicates",
        ),
        ({"pagination": {"sort": "nothing:asc"}}, "'pagination.sort'"),
        ([1, 2], "JSON object"),
    ],
)
def test_a_query_that_is_not_one_is_a_400(invoke, history, body, message):
    status, answer = invoke("api", "POST", PATH, json_body=body)
    assert status == 400 and message in answer["message"], answer
