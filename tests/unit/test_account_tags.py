"""Tag limits (`GET /v3/domains/{d}/limits/tag`, enforced at submission) and Mailgun's account tags API
(`/v1/analytics/tags`: list with a JSON query, describe, delete, limits)."""

from __future__ import annotations

import json

import boto3
import pytest

from opentracking.core.config import settings
from opentracking.reporting import tag_limits

TAGS = "/v1/analytics/tags"


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setenv("TAG_LIMIT", "2")
    settings.cache_clear()
    tag_limits.reset_cache()
    yield 2
    settings.cache_clear()


def accepted_tags(aws):
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))
    items = [i for i in table.scan()["Items"] if i.get("event") == "accepted"]
    return sorted(tuple(json.loads(i["payload"])["tags"]) for i in items)


def test_a_domain_keeps_at_most_its_tag_limit_and_says_so(invoke, aws, world, small_limit):
    world.send("a@example.net", tags=("alpha", "beta"))
    world.consume()
    status, limits = invoke("api", "GET", "/v3/domains/example.com/limits/tag")
    assert status == 200
    assert limits["limit"] == 2 and limits["count"] == 2
    assert isinstance(limits["id"], str) and limits["id"] != "example.com"

    # a third tag would be one too many: dropped from the message, which is still accepted; known tags stay
    world.send("b@example.net", tags=("alpha", "gamma"))
    world.consume()
    assert world.last_response["message"] == "Queued. Thank you."
    assert world.copy("b@example.net")["tags"] == ["alpha"]
    assert accepted_tags(aws) == [("alpha",), ("alpha", "beta")]
    assert invoke("api", "GET", "/v3/domains/example.com/limits/tag")[1]["count"] == 2
    assert invoke("api", "GET", "/v3/example.com/tags/gamma")[0] == 404

    # deleting a tag makes room for a new one
    assert invoke("api", "DELETE", "/v3/example.com/tags/beta")[0] == 200
    world.send("c@example.net", tags=("gamma",))
    world.consume()
    assert world.copy("c@example.net")["tags"] == ["gamma"]
    assert invoke("api", "GET", "/v3/example.com/tags/gamma")[0] == 200

    status, account = invoke("api", "GET", f"{TAGS}/limits")
    assert status == 200 and account == {"limit": 2, "count": 2, "limit_reached": True}


def test_limits_of_an_unknown_domain_are_a_404(invoke, aws):
    status, body = invoke("api", "GET", "/v3/domains/nowhere.example/limits/tag")
    assert status == 404 and "message" in body


@pytest.fixture
def tagged(world):
    world.send("a@example.net", tags=("launch", "promo"))
    world.send("b@example.net", tags=("digest",))
    world.backdate("a@example.net")
    world.open("a@example.net")
    world.consume()
    world.consume()


def listing(invoke, body):
    status, answer = invoke("api", "POST", TAGS, json_body=body)
    assert status == 200, answer
    return answer


def test_account_tags_are_listed_sorted_paged_and_counted(invoke, tagged):
    answer = listing(invoke, {"pagination": {"sort": "tag:asc", "limit": 2, "include_total": True}})
    assert [item["tag"] for item in answer["items"]] == ["digest", "launch"]
    assert answer["pagination"] == {"sort": "tag:asc", "skip": 0, "limit": 2, "total": 3}
    item = answer["items"][0]
    assert set(item) == {
        "account_id",
        "parent_account_id",
        "tag",
        "description",
        "first_seen",
        "last_seen",
        "account_name",
    }
    assert len(item["account_id"]) == 24 and item["first_seen"].endswith("Z")
    assert item["first_seen"] <= item["last_seen"]

    second = listing(invoke, {"pagination": {"sort": "tag:asc", "limit": 2, "skip": 2}})
    assert [item["tag"] for item in second["items"]] == ["promo"] and "total" not in second["pagination"]
    assert [i["tag"] for i in listing(invoke, {"tag": "PRO"})["items"]] == ["promo"]  # a prefix, any case
    default = listing(invoke, {})
    assert default["pagination"]["sort"] == "lastseen:desc" and len(default["items"]) == 3


def test_account_tags_with_metrics(invoke, tagged):
    (item,) = listing(invoke, {"tag": "launch", "include_metrics": True})["items"]
    assert item["metrics"]["accepted_count"] == 1
    assert item["metrics"]["opened_count"] == 1 and item["metrics"]["unique_opened_count"] == 1
    assert item["metrics"]["opened_rate"] == "0.00"  # nothing delivered in this tier
    too_many = {"include_metrics": True, "pagination": {"limit": 21}}
    status, body = invoke("api", "POST", TAGS, json_body=too_many)
    assert status == 400 and "20" in body["message"]


def test_describing_and_deleting_an_account_tag(invoke, tagged):
    status, body = invoke("api", "PUT", TAGS, json_body={"tag": "Launch", "description": "Spring launch"})
    assert (status, body) == (200, {"message": "Tag updated"})
    assert invoke("api", "GET", "/v3/example.com/tags/launch")[1]["description"] == "Spring launch"
    assert listing(invoke, {"tag": "launch"})["items"][0]["description"] == "Spring launch"

    assert invoke("api", "DELETE", TAGS, json_body={"tag": "launch"}) == (200, {"message": "Tag deleted"})
    assert invoke("api", "GET", "/v3/example.com/tags/launch")[0] == 404
    assert invoke("api", "DELETE", TAGS, json_body={"tag": "launch"})[0] == 404
    assert invoke("api", "PUT", TAGS, json_body={"tag": "nope", "description": "x"})[0] == 404


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("POST", {"pagination": {"limit": 0}}),
        ("POST", {"pagination": {"limit": 1001}}),
        ("POST", {"pagination": {"skip": -1}}),
        ("POST", {"pagination": {"sort": "opened:desc"}}),
        ("POST", {"pagination": {"sort": "tag:sideways"}}),
        ("POST", {"pagination": []}),
        ("POST", {"include_metrics": "yes"}),
        ("POST", {"tag": 7}),
        ("POST", [1, 2]),
        ("PUT", {"tag": "launch"}),
        ("PUT", {"description": "no tag"}),
        ("PUT", {"tag": "launch", "description": 5}),
        ("DELETE", {}),
        ("DELETE", {"tag": ""}),
    ],
)
def test_bad_queries_are_400s_that_change_nothing(invoke, tagged, method, body):
    before = listing(invoke, {"pagination": {"sort": "tag:asc"}})
    status, answer = invoke("api", method, TAGS, json_body=body)
    assert status == 400 and isinstance(answer["message"], str)
    assert listing(invoke, {"pagination": {"sort": "tag:asc"}}) == before
