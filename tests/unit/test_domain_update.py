"""Mailgun's domain update (`PUT /v3|v4/domains/{name}`) and web prefix (`PUT /v3/domains/{name}/web_prefix`)
in SharedTarget mode (the CustomDomains certificate work is in tests/integration/test_tracking_hosts.py)."""

from __future__ import annotations

import pytest

from opentracking.domains import registry


def domain_body(invoke):
    status, body = invoke("api", "GET", "/v3/domains/example.com")
    assert status == 200
    return body


def test_v4_update_changes_tls_settings_and_answers_with_the_domain(invoke, tracked_domain):
    fields = {"require_tls": "true", "skip_verification": "yes"}
    fields |= {"wildcard": "false", "spam_action": "disabled"}  # Mailgun settings kept at their value
    status, body = invoke("api", "PUT", "/v4/domains/example.com", fields=fields)
    assert status == 200 and body["message"] == "Domain has been updated"
    # mailgun.js reads the domain from the answer (domains.update parses body.domain)
    assert body["domain"]["name"] == "example.com"
    assert body["domain"]["require_tls"] is True and body["domain"]["skip_verification"] is True
    status, connection = invoke("api", "GET", "/v3/domains/example.com/connection")
    assert connection["connection"]["require_tls"] is True
    # tracking is untouched by a TLS change
    assert registry.get("example.com").tracking_ready is True


def test_a_new_web_prefix_moves_the_tracking_record_and_stops_pixels_until_it_checks(invoke, tracked_domain):
    status, body = invoke("api", "PUT", "/v3/domains/example.com", fields={"web_prefix": "Links"})
    assert status == 200 and body["domain"]["web_prefix"] == "links"
    tracking = next(r for r in body["sending_dns_records"] if r["purpose"] == "tracking")
    assert tracking["name"] == "links.example.com" and tracking["value"] == "t.example"
    # checked at once; this tier has no DNS to ask (sockets are blocked), so the answer is unknown, and
    # unknown never makes a host ready
    assert tracking["valid"] == "unknown"
    assert body["domain"]["state"] == "unverified"
    domain = registry.get("example.com")
    assert domain.tracking_host == "links.example.com" and domain.tracking_ready is False
    assert domain.open_tracking is True  # the setting stays; pixels wait for the new CNAME

    # the same prefix again changes nothing
    path = "/v3/domains/example.com/web_prefix"
    status, answer = invoke("api", "PUT", path, fields={"web_prefix": "links"})
    assert (status, answer) == (200, {"message": "updated web prefix"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"web_prefix": "a.b"}, "'web_prefix'"),
        ({"web_scheme": "ftp"}, "'web_scheme'"),
        ({"require_tls": "maybe"}, "require_tls"),
        ({"wildcard": "true"}, "'wildcard' can only be false"),
        ({"spam_action": "block"}, "'spam_action' can only be disabled"),
        ({"use_automatic_sender_security": "false"}, "Easy DKIM"),
        ({"smtp_password": "hunter22"}, "'smtp_password' is not supported"),
        ({"archive_to": "https://example.net/archive"}, "'archive_to' is not supported"),
        ({"message_ttl": "60"}, "'message_ttl' is not supported"),
        ({"mailfrom_host": "bounces.example.com"}, "'mailfrom_host' is mail.example.com"),
        ({"color": "blue"}, "'color' is not a setting"),
        # one bad field among good ones: nothing changes
        ({"require_tls": "true", "web_prefix": "links", "wildcard": "true"}, "'wildcard'"),
    ],
)
def test_a_setting_this_deployment_does_not_have_is_a_400_that_changes_nothing(
    invoke, tracked_domain, fields, message
):
    before = domain_body(invoke)
    status, body = invoke("api", "PUT", "/v3/domains/example.com", fields=fields)
    assert status == 400 and message in body["message"], body
    assert domain_body(invoke) == before


def test_settings_kept_fixed_are_accepted_with_their_value(invoke, tracked_domain):
    fields = {"use_automatic_sender_security": "true", "mailfrom_host": "mail.example.com"}
    fields["web_scheme"] = "http"
    assert invoke("api", "PUT", "/v3/domains/example.com", fields=fields)[0] == 200


def test_updating_an_unknown_domain_is_a_404(invoke, aws):
    assert invoke("api", "PUT", "/v4/domains/nowhere.example", fields={"require_tls": "true"})[0] == 404
    status, _ = invoke("api", "PUT", "/v3/domains/nowhere.example/web_prefix", fields={"web_prefix": "x"})
    assert status == 404
