"""The domains and tracking-settings API, in-process under moto, with a real DNS server on loopback
playing the customer's DNS provider (the seed's first failure mode: a missing or wrong tracking CNAME)."""

from __future__ import annotations

import pytest

from devstack.dns_server import DnsServer

TARGET = "track.opentracking.test"


@pytest.fixture
def dns_server(monkeypatch):
    with DnsServer() as server:
        monkeypatch.setenv("OPENTRACKING_NAMESERVERS", server.nameserver)
        yield server


@pytest.fixture
def call(dns_server, invoke, monkeypatch):
    monkeypatch.setenv("TRACKING_CNAME_TARGET", TARGET)

    def request(
        method, path, fields=None, *, route, function="api", params=None, query="", authorization=None
    ):
        auth = {} if authorization is None else {"authorization": authorization}
        return invoke(
            function,
            method,
            path,
            route=route,
            params=params,
            query=query,
            fields=fields,
            headers={"host": "abc123.execute-api.us-east-1.amazonaws.com"},
            **auth,
        )

    return request


def create(call, name="example.com", **fields):
    return call("POST", "/v3/domains", {"name": name, **fields}, route="/v3/domains")


def domain_path(call, method, name, suffix="", fields=None, version="v3"):
    route = f"/{version}/domains/{{name}}{suffix}"
    return call(method, f"/{version}/domains/{name}{suffix}", fields, route=route, params={"name": name})


def send(call, **extra):
    fields = {"from": "s@example.com", "to": "r@example.net", "html": "<html><body>x</body></html>", **extra}
    return call(
        "POST",
        "/v3/example.com/messages",
        fields,
        route="/v3/{domain}/messages",
        function="submit",
        params={"domain": "example.com"},
    )


def test_new_domain_shows_its_missing_tracking_cname(call):
    status, body = create(call)
    assert status == 200, body
    assert body["message"] == "Domain DNS records have been created"
    assert body["domain"]["name"] == "example.com"
    assert body["domain"]["state"] == "unverified"
    assert body["domain"]["web_prefix"] == "email" and body["domain"]["web_scheme"] == "https"
    (record,) = body["sending_dns_records"]
    assert record["record_type"] == "CNAME"
    assert (record["name"], record["value"], record["valid"]) == ("email.example.com", TARGET, "invalid")
    assert record["status"] == "nxdomain"
    assert "email.example.com" in record["detail"]
    assert body["receiving_dns_records"] == []


def test_tracking_cannot_be_switched_on_until_the_cname_is_valid_then_messages_are_tracked(call, dns_server):
    create(call)
    # GIVEN the CNAME is missing: tracking cannot be enabled, and the refusal explains the fix
    status, body = domain_path(call, "PUT", "example.com", "/tracking/open", {"active": "yes"})
    assert status == 400
    assert (
        "email.example.com" in body["message"] and TARGET in body["message"] and "verify" in body["message"]
    )
    # WHEN the customer publishes the record and verifies
    dns_server.set_record("email.example.com", "CNAME", TARGET)
    status, body = domain_path(call, "PUT", "example.com", "/verify")
    assert status == 200
    assert body["message"] == "Domain DNS records have been updated"
    assert body["domain"]["state"] == "active"
    assert body["sending_dns_records"][0]["valid"] == "valid"
    assert body["sending_dns_records"][0]["cached"] == [TARGET]
    # THEN tracking can be switched on, and a message is tracked by the domain setting alone
    status, body = domain_path(
        call, "PUT", "example.com", "/tracking/open", {"active": "yes", "place_at_the_top": "no"}
    )
    assert status == 200
    assert body == {
        "message": "Domain tracking settings have been updated",
        "open": {"active": True, "place_at_the_top": False},
    }
    status, body = domain_path(call, "GET", "example.com", "/tracking")
    assert body["tracking"]["open"] == {"active": True, "place_at_the_top": False}
    status, sent = send(call)
    assert status == 200
    assert sent["tracking"]["opens"] is True


def test_a_broken_cname_stops_pixels_and_a_dns_timeout_does_not(call, dns_server):
    create(call)
    dns_server.set_record("email.example.com", "CNAME", TARGET)
    domain_path(call, "PUT", "example.com", "/verify")
    domain_path(call, "PUT", "example.com", "/tracking/open", {"active": "true"})
    # a DNS outage gives no definitive answer: the record shows "unknown", pixels keep flowing
    dns_server.set_fault("email.example.com", "servfail")
    status, body = domain_path(call, "PUT", "example.com", "/verify")
    assert status == 200
    assert body["sending_dns_records"][0]["valid"] == "unknown"
    assert body["domain"]["state"] == "active"
    assert send(call)[1]["tracking"]["opens"] is True
    # a record pointing elsewhere is definitive: no pixel that would be a broken image
    dns_server.set_fault("email.example.com", None)
    dns_server.set_record("email.example.com", "CNAME", "mailgun.org")
    status, body = domain_path(call, "PUT", "example.com", "/verify")
    assert status == 200
    record = body["sending_dns_records"][0]
    assert (record["valid"], record["status"], record["cached"]) == (
        "invalid",
        "wrong_target",
        ["mailgun.org"],
    )
    assert "mailgun.org" in record["detail"]
    _status, sent = send(call)
    assert (sent["tracking"]["opens"], sent["tracking"]["reason"]) == (False, "tracking-cname-invalid")
    # and fixing it resumes injection
    dns_server.set_record("email.example.com", "CNAME", TARGET)
    domain_path(call, "PUT", "example.com", "/verify")
    assert send(call)[1]["tracking"]["opens"] is True


def test_list_get_and_delete_in_v3_and_v4_forms(call):
    for name in ("b.example", "a.example", "c.example"):
        assert create(call, name)[0] == 200
    status, listing = call("GET", "/v4/domains", route="/v4/domains")
    assert status == 200
    assert [d["name"] for d in listing["items"]] == ["a.example", "b.example", "c.example"]
    assert listing["total_count"] == 3
    status, page = call("GET", "/v3/domains", route="/v3/domains", query="limit=1&skip=1")
    assert ([d["name"] for d in page["items"]], page["total_count"]) == (["b.example"], 3)
    assert domain_path(call, "GET", "a.example", version="v4")[1]["domain"]["name"] == "a.example"
    assert domain_path(call, "DELETE", "a.example")[1] == {"message": "Domain has been deleted"}
    assert domain_path(call, "GET", "a.example") == (404, {"message": "Domain not found: a.example"})
    assert domain_path(call, "DELETE", "a.example", version="v4")[0] == 404


def test_custom_web_prefix_names_the_tracking_host(call, dns_server):
    _status, body = create(call, "prefix.example", web_prefix="Track")
    assert body["sending_dns_records"][0]["name"] == "track.prefix.example"
    dns_server.set_record("track.prefix.example", "CNAME", TARGET)
    assert (
        domain_path(call, "PUT", "prefix.example", "/verify")[1]["sending_dns_records"][0]["valid"] == "valid"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "'name' parameter is missing"),
        ({"name": "not a domain"}, "'not a domain' is not a valid domain name"),
        ({"name": "localhost"}, "'localhost' is not a valid domain name"),
        ({"name": "ok.example", "web_scheme": "gopher"}, "'web_scheme' must be http or https"),
        ({"name": "ok.example", "web_prefix": "a.b"}, "'web_prefix' must be a single DNS label"),
    ],
)
def test_bad_domains_are_400(call, fields, message):
    status, body = call("POST", "/v3/domains", fields, route="/v3/domains")
    assert status == 400
    assert body["message"].startswith(message)
    assert call("GET", "/v4/domains", route="/v4/domains")[1]["total_count"] == 0


def test_duplicate_domain_is_400(call):
    create(call)
    assert create(call) == (400, {"message": "Domain example.com already exists"})


@pytest.mark.parametrize("fields", [{}, {"active": "maybe"}, {"place_at_the_top": "2"}])
def test_bad_tracking_settings_are_400(call, fields):
    create(call)
    status, body = domain_path(call, "PUT", "example.com", "/tracking/open", fields)
    assert status == 400
    assert "parameter" in body["message"]


def test_switching_tracking_off_and_moving_the_pixel_need_no_valid_cname(call):
    create(call)
    status, body = domain_path(
        call, "PUT", "example.com", "/tracking/open", {"active": "no", "place_at_the_top": "yes"}
    )
    assert (status, body["open"]) == (200, {"active": False, "place_at_the_top": True})


def test_management_routes_need_the_api_key(call):
    status, body = call("GET", "/v4/domains", route="/v4/domains", authorization="Basic YXBpOndyb25n")
    assert status == 401
    assert body["message"].startswith("Forbidden")


def test_without_a_configured_target_the_api_host_is_the_target(call, monkeypatch):
    monkeypatch.setenv("TRACKING_CNAME_TARGET", "")
    _status, body = create(call)
    assert body["sending_dns_records"][0]["value"] == "abc123.execute-api.us-east-1.amazonaws.com"
