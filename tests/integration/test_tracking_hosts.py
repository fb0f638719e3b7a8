"""HTTPS for every tracking host: the per-domain certificate and custom domain state machine, through the
real API and checker handlers, on moto's ACM and API Gateway v2, with the customer's DNS played by a DNS
server on loopback.

moto is taught (devstack.moto_fidelity) to report a custom domain's target hostname and to update a custom
domain's certificate, as AWS documents both; one test removes the target again to show what the code does
when it is missing.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import settings as moto_settings
from moto.acm.models import acm_backends
from moto.apigatewayv2.models import apigatewayv2_backends

from devstack import moto_fidelity
from devstack.dns_server import DnsServer
from devstack.events import make_http_event
from devstack.handlers import load_event, load_handler
from opentracking.core.aws import client
from opentracking.core.config import settings
from opentracking.domains import registry, tracking_hosts
from opentracking.http.forms import Form
from opentracking.messages.submission import plan, track
from opentracking.tracking import tokens

DOMAIN = "example.com"
HOST = f"email.{DOMAIN}"
ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture
def world(aws, monkeypatch, basic_auth, lambda_context):
    """CustomDomains mode, an HTTP API in moto to map to, and the customer's DNS on loopback."""
    moto_fidelity.apply()
    monkeypatch.setenv("TRACKING_HOSTS", "CustomDomains")
    monkeypatch.setenv("STACK_NAME", "opentracking-test")
    monkeypatch.setattr(moto_settings, "ACM_VALIDATION_WAIT", 10**6)  # pending until a test says ACM saw DNS
    api_id = boto3.client("apigatewayv2").create_api(Name="opentracking-test", ProtocolType="HTTP")["ApiId"]
    with DnsServer() as dns:
        monkeypatch.setenv("OPENTRACKING_NAMESERVERS", dns.nameserver)
        yield World(dns=dns, api_id=api_id, auth=basic_auth, context=lambda_context, monkeypatch=monkeypatch)


class World:
    def __init__(self, *, dns, api_id, auth, context, monkeypatch):
        self.dns, self.api_id, self.auth, self.context, self.monkeypatch = (
            dns,
            api_id,
            auth,
            context,
            monkeypatch,
        )

    def api(self, method: str, path: str, route: str, params: dict | None = None, fields: dict | None = None):
        headers = {"authorization": self.auth}
        body = None
        if fields is not None:
            body = urlencode(fields).encode()
            headers["content-type"] = "application/x-www-form-urlencoded"
        event = make_http_event(
            method,
            path,
            route_key=f"{method} {route}",
            path_parameters=params,
            headers=headers,
            body=body,
            api_id=self.api_id,
        )
        response = load_handler("functions/api").lambda_handler(event, self.context)
        return response["statusCode"], json.loads(response["body"])

    def create(self) -> dict:
        status, body = self.api("POST", "/v3/domains", "/v3/domains", fields={"name": DOMAIN})
        assert status == 200, body
        return body

    def get(self) -> dict:
        status, body = self.api("GET", f"/v3/domains/{DOMAIN}", "/v3/domains/{name}", {"name": DOMAIN})
        assert status == 200, body
        return body

    def verify(self) -> dict:
        status, body = self.api(
            "PUT", f"/v3/domains/{DOMAIN}/verify", "/v3/domains/{name}/verify", {"name": DOMAIN}
        )
        assert status == 200, body
        return body

    def enable_opens(self) -> tuple[int, dict]:
        return self.api(
            "PUT",
            f"/v3/domains/{DOMAIN}/tracking/open",
            "/v3/domains/{name}/tracking/open",
            {"name": DOMAIN},
            fields={"active": "yes"},
        )

    def check(self) -> dict:
        return load_handler("functions/dns_health").lambda_handler(
            load_event("dns_health_schedule.json"), self.context
        )

    def acm_issues(self) -> None:
        """ACM saw the validation record (moto issues pending certificates on the next read)."""
        self.monkeypatch.setattr(moto_settings, "ACM_VALIDATION_WAIT", 0)

    def publish(self, record: dict) -> None:
        self.dns.set_record(record["name"], "CNAME", record["value"])


def records(body: dict) -> tuple[dict, dict]:
    tracking, validation = body["sending_dns_records"]
    assert tracking["purpose"] == "tracking" and validation["purpose"] == "certificate_validation"
    return tracking, validation


def certificates() -> dict:
    return acm_backends[ACCOUNT][REGION]._certificates


def custom_domains() -> dict:
    return apigatewayv2_backends[ACCOUNT][REGION].domain_names


def mappings() -> dict:
    return apigatewayv2_backends[ACCOUNT][REGION].api_mappings


def test_creating_a_domain_requests_a_dns_validated_certificate_and_returns_both_records(world):
    body = world.create()
    tracking, validation = records(body)
    assert body["tracking_host"]["state"] == "certificate_pending"
    (arn,) = certificates()
    certificate = client("acm").describe_certificate(CertificateArn=arn)["Certificate"]
    assert certificate["DomainName"] == HOST and certificate["Status"] == "PENDING_VALIDATION"
    tags = client("acm").list_tags_for_certificate(CertificateArn=arn)["Tags"]
    assert {"Key": "opentracking:stack", "Value": "opentracking-test"} in tags
    # ACM's own record, trailing dot removed; nothing served yet, so it is invalid.
    expected = certificate["DomainValidationOptions"][0]["ResourceRecord"]
    assert validation["name"] == expected["Name"].rstrip(".") and validation["name"].endswith(f".{HOST}")
    assert validation["value"] == expected["Value"].rstrip(".")
    assert validation["valid"] == "invalid" and validation["certificate"]["status"] == "PENDING_VALIDATION"
    # Its value is the custom domain's target, which does not exist yet: unknown, not invented.
    assert tracking["name"] == HOST and tracking["value"] == "" and tracking["valid"] == "unknown"
    assert validation["name"] in body["tracking_host"]["next_step"]
    assert custom_domains() == {}
    # Tracking cannot be switched on before the host serves HTTPS; the answer says what to do.
    status, error = world.enable_opens()
    assert status == 400 and "serves HTTPS" in error["message"] and validation["name"] in error["message"]


def test_once_dns_serves_both_records_the_checker_maps_the_host_and_pixels_are_https_on_it(world):
    _tracking, validation = records(world.create())
    world.publish(validation)
    world.acm_issues()
    result = world.check()
    assert result["totals"]["hosts_not_serving"] == 0

    body = world.get()
    tracking, validation = records(body)
    assert body["tracking_host"]["state"] == "mapped"
    assert validation["valid"] == "valid" and validation["is_active"] is True
    (custom_domain,) = custom_domains().values()
    (configuration,) = custom_domain.domain_name_configurations
    (arn,) = certificates()
    assert custom_domain.domain_name == HOST and configuration["certificateArn"] == arn
    assert configuration["endpointType"] == "REGIONAL" and configuration["securityPolicy"] == "TLS_1_2"
    (mapping,) = mappings().values()
    assert (mapping.api_id, mapping.domain_name, mapping.stage) == (world.api_id, HOST, "$default")
    # The tracking CNAME's value is now what API Gateway reports as the custom domain's target.
    assert tracking["value"] == configuration["apiGatewayDomainName"]
    assert tracking["value"].startswith("d-") and tracking["value"].endswith(
        ".execute-api.us-east-1.amazonaws.com"
    )
    assert body["tracking_host"]["hosted_zone_id"] == "Z1UJRXOUMOOFQ8"
    assert tracking["valid"] == "invalid"  # not published yet
    assert tracking["value"] in body["tracking_host"]["next_step"]

    world.publish(tracking)
    world.check()
    body = world.get()
    tracking, _validation = records(body)
    assert body["tracking_host"]["state"] == "ready" and tracking["valid"] == "valid"
    assert body["domain"]["state"] == "active"
    status, answer = world.enable_opens()
    assert status == 200 and answer["open"]["active"] is True

    form = Form(fields=[("from", f"a@{DOMAIN}"), ("to", "r@example.net"), ("html", "<p>x</p>")])
    submission = plan(form, registry.get(DOMAIN), mime=False)
    track(submission, tokens.load_keyring(settings().token_secret_name), "https")
    (copy,) = submission.copies
    assert copy.tracked and f'src="https://{HOST}/o/' in copy.message.decode()
    # Running the checker again changes nothing and calls nothing new.
    world.check()
    assert len(certificates()) == 1 and len(custom_domains()) == 1 and len(mappings()) == 1


def serve(world, validation: dict) -> dict:
    """The customer publishes ACM's validation record, ACM issues and the checker maps the host; then the
    tracking CNAME is published and checked: the host is ready."""
    world.publish(validation)
    world.acm_issues()
    world.check()
    tracking, _validation = records(world.get())
    world.publish(tracking)
    world.check()
    body = world.get()
    assert body["tracking_host"]["state"] == "ready"
    return body


def ready(world) -> dict:
    _tracking, validation = records(world.create())
    body = serve(world, validation)
    assert world.enable_opens()[0] == 200
    return body


def test_a_removed_validation_record_is_reported_because_acm_could_not_renew(world):
    body = ready(world)
    _tracking, validation = records(body)
    world.dns.remove(validation["name"])
    result = world.check()
    assert result["totals"]["validation_records_missing"] == 1
    body = world.get()
    _tracking, validation = records(body)
    assert validation["valid"] == "invalid"
    # Still serving (the certificate is valid today), but the next step says why it will stop.
    assert body["tracking_host"]["state"] == "ready" and body["domain"]["state"] == "active"
    assert "cannot renew" in body["tracking_host"]["next_step"]
    assert "days" in body["tracking_host"]["next_step"]


def test_a_failed_certificate_stops_pixels_and_verify_requests_a_new_one(world):
    ready(world)
    (arn,) = certificates()
    certificates()[arn].status = "FAILED"
    result = world.check()
    assert result["totals"]["hosts_not_serving"] == 1 and result["totals"]["broke"] == 1
    body = world.get()
    assert body["tracking_host"]["state"] == "certificate_failed" and body["domain"]["state"] == "unverified"
    assert "verify" in body["tracking_host"]["next_step"]
    assert list(certificates()) == [arn]  # the checker only reports; it does not loop on ACM
    world.check()
    assert list(certificates()) == [arn]

    body = world.verify()  # the user asked: a new certificate (ACM issues it at once here)
    (new_arn,) = set(certificates()) - {arn}
    (configuration,) = next(iter(custom_domains().values())).domain_name_configurations
    assert configuration["certificateArn"] == new_arn  # the custom domain took the new certificate ...
    assert body["tracking_host"]["state"] == "ready"  # ... and kept its target, so the CNAME is still valid
    assert body["domain"]["state"] == "active"


def test_an_expired_certificate_is_replaced_on_verify_and_the_target_does_not_move(world):
    body = ready(world)
    tracking, _validation = records(body)
    (arn,) = certificates()
    certificates()[arn].status = "EXPIRED"
    world.check()
    body = world.get()
    assert body["tracking_host"]["state"] == "certificate_expired" and body["domain"]["state"] == "unverified"
    status, error = world.enable_opens()
    assert status == 400 and "expired" in error["message"]
    # The setting stays on; pixels stop until HTTPS works again, then resume by themselves.
    assert registry.get(DOMAIN).open_tracking is True
    body = world.verify()
    assert body["tracking_host"]["state"] == "ready"
    assert records(body)[0]["value"] == tracking["value"]


def test_a_cname_pointing_elsewhere_leaves_the_host_mapped_and_pixels_off(world):
    body = ready(world)
    world.dns.set_record(HOST, "CNAME", "somewhere-else.example.net")
    result = world.check()
    assert result["totals"]["broke"] == 1
    body = world.get()
    tracking, _validation = records(body)
    assert tracking["valid"] == "invalid" and tracking["status"] == "wrong_target"
    assert body["tracking_host"]["state"] == "mapped" and body["domain"]["state"] == "unverified"


def test_a_custom_domain_without_a_reported_target_is_unknown_never_guessed(world):
    _tracking, validation = records(world.create())
    world.publish(validation)
    world.acm_issues()
    world.check()
    (custom_domain,) = custom_domains().values()
    for configuration in custom_domain.domain_name_configurations:
        configuration.pop("apiGatewayDomainName")  # what plain moto (or AWS, for a moment) answers
    world.dns.reset_queries()
    world.check()
    body = world.get()
    tracking, _validation = records(body)
    assert body["tracking_host"]["state"] == "target_unknown"
    assert tracking["value"] == "" and tracking["valid"] == "unknown" and tracking["status"] == "no_target"
    assert "target" in tracking["detail"]
    assert world.dns.query_count(HOST) == 0  # nothing to compare with, so nothing asked
    assert world.enable_opens()[0] == 400


def test_deleting_a_domain_removes_mapping_custom_domain_and_certificate_and_can_be_repeated(world):
    ready(world)
    status, _ = world.api("DELETE", f"/v3/domains/{DOMAIN}", "/v3/domains/{name}", {"name": DOMAIN})
    assert status == 200
    assert certificates() == {} and custom_domains() == {} and mappings() == {}
    # A domain created again starts over with a new certificate.
    world.create()
    assert len(certificates()) == 1


def test_a_delete_interrupted_after_aws_cleanup_finishes_when_repeated(world):
    ready(world)
    domain = registry.get(DOMAIN)
    tracking_hosts.release(domain.host, domain.tracking_host)  # a first attempt that died before the record
    assert certificates() == {} and custom_domains() == {}
    status, _ = world.api("DELETE", f"/v3/domains/{DOMAIN}", "/v3/domains/{name}", {"name": DOMAIN})
    assert status == 200
    assert world.api("GET", f"/v3/domains/{DOMAIN}", "/v3/domains/{name}", {"name": DOMAIN})[0] == 404


def fail_once(service: str, operation: str, code: str):
    calls = []

    def hook(**_):
        calls.append(operation)
        if len(calls) == 1:
            raise ClientError({"Error": {"Code": code, "Message": "injected"}}, operation)

    client(service).meta.events.register(f"before-call.{service}.{operation}", hook)
    return calls


def test_an_acm_outage_on_create_keeps_the_domain_and_the_checker_requests_later(world):
    calls = fail_once("acm", "RequestCertificate", "ThrottlingException")
    body = world.create()
    assert body["tracking_host"]["state"] == "not_requested"
    assert "ThrottlingException" in body["tracking_host"]["next_step"]
    assert certificates() == {} and len(body["sending_dns_records"]) == 1
    world.check()
    assert len(calls) == 2 and len(certificates()) == 1
    assert world.get()["tracking_host"]["state"] == "certificate_pending"


def test_a_certificate_still_in_use_is_deleted_by_a_later_check(world):
    ready(world)
    (arn,) = certificates()
    calls = fail_once("acm", "DeleteCertificate", "ResourceInUseException")
    assert world.api("DELETE", f"/v3/domains/{DOMAIN}", "/v3/domains/{name}", {"name": DOMAIN})[0] == 200
    assert list(certificates()) == [arn]  # API Gateway had not let go yet
    result = world.check()
    assert result["totals"]["certificates_awaiting_deletion"] == 0 and len(calls) == 2
    assert certificates() == {}


def test_the_http_scheme_is_accepted_for_mailgun_compatibility_but_links_stay_https(world):
    status, body = world.api(
        "POST", "/v3/domains", "/v3/domains", fields={"name": DOMAIN, "web_scheme": "http"}
    )
    assert status == 200 and body["domain"]["web_scheme"] == "https"
    status, body = world.api(
        "POST", "/v3/domains", "/v3/domains", fields={"name": "other.example", "web_scheme": "ftp"}
    )
    assert status == 400 and "web_scheme" in body["message"]


def test_shared_target_mode_provisions_nothing_per_domain(world):
    world.monkeypatch.setenv("TRACKING_HOSTS", "SharedTarget")
    body = world.create()
    assert body["tracking_host"]["state"] == "shared" and len(body["sending_dns_records"]) == 1
    world.check()
    assert certificates() == {} and custom_domains() == {}


def diagnose(world) -> dict:
    status, body = world.api(
        "GET",
        f"/v3/domains/{DOMAIN}/tracking/diagnose",
        "/v3/domains/{name}/tracking/diagnose",
        {"name": DOMAIN},
    )
    assert status == 200, body
    return {check["check"]: check for check in body["checks"]}


def test_diagnose_names_the_next_step_of_each_state(world):
    _tracking, validation = records(world.create())
    checks = diagnose(world)
    assert checks["certificate"]["status"] == "fail" and validation["name"] in checks["certificate"]["detail"]
    assert checks["cname"]["status"] == "fail"  # no target to point at yet, and it says why
    world.publish(validation)
    world.acm_issues()
    world.check()
    tracking, _validation = records(world.get())
    checks = diagnose(world)
    assert checks["certificate"]["status"] == "warn" and tracking["value"] in checks["certificate"]["detail"]
    world.publish(tracking)
    world.check()
    checks = diagnose(world)
    assert checks["certificate"]["status"] == "pass" and checks["cname"]["status"] == "pass"


def test_a_failed_renewal_is_named_with_the_days_left(world):
    ready(world)
    (arn,) = certificates()

    def renewal_failed(parsed, **_):
        parsed["Certificate"]["RenewalSummary"] = {"RenewalStatus": "FAILED"}  # what ACM reports then

    client("acm").meta.events.register("after-call.acm.DescribeCertificate", renewal_failed)
    world.check()
    body = world.get()
    assert body["tracking_host"]["state"] == "ready"
    assert (
        "failed to renew" in body["tracking_host"]["next_step"]
        and "days" in body["tracking_host"]["next_step"]
    )
    assert records(body)[1]["certificate"]["renewal_status"] == "FAILED"
    assert list(certificates()) == [arn]


def test_a_custom_domain_someone_else_created_is_neither_adopted_nor_deleted(world):
    _tracking, validation = records(world.create())
    (arn,) = certificates()
    boto3.client("apigatewayv2").create_domain_name(  # the same name, made outside this stack, untagged
        DomainName=HOST, DomainNameConfigurations=[{"CertificateArn": arn, "EndpointType": "REGIONAL"}]
    )
    world.publish(validation)
    world.acm_issues()
    world.check()
    body = world.get()
    assert body["tracking_host"]["state"] == "certificate_issued"
    assert "another stack" in body["tracking_host"]["detail"] and mappings() == {}
    assert world.api("DELETE", f"/v3/domains/{DOMAIN}", "/v3/domains/{name}", {"name": DOMAIN})[0] == 200
    assert list(custom_domains()) == [HOST]  # still theirs


# --- a changed web prefix ----------------------------------------------------------------------------


def change_prefix(world, prefix: str) -> tuple[int, dict]:
    return world.api(
        "PUT",
        f"/v3/domains/{DOMAIN}/web_prefix",
        "/v3/domains/{name}/web_prefix",
        {"name": DOMAIN},
        fields={"web_prefix": prefix},
    )


def tracked_copy_html() -> str | None:
    form = Form(fields=[("from", f"a@{DOMAIN}"), ("to", "r@example.net"), ("html", "<p>x</p>")])
    submission = plan(form, registry.get(DOMAIN), mime=False)
    track(submission, tokens.load_keyring(settings().token_secret_name), "https")
    (copy,) = submission.copies
    return copy.message.decode() if copy.tracked else None


def test_a_new_web_prefix_starts_a_new_host_and_the_old_one_serves_sent_pixels_until_they_expire(world):
    ready(world)
    (old_arn,) = certificates()
    assert f"https://{HOST}/o/" in tracked_copy_html()

    world.monkeypatch.setattr(moto_settings, "ACM_VALIDATION_WAIT", 10**6)  # ACM has not seen the new record
    assert change_prefix(world, "Track") == (200, {"message": "updated web prefix"})
    body = world.get()
    tracking, validation = records(body)
    new_host = f"track.{DOMAIN}"
    assert body["domain"]["web_prefix"] == "track" and body["domain"]["state"] == "unverified"
    assert tracking["name"] == new_host and tracking["valid"] == "unknown" and tracking["value"] == ""
    assert body["tracking_host"]["state"] == "certificate_pending" and validation["name"].endswith(new_host)
    # no pixel points anywhere until the new host serves; open tracking stays switched on
    assert tracked_copy_html() is None
    assert registry.get(DOMAIN).open_tracking is True
    # the old host keeps its certificate, custom domain and mapping: messages already sent point at it
    assert old_arn in certificates() and len(certificates()) == 2
    assert HOST in custom_domains() and len(mappings()) == 1

    # the new host comes up as the first one did, and pixels move to it
    serve(world, validation)
    assert f"https://{new_host}/o/" in tracked_copy_html()
    assert HOST in custom_domains()  # still within the retention of the copies sent on it

    # once those copies have expired the old host is released, and only it
    later = time.time() + settings().event_retention_days * 86400 + 1
    tracking_hosts.release_retired(now=later)
    assert old_arn not in certificates() and len(certificates()) == 1
    assert set(custom_domains()) == {new_host} and len(mappings()) == 1


def test_changing_the_prefix_back_takes_the_old_host_into_use_again(world):
    ready(world)
    (old_arn,) = certificates()
    assert change_prefix(world, "track")[0] == 200
    assert change_prefix(world, "email")[0] == 200
    world.check()
    body = world.get()
    assert body["domain"]["web_prefix"] == "email" and body["tracking_host"]["state"] == "ready"
    assert f"https://{HOST}/o/" in tracked_copy_html()
    # the host given up for "track" is the one waiting for release now, not the one in use
    tracking_hosts.release_retired(now=time.time() + 10**9)
    assert set(certificates()) == {old_arn} and set(custom_domains()) == {HOST}


def test_deleting_a_domain_releases_the_hosts_of_its_earlier_prefixes_too(world):
    ready(world)
    assert change_prefix(world, "track")[0] == 200
    status, _ = world.api("DELETE", f"/v3/domains/{DOMAIN}", "/v3/domains/{name}", {"name": DOMAIN})
    assert status == 200
    assert certificates() == {} and custom_domains() == {} and mappings() == {}


@pytest.mark.parametrize("prefix", ["", "two.labels", "-bad", "x" * 64, "ünï"])
def test_a_bad_prefix_is_a_400_that_changes_nothing(world, prefix):
    before = ready(world)
    status, body = change_prefix(world, prefix)
    assert status == 400 and "web_prefix" in body["message"]
    assert world.get()["domain"] == before["domain"] and len(certificates()) == 1


# --- Mailgun's tracking certificate API (/v2/x509) ----------------------------------------------------


def x509(world, method: str, name: str = HOST) -> tuple[int, dict]:
    if method == "GET":
        return world.api("GET", f"/v2/x509/{name}/status", "/v2/x509/{name}/status", {"name": name})
    return world.api(method, f"/v2/x509/{name}", "/v2/x509/{name}", {"name": name})


def test_the_certificate_status_follows_the_host_from_processing_to_active(world):
    _tracking, validation = records(world.create())
    status, body = x509(world, "GET")
    assert status == 200 and body["status"] == "processing" and body["certificate"] == ""
    assert validation["name"] in body["error"]  # what to publish
    assert x509(world, "GET", DOMAIN)[1]["status"] == "processing"  # the sending domain names it too
    world.publish(validation)
    world.acm_issues()
    world.check()
    status, body = x509(world, "GET")
    assert status == 200 and body["status"] == "active" and body["error"] == ""
    assert body["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert x509(world, "GET", "other.example.com")[0] == 404
    assert x509(world, "GET", f"links.{DOMAIN}")[0] == 404  # not this domain's web prefix


def test_generate_requests_the_first_certificate_and_refuses_a_second(world):
    calls = fail_once("acm", "RequestCertificate", "ThrottlingException")
    assert world.create()["tracking_host"]["state"] == "not_requested" and calls
    assert certificates() == {}
    status, body = x509(world, "POST")
    assert status == 202
    assert body == {"message": "Initiated x509 key pair generation", "location": f"/v2/x509/{HOST}/status"}
    assert len(certificates()) == 1 and world.get()["tracking_host"]["state"] == "certificate_pending"
    status, body = x509(world, "POST")
    assert status == 409 and "already has a certificate" in body["message"]
    assert len(certificates()) == 1


def test_regenerate_replaces_an_expired_certificate_and_leaves_a_valid_one(world):
    ready(world)
    status, body = x509(world, "PUT")
    assert status == 409 and "still valid" in body["message"]
    (arn,) = certificates()
    certificates()[arn].status = "EXPIRED"
    world.check()
    status, body = x509(world, "GET")
    assert body["status"] == "expired" and body["error"].startswith("x509 certificate has expired")
    status, body = x509(world, "PUT")
    assert status == 202 and body["location"] == f"/v2/x509/{HOST}/status"
    assert len(certificates()) == 2 and x509(world, "GET")[1]["status"] == "active"


def test_a_shared_target_has_no_certificate_to_generate_and_checks_the_host_again(world):
    world.monkeypatch.setenv("TRACKING_HOSTS", "SharedTarget")
    world.create()
    assert x509(world, "GET")[1] == {"status": "processing", "error": "not checked yet", "certificate": ""}
    before = registry.get(DOMAIN).cname_checked_at
    for method in ("POST", "PUT"):
        status, body = x509(world, method)
        assert status == 202 and "SharedTarget" in body["message"]
        assert body["location"] == f"/v2/x509/{HOST}/status"
    assert registry.get(DOMAIN).cname_checked_at > before  # checked again
    assert certificates() == {}
