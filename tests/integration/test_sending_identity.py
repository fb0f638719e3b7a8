"""The sending identity through the local stack (issue 17): with SES, creating a domain creates its SES
identity with Easy DKIM and a custom MAIL FROM, and `sending_dns_records` lists SPF, DKIM, MAIL FROM and the
tracking CNAME in Mailgun's order; published in the stack's DNS, verify finds every one valid; the scheduled
checker reports a DKIM record removed from DNS, and diagnose names the step; deleting the domain deletes
the identity. With SMTP: the relay's SPF include where the operator named one, else a note."""

from __future__ import annotations

import json

import pytest

from devstack.process import start_stack
from devstack.ses_simulator import dkim_tokens
from tests.helpers.polling import wait_for

DOMAIN = "identity.example.com"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = start_stack(
        tmp_path_factory.mktemp("identity-stack"),
        extra_env={"DELIVERY_TRANSPORT": "ses", "LOCAL_SCHEDULE_SECONDS": "1"},
    )
    yield running
    assert running.stop() == 0, "\n".join(running.output[-40:])


def records(stack, name: str = DOMAIN) -> list[dict]:
    response = stack.call("GET", f"/v3/domains/{name}")
    assert response.status_code == 200, response.text
    return response.json()["sending_dns_records"]


def test_ses_identity_records_are_listed_checked_and_a_removed_dkim_record_is_reported(stack):
    verified = stack.create_tracked_domain(DOMAIN)
    listed = verified["sending_dns_records"]
    tokens = dkim_tokens(DOMAIN)
    region = stack.client("sesv2").meta.region_name
    assert [(r["record_type"], r["name"], r["value"]) for r in listed[:6]] == [
        ("TXT", DOMAIN, "v=spf1 include:amazonses.com ~all"),
        *[("CNAME", f"{t}._domainkey.{DOMAIN}", f"{t}.dkim.amazonses.com") for t in tokens],
        ("MX", f"mail.{DOMAIN}", f"feedback-smtp.{region}.amazonses.com"),
        ("TXT", f"mail.{DOMAIN}", "v=spf1 include:amazonses.com ~all"),
    ]
    assert [r["purpose"] for r in listed] == [
        "spf",
        "dkim",
        "dkim",
        "dkim",
        "mail_from",
        "mail_from",
        "tracking",
    ]
    assert listed[4]["priority"] == "10"
    assert verified["receiving_dns_records"] == []  # this deployment receives no mail
    # published as a customer would, every record checks valid, with what DNS holds
    assert [r["valid"] for r in listed] == ["valid"] * 7, json.dumps(listed, indent=1)
    assert listed[1]["cached"] == [listed[1]["value"]]
    assert listed[0]["cached"] == ["v=spf1 include:amazonses.com ~all"]

    identity = stack.client("sesv2").get_email_identity(EmailIdentity=DOMAIN)
    assert identity["DkimAttributes"]["SigningEnabled"] is True
    assert identity["DkimAttributes"]["NextSigningKeyLength"] == "RSA_2048_BIT"
    assert identity["MailFromAttributes"]["MailFromDomain"] == f"mail.{DOMAIN}"

    # WHEN a DKIM record goes from DNS, the scheduled checker (no verify) reports it
    dkim = listed[2]["name"]
    assert stack.call("DELETE", f"/_local/dns/{dkim}").status_code == 200
    broken = wait_for(lambda: [r for r in records(stack) if r["valid"] == "invalid"])
    assert [r["name"] for r in broken] == [dkim]
    assert f"add a CNAME record for {dkim} with the value {listed[2]['value']}" in broken[0]["detail"]
    report = json.loads(
        stack.client("s3")
        .get_object(Bucket=stack.resource("MessageBucket"), Key="health/latest.json")["Body"]
        .read()
    )
    assert report["totals"]["sending_records_invalid"] == 1
    # AND diagnose names the same step
    diagnosed = stack.call("GET", f"/v3/domains/{DOMAIN}/tracking/diagnose").json()
    (check,) = [c for c in diagnosed["checks"] if c["check"] == "sending_records"]
    assert check["status"] == "fail" and dkim in check["detail"]
    # AND publishing it again heals it at the next run
    stack.publish_dns(dkim, "CNAME", listed[2]["value"])
    assert wait_for(lambda: all(r["valid"] == "valid" for r in records(stack)))

    # deleting the domain deletes its SES identity
    assert stack.call("DELETE", f"/v3/domains/{DOMAIN}").status_code == 200
    names = [i["IdentityName"] for i in stack.client("sesv2").list_email_identities()["EmailIdentities"]]
    assert DOMAIN not in names


def test_an_ses_spf_record_without_the_include_is_named(stack):
    name = "spf.example.com"
    stack.create_tracked_domain(name)
    stack.publish_dns(name, "TXT", '"v=spf1 include:_spf.google.com ~all"')
    assert stack.call("PUT", f"/v3/domains/{name}/verify").status_code == 200
    (spf,) = [r for r in records(stack, name) if r["purpose"] == "spf"]
    assert spf["valid"] == "invalid" and spf["cached"] == ["v=spf1 include:_spf.google.com ~all"]
    assert "without include:amazonses.com" in spf["detail"]


@pytest.mark.parametrize(
    ("env", "purposes", "note"),
    [
        ({"SMTP_SPF_INCLUDE": "spf.relay.example"}, ["spf", "tracking"], None),
        ({}, ["tracking"], "None is checked"),
    ],
    ids=["named include", "no include"],
)
def test_with_smtp_the_records_are_the_relays(tmp_path_factory, env, purposes, note):
    running = start_stack(
        tmp_path_factory.mktemp("smtp-identity"), extra_env={"DELIVERY_TRANSPORT": "smtp", **env}
    )
    try:
        created = running.call("POST", "/v3/domains", data={"name": "relay.example.com"}).json()
        assert [r["purpose"] for r in created["sending_dns_records"]] == purposes
        if env:
            assert created["sending_dns_records"][0]["value"] == "v=spf1 include:spf.relay.example ~all"
        else:
            assert note in created["sending_identity"]["note"]
        assert running.client("sesv2").list_email_identities()["EmailIdentities"] == []
    finally:
        assert running.stop() == 0
