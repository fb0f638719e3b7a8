"""The events, tags and stats API over what the stream consumer wrote, in Mailgun's shapes."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import parse_qs, urlencode, urlsplit

import boto3
import pytest

from devstack.events import make_http_event
from devstack.handlers import load_handler


@pytest.fixture
def api(world, lambda_context, basic_auth):
    handler = load_handler("functions/api")

    def get(path: str, route: str, params: dict, query: dict | str | None = None) -> tuple[int, dict]:
        query_text = query if isinstance(query, str) else urlencode(query or {}, doseq=True)
        event = make_http_event(
            "GET",
            path,
            route_key=f"GET {route}",
            path_parameters=params,
            query=query_text,
            headers={"authorization": basic_auth, "host": "api.example.test"},
        )
        response = handler.lambda_handler(event, lambda_context)
        return response["statusCode"], json.loads(response["body"])

    return get


@pytest.fixture
def history(world):
    """Two messages: one tagged launch to two recipients (one opens twice), one tagged digest (unopened)."""
    launch = world.send("a@example.net, b@example.net", tags=("Launch",))
    digest = world.send("c@example.net", tags=("digest",))
    for recipient in ("a@example.net", "b@example.net"):
        world.backdate(recipient)
    world.open("a@example.net")
    world.open("a@example.net")
    world.consume()
    return {"launch": launch, "digest": digest}


def events(api, query=None, page=None):
    if page:
        return api(
            f"/v3/example.com/events/{page}",
            "/v3/{domain}/events/{page}",
            {"domain": "example.com", "page": page},
        )
    return api("/v3/example.com/events", "/v3/{domain}/events", {"domain": "example.com"}, query)


def page_of(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[1]


def test_events_filters(api, history):
    status, body = events(api, {"event": "opened"})
    assert status == 200
    assert [e["event"] for e in body["items"]] == ["opened", "opened"]
    assert {e["recipient"] for e in body["items"]} == {"a@example.net"}
    assert len(events(api, {"event": "accepted"})[1]["items"]) == 3
    assert {e["recipient"] for e in events(api, {"tags": "digest"})[1]["items"]} == {"c@example.net"}
    assert len(events(api, {"recipient": "b@example.net"})[1]["items"]) == 1
    by_message = events(api, {"message-id": f"<{history['launch']}>", "event": "accepted"})[1]["items"]
    assert {e["recipient"] for e in by_message} == {"a@example.net", "b@example.net"}


def test_events_are_newest_first_by_default_and_ascending_on_request(api, history):
    newest_first = [e["timestamp"] for e in events(api)[1]["items"]]
    assert newest_first == sorted(newest_first, reverse=True) and len(newest_first) == 5
    oldest_first = [e["timestamp"] for e in events(api, {"ascending": "yes"})[1]["items"]]
    assert oldest_first == sorted(oldest_first)


def test_begin_and_end_in_rfc2822_and_epoch(api, history):
    now = time.time()
    rfc = format_datetime(datetime.fromtimestamp(now + 60, UTC))
    assert events(api, {"begin": rfc})[1]["items"] == []  # nothing after a minute from now
    everything = events(api, {"begin": str(now - 3600), "end": str(now + 60)})[1]["items"]
    assert len(everything) == 5
    assert [e["timestamp"] for e in everything] == sorted(e["timestamp"] for e in everything)  # begin < end


def test_paging_next_and_previous_walk_the_whole_list(api, history):
    status, first = events(api, {"limit": "2"})
    assert status == 200
    seen = [e["id"] for e in first["items"]]
    page = first
    while True:
        _, page = events(api, page=page_of(page["paging"]["next"]))
        if not page["items"]:
            break
        seen += [e["id"] for e in page["items"]]
    assert len(seen) == len(set(seen)) == 5
    assert first["paging"]["next"].startswith("https://api.example.test/v3/example.com/events/")
    # previous from the second page returns the first page
    _, second = events(api, page=page_of(first["paging"]["next"]))
    _, back = events(api, page=page_of(second["paging"]["previous"]))
    assert [e["id"] for e in back["items"]] == [e["id"] for e in first["items"]]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": "301"}, "'limit'"),
        ({"limit": "0"}, "'limit'"),
        ({"limit": "²"}, "'limit'"),  # a digit to str.isdigit(), not to int()
        ({"begin": "someday"}, "'begin'"),
        ({"begin": "nan"}, "'begin'"),
        ({"end": "1e300"}, "'end'"),
        ({"event": "clicked-maybe"}, "'event'"),
        ({"ascending": "sideways"}, "'ascending'"),
    ],
)
def test_bad_event_queries_are_400(api, history, query, message):
    status, body = events(api, query)
    assert status == 400
    assert message in body["message"]


def test_bad_page_token_is_400(api, history):
    assert events(api, page="not-a-token")[0] == 400


def test_events_of_an_unknown_domain_are_404(api, history):
    status, _ = api("/v3/nope.example/events", "/v3/{domain}/events", {"domain": "nope.example"})
    assert status == 404


def test_tags_list_and_get(api, history):
    status, body = api("/v3/example.com/tags", "/v3/{domain}/tags", {"domain": "example.com"})
    assert status == 200
    assert [t["tag"] for t in body["items"]] == ["digest", "launch"]
    assert set(body["items"][0]) == {"tag", "description", "first-seen", "last-seen"}
    status, tag = api(
        "/v3/example.com/tags/launch", "/v3/{domain}/tags/{tag}", {"domain": "example.com", "tag": "launch"}
    )
    assert (status, tag["tag"]) == (200, "launch")
    status, _ = api(
        "/v3/example.com/tags/none", "/v3/{domain}/tags/{tag}", {"domain": "example.com", "tag": "none"}
    )
    assert status == 404


def test_tag_times_are_rfc3339_as_mailguns_go_sdk_decodes_them(api, history):
    _, tag = api(
        "/v3/example.com/tags/launch", "/v3/{domain}/tags/{tag}", {"domain": "example.com", "tag": "launch"}
    )
    for field in ("first-seen", "last-seen"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", tag[field]), tag[field]
        assert abs(datetime.fromisoformat(tag[field]).timestamp() - time.time()) < 600


def test_tags_are_paged_as_mailgun_pages_them(api, world, history):
    world.send("d@example.net", tags=("digest-weekly", "zeta"))
    world.consume()
    tags = {"domain": "example.com"}

    def listed(query):
        status, body = api("/v3/example.com/tags", "/v3/{domain}/tags", tags, query)
        assert status == 200, body
        return [t["tag"] for t in body["items"]], body["paging"]

    first, paging = listed({"limit": "2"})
    assert first == ["digest", "digest-weekly"]
    # next: page=next&tag=<the last tag of this page>, as mailgun-go's iterator reads it
    assert parse_qs(urlsplit(paging["next"]).query) == {
        "limit": ["2"],
        "page": ["next"],
        "tag": ["digest-weekly"],
    }
    second, paging = listed(urlsplit(paging["next"]).query)
    assert second == ["launch", "zeta"]
    assert listed(urlsplit(paging["next"]).query)[0] == []
    assert listed(urlsplit(paging["previous"]).query)[0] == ["digest", "digest-weekly"]
    assert listed({"limit": "1", "page": "last"})[0] == ["zeta"]
    assert listed({"prefix": "Digest"})[0] == ["digest", "digest-weekly"]
    assert api("/v3/example.com/tags", "/v3/{domain}/tags", tags, {"page": "sideways"})[0] == 400


def test_a_tag_can_be_described_and_deleted_with_its_counters(aws, invoke, history):
    path = "/v3/example.com/tags/launch"
    assert invoke("api", "PUT", path, fields={"description": "Launch mail"}) == (
        200,
        {"message": "Tag updated"},
    )
    assert invoke("api", "GET", path)[1]["description"] == "Launch mail"
    assert invoke("api", "PUT", path, fields={})[0] == 400
    assert invoke("api", "PUT", "/v3/example.com/tags/never-used", fields={"description": "x"})[0] == 404
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))
    counters = [i for i in table.scan()["Items"] if i["pk"].startswith("STATS#example.com#launch#")]
    assert counters  # the tag's hourly counters, before
    assert invoke("api", "DELETE", path) == (200, {"message": "Tag deleted"})
    assert invoke("api", "GET", path)[0] == 404
    assert not [i for i in table.scan()["Items"] if i["pk"].startswith("STATS#example.com#launch#")]
    assert [
        i for i in table.scan()["Items"] if i["pk"].startswith("STATS#example.com#digest#")
    ]  # others stay
    assert invoke("api", "DELETE", path)[0] == 404


def test_tag_stats_count_total_and_unique(api, history):
    status, body = api(
        "/v3/example.com/tags/launch/stats",
        "/v3/{domain}/tags/{tag}/stats",
        {"domain": "example.com", "tag": "launch"},
        "event=accepted&event=opened&duration=1d",
    )
    assert status == 200
    assert body["tag"] == "launch" and body["resolution"] == "day"
    totals = {"accepted": 0, "opened": 0, "unique": 0}
    for row in body["stats"]:
        totals["accepted"] += row["accepted"]["total"]
        totals["opened"] += row["opened"]["total"]
        totals["unique"] += row["opened"]["unique"]
        assert row["time"].endswith("UTC")
    assert totals == {"accepted": 2, "opened": 2, "unique": 1}


def test_domain_stats_total_by_hour(api, history):
    status, body = api(
        "/v3/example.com/stats/total",
        "/v3/{domain}/stats/total",
        {"domain": "example.com"},
        "event=opened&resolution=hour&duration=2h",
    )
    assert status == 200
    assert "tag" not in body and body["resolution"] == "hour"
    assert body["start"] == body["stats"][0]["time"] and body["start"].endswith(":00:00 UTC")  # the bucket's
    assert len(body["stats"]) in (3, 4)  # every hour of the window, zero-filled
    assert sum(row["opened"]["total"] for row in body["stats"]) == 2
    assert all("accepted" not in row for row in body["stats"])


def test_account_stats_sum_every_domain(world, history, invoke, lambda_context, basic_auth):
    from opentracking.domains import registry
    from tests.helpers.invoke import send_message

    registry.put(registry.Domain(name="example.org", cname_target="t.example", tracking_ready=True))
    fields = [("from", "s@example.org"), ("to", "x@example.net, y@example.net"), ("text", "hi")]
    send_message(
        load_handler("functions/submit"), lambda_context, fields, auth=basic_auth, domain="example.org"
    )
    world.consume()

    def accepted(path):
        status, body = invoke("api", "GET", path, query="event=accepted&duration=1d")
        assert status == 200, body
        return sum(row["accepted"]["total"] for row in body["stats"]), body["description"]

    assert accepted("/v3/stats/total") == (5, "Account stats")  # 3 to example.com, 2 to example.org
    assert accepted("/v3/example.com/stats/total") == (3, "Domain stats")
    assert accepted("/v3/example.org/stats/total") == (2, "Domain stats")


def test_a_dashboard_asking_for_every_event_type_gets_each(api, history):
    # Mailgun's stats know 8 event types; a dashboard asks for several at once, each as its own `event`.
    names = ["accepted", "delivered", "failed", "opened", "clicked", "unsubscribed", "complained", "stored"]
    status, body = api(
        "/v3/example.com/stats/total",
        "/v3/{domain}/stats/total",
        {"domain": "example.com"},
        "&".join(f"event={name}" for name in names) + "&duration=1d",
    )
    assert status == 200, body
    assert all(set(row) == {"time", *names} for row in body["stats"])
    assert sum(row["accepted"]["total"] for row in body["stats"]) == 3
    assert sum(row["opened"]["total"] for row in body["stats"]) == 2
    assert all(row["stored"] == {"total": 0} for row in body["stats"])  # no inbound mail here


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "'event'"),
        ("event=opened&event=bounced", "'event'"),
        ("event=opened&resolution=week", "'resolution'"),
        ("event=opened&duration=forever", "'duration'"),
        ("event=opened&duration=%C2%B2d", "'duration'"),  # "²d"
        ("event=opened&duration=99999999999d", "at most 3650d"),  # timedelta would overflow
        ("event=opened&start=inf", "'start'"),
        ("event=opened&start=0&resolution=hour", "At most 10000 hours"),
    ],
)
def test_bad_stats_queries_are_400(api, history, query, message):
    status, body = api(
        "/v3/example.com/stats/total", "/v3/{domain}/stats/total", {"domain": "example.com"}, query
    )
    assert status == 400
    assert message in body["message"]


def test_list_limits_take_ascii_digits_only(api, history):
    status, body = api("/v4/domains", "/v4/domains", {}, {"limit": "²"})
    assert status == 400 and "'limit'" in body["message"]


# --- Mailgun's filter fields and expressions (reporting.filters) ------------------------------------------


@pytest.fixture
def farewell(world, history):
    """A third message, with a subject and a display name, to the fourth recipient."""
    world.send(
        "d@example.net",
        tags=("farewell",),
        extra=[("from", "Ann Sender <s@example.com>"), ("subject", "Farewell, Monica!")],
    )
    world.consume()


def recipients_of(api, query) -> list[str]:
    status, body = events(api, query)
    assert status == 200, body
    return sorted(f"{e['event']}:{e['recipient'][0]}" for e in body["items"])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            {"event": "accepted OR opened"},
            ["accepted:a", "accepted:b", "accepted:c", "accepted:d", "opened:a", "opened:a"],
        ),
        ({"event": "NOT accepted"}, ["opened:a", "opened:a"]),
        ({"event": "-accepted"}, ["opened:a", "opened:a"]),
        ({"tags": "launch OR digest", "event": "accepted"}, ["accepted:a", "accepted:b", "accepted:c"]),
        ({"tags": "launch AND digest"}, []),
        ({"tags": "(launch OR digest) AND NOT launch"}, ["accepted:c"]),
        ({"recipient": "c@example.net OR d@example.net"}, ["accepted:c", "accepted:d"]),
        ({"recipient": "a@example.net", "event": "opened"}, ["opened:a", "opened:a"]),
        ({"subject": "farewell"}, ["accepted:d"]),
        ({"subject": "monica"}, ["accepted:d"]),  # a word of "Farewell, Monica!"
        ({"subject": '"farewell, monica"'}, ["accepted:d"]),
        ({"subject": '"monica farewell"'}, []),
        ({"subject": "(Hello AND NOT Rachel) OR (Farewell AND Monica)"}, ["accepted:d"]),
        ({"from": "ann"}, ["accepted:d"]),
        (
            {"from": "s@example.com", "event": "accepted"},
            ["accepted:a", "accepted:b", "accepted:c", "accepted:d"],
        ),
        ({"size": ">100 <100000000"}, ["accepted:a", "accepted:b", "accepted:c", "accepted:d"]),
        ({"size": "<100"}, []),
        ({"severity": "permanent"}, []),  # nothing failed: a bounce processor gets nothing, not everything
        ({"event": "failed OR rejected OR stored"}, []),
        ({"list": "news@example.com"}, []),
        ({"attachment": "report.pdf"}, []),
        (
            {"event": "accepted", "pretty": "yes", "tags": ""},
            ["accepted:a", "accepted:b", "accepted:c", "accepted:d"],
        ),
    ],
)
def test_every_mailgun_filter_and_expression(api, farewell, query, expected):
    assert [r.split("@")[0] for r in recipients_of(api, query)] == expected


def test_an_expression_survives_paging(api, farewell):
    status, page = events(api, {"event": "accepted OR opened", "tags": "NOT farewell", "limit": "1"})
    seen = []
    while page["items"]:
        seen += [(e["event"], e["recipient"]) for e in page["items"]]
        status, page = events(api, page=page_of(page["paging"]["next"]))
        assert status == 200
    assert sorted(seen) == sorted(
        [("accepted", r) for r in ("a@example.net", "b@example.net", "c@example.net")]
        + [("opened", "a@example.net")] * 2
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"color": "blue"}, "'color' is not a parameter of the events API"),
        ({"event": "opened OR clicked-maybe"}, "'event' must be one of"),
        ({"severity": "fatal"}, "'severity'"),
        ({"tags": "(launch"}, "'(' is not closed"),
        ({"tags": "launch)"}, "')' closes nothing"),
        ({"tags": "launch OR"}, "a term is missing"),
        ({"tags": "NOT"}, "a term is missing"),
        ({"tags": "AND launch"}, "AND needs a term"),
        ({"subject": '"unclosed'}, "unclosed quote"),
        ({"subject": '""'}, "empty phrase"),
        ({"subject": ">5"}, "numeric fields only"),
        ({"tags": "(" * 17 + "a" + ")" * 17}, "nested more than 16"),
        ({"tags": "(" * 2000}, "nested more than 16"),
        ({"subject": "x" * 2049}, "at most 2048 characters"),
    ],
)
def test_a_filter_that_is_not_one_is_a_400(api, history, query, message):
    status, body = events(api, query)
    assert status == 400
    assert message in body["message"]


def test_every_event_type_mailgun_documents_can_be_asked_for(api, history):
    from opentracking.reporting.filters import EVENT_TYPES

    for name in EVENT_TYPES:
        status, body = events(api, {"event": name})
        assert status == 200, (name, body)
        assert {e["event"] for e in body["items"]} <= {name}


# --- tag aggregates: devices, countries, providers ---------------------------------------------------------

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148"
)


def aggregates_of(api, kind, tag="launch"):
    status, body = api(
        f"/v3/example.com/tags/{tag}/stats/aggregates/{kind}",
        "/v3/{domain}/tags/{tag}/stats/aggregates/{kind}",
        {"domain": "example.com", "tag": tag, "kind": kind},
    )
    return status, body


def test_a_tags_opens_by_device_country_and_provider(api, world):
    world.send("ann@gmail.com, bob@example.net", tags=("Launch",))
    for recipient in ("ann@gmail.com", "bob@example.net"):
        world.backdate(recipient)
    world.open("ann@gmail.com", ip="8.8.8.8")  # Outlook on Windows: desktop; an ARIN (US) block
    world.open("ann@gmail.com", ip="8.8.8.8")
    world.open("bob@example.net", user_agent=IPHONE, ip="1.0.16.1")  # an APNIC block assigned in Japan
    world.consume()
    world.consume()  # a replayed stream counts nothing twice

    status, devices = aggregates_of(api, "devices")
    assert status == 200 and devices["tag"] == "launch"
    assert devices["devices"]["desktop"] == {
        "clicked": 0,
        "complained": 0,
        "opened": 2,
        "unique_clicked": 0,
        "unique_opened": 1,
        "unsubscribed": 0,
    }
    assert devices["devices"]["mobile"]["opened"] == 1 and devices["devices"]["mobile"]["unique_opened"] == 1
    assert set(devices["devices"]) == {"desktop", "mobile", "tablet", "unknown"}

    providers = aggregates_of(api, "providers")[1]["providers"]
    assert providers["gmail.com"]["accepted"] == 1 and providers["gmail.com"]["opened"] == 2
    assert providers["other"]["accepted"] == 1 and providers["other"]["unique_opened"] == 1

    countries = aggregates_of(api, "countries")[1]["countries"]
    assert sum(row["opened"] for row in countries.values()) == 3, countries
    assert countries["US"]["opened"] == 2 and countries["US"]["unique_opened"] == 1
    assert countries["JP"]["opened"] == 1 and countries["JP"]["unique_opened"] == 1

    # one open alone in its batch takes the one-by-one path (consumer.handle_open): counted the same way
    world.open("bob@example.net", user_agent=IPHONE)
    world.consume()
    assert aggregates_of(api, "devices")[1]["devices"]["mobile"]["opened"] == 2
    assert aggregates_of(api, "devices")[1]["devices"]["mobile"]["unique_opened"] == 1

    assert aggregates_of(api, "planets")[0] == 404
    assert aggregates_of(api, "devices", tag="never-used")[0] == 404
