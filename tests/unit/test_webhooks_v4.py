"""Mailgun's v4 domain webhooks: one URL for many event types, next to the v3 per-type lists."""

from __future__ import annotations

import pytest

from opentracking.webhooks import subscriptions

V4 = "/v4/domains/example.com/webhooks"
A, B = "https://a.example.net/hook", "https://b.example.net/hook"


def v3_urls(invoke) -> dict[str, list[str]]:
    status, body = invoke("webhooks", "GET", "/v3/domains/example.com/webhooks")
    assert status == 200
    return {kind: hook["urls"] for kind, hook in body["webhooks"].items()}


def test_one_url_for_many_event_types_and_back(invoke, tracked_domain):
    status, body = invoke(
        "webhooks", "POST", V4, fields=[("url", A), ("event_types", "opened"), ("event_types", "clicked")]
    )
    assert status == 200, body
    assert body == {"webhooks": {"clicked": {"urls": [A]}, "opened": {"urls": [A]}}}
    # B joins opened beside A; the v3 API shows the same lists
    invoke("webhooks", "POST", V4, fields=[("url", B), ("event_types", "opened,delivered")])
    assert v3_urls(invoke) == {"clicked": [A], "delivered": [B], "opened": [A, B]}
    assert invoke("webhooks", "GET", V4)[1]["webhooks"]["opened"] == {"urls": [A, B]}
    # PUT: A now targets exactly accepted and opened (it leaves clicked, which then has no URL)
    status, body = invoke(
        "webhooks", "PUT", V4, fields=[("url", A), ("event_types", "accepted"), ("event_types", "opened")]
    )
    assert status == 200, body
    assert v3_urls(invoke) == {"accepted": [A], "delivered": [B], "opened": [A, B]}
    # DELETE ?url=: B removed from every type
    assert invoke("webhooks", "DELETE", V4, query=f"url={B}")[0] == 200
    assert v3_urls(invoke) == {"accepted": [A], "opened": [A]}
    # and deliveries go where the lists say
    subscriptions.reset_cache()
    assert subscriptions.targets("example.com", "opened") == (A,)
    assert subscriptions.targets("example.com", "clicked") == ()


def test_adding_the_same_url_again_changes_nothing(invoke, tracked_domain):
    fields = [("url", A), ("event_types", "opened")]
    first = invoke("webhooks", "POST", V4, fields=fields)
    assert invoke("webhooks", "POST", V4, fields=fields) == first
    assert v3_urls(invoke) == {"opened": [A]}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([("event_types", "opened")], "'url' parameter is missing"),
        ([("url", A)], "'event_types' parameter is missing"),
        ([("url", A), ("event_types", "bounced")], "Invalid webhook id 'bounced'"),
        ([("url", A), ("event_types", "open")], "'open' is a legacy webhook"),
        ([("url", A), ("url", B), ("event_types", "opened")], "'url' must be given once"),
        ([("url", "ftp://a.example/x"), ("event_types", "opened")], "is not a valid http or https URL"),
    ],
)
def test_bad_v4_requests_are_400_and_change_nothing(invoke, tracked_domain, fields, message):
    status, body = invoke("webhooks", "POST", V4, fields=fields)
    assert status == 400 and message in body["message"]
    assert v3_urls(invoke) == {}


def test_a_fourth_url_for_a_type_is_refused_and_no_type_changes(invoke, tracked_domain):
    for n in range(3):
        invoke(
            "webhooks", "POST", V4, fields=[("url", f"https://{n}.example.net/h"), ("event_types", "opened")]
        )
    status, body = invoke(
        "webhooks", "POST", V4, fields=[("url", A), ("event_types", "clicked"), ("event_types", "opened")]
    )
    assert status == 400 and "at most 3 urls" in body["message"]
    assert "clicked" not in v3_urls(invoke)  # not half applied


def test_an_edit_that_loses_a_race_is_read_again(invoke, tracked_domain, monkeypatch):
    # Another writer adds B to opened between this edit's read and its write: the edit is applied again
    # over the new lists, and B stays.
    real = subscriptions.list_webhooks
    raced = []

    def racing_read(domain):
        found = real(domain)
        if not raced:
            raced.append(True)
            subscriptions.create(domain, "opened", [B])
        return found

    monkeypatch.setattr(subscriptions, "list_webhooks", racing_read)
    assert invoke("webhooks", "POST", V4, fields=[("url", A), ("event_types", "opened")])[0] == 200
    monkeypatch.setattr(subscriptions, "list_webhooks", real)
    assert v3_urls(invoke) == {"opened": [B, A]}


def test_v4_webhooks_of_an_unknown_domain_are_404(invoke, tracked_domain):
    assert invoke("webhooks", "GET", "/v4/domains/nope.example/webhooks")[0] == 404
    fields = [("url", A), ("event_types", "opened")]
    assert invoke("webhooks", "POST", "/v4/domains/nope.example/webhooks", fields=fields)[0] == 404
