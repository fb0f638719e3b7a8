"""The scheduled tracking-DNS checker, in-process under moto, against a DNS server on loopback: state,
transitions, injection stopping and resuming, EMF metrics and the S3 report."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from devstack.dns_server import DnsServer
from devstack.handlers import load_event, load_handler
from devstack.tlslab import DAY, LoopbackServer, closed_port, make_ca, make_leaf
from opentracking.core.config import settings
from opentracking.domains import registry
from opentracking.http.forms import Form
from opentracking.messages.submission import plan, track
from opentracking.tracking import tokens

TARGET = "track.opentracking.test"


@pytest.fixture
def dns_server(aws, monkeypatch):
    with DnsServer() as server:
        monkeypatch.setenv("OPENTRACKING_NAMESERVERS", server.nameserver)
        yield server


def put(name: str, *, ready: bool, open_tracking: bool = True) -> None:
    registry.put(
        registry.Domain(
            name=name,
            cname_target=TARGET,
            open_tracking=open_tracking,
            tracking_ready=ready,
            cname_valid="valid" if ready else "invalid",
        )
    )


def run_checker(lambda_context, capsys) -> tuple[dict, list[dict]]:
    """Run the scheduled function on the sample event; return its result and the EMF documents it printed."""
    capsys.readouterr()
    result = load_handler("functions/dns_health").lambda_handler(
        load_event("dns_health_schedule.json"), lambda_context
    )
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    return result, emf


def metric_values(emf: list[dict], name: str) -> list[tuple[dict, float]]:
    found = []
    for document in emf:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            if any(metric["Name"] == name for metric in directive["Metrics"]):
                dimensions = {d: document[d] for group in directive["Dimensions"] for d in group}
                values = document[name] if isinstance(document[name], list) else [document[name]]
                found.extend((dimensions, value) for value in values)
    return found


def tracked(name: str) -> bool:
    """Would a message asking for tracking get a pixel on this domain now?"""
    form = Form(
        fields=[("from", f"a@{name}"), ("to", "r@example.net"), ("html", "<p>x</p>"), ("o:tracking", "yes")]
    )
    submission = plan(form, registry.get(name), mime=False)
    track(submission, tokens.load_keyring(settings().token_secret_name), "https")
    return submission.opens_tracked


def test_checker_records_states_transitions_metrics_and_report(aws, dns_server, lambda_context, capsys):
    # GIVEN a healthy domain whose CNAME has just been removed, a broken one that was fixed, one that
    # stays healthy and one that never had a record (tracking off)
    put("broken.example", ready=True)
    put("fixed.example", ready=False)
    put("steady.example", ready=True)
    put("new.example", ready=False, open_tracking=False)
    dns_server.set_record("fixed.example", "A", "192.0.2.1")  # the parent exists; the tracking host does not
    dns_server.set_record("email.fixed.example", "CNAME", TARGET)
    dns_server.set_record("email.steady.example", "CNAME", "alias.steady.example")
    dns_server.set_record("alias.steady.example", "CNAME", TARGET)
    assert tracked("broken.example") and not tracked("fixed.example")

    # WHEN the scheduled checker runs
    result, emf = run_checker(lambda_context, capsys)

    # THEN each domain's state is recorded, and the API would show it
    states = {
        d: registry.get(d) for d in ("broken.example", "fixed.example", "steady.example", "new.example")
    }
    assert {d: s.cname_valid for d, s in states.items()} == {
        "broken.example": "invalid",
        "fixed.example": "valid",
        "steady.example": "valid",
        "new.example": "invalid",
    }
    assert states["steady.example"].cname_found == ["alias.steady.example", TARGET]
    assert states["broken.example"].cname_status == "nxdomain"
    assert all(s.cname_checked_at for s in states.values())
    # AND injection stopped for the broken domain and resumed for the fixed one
    assert not tracked("broken.example")
    assert tracked("fixed.example")
    # AND the totals, as metrics and in the report
    assert result["totals"] == {
        "checked": 4,
        "valid": 2,
        "invalid": 2,
        "unknown": 0,
        "unhealthy": 1,
        "broke": 1,
        "recovered": 1,
        "https_broken": 2,  # both valid hosts point at a target with no address here
        "hosts_not_serving": 0,  # one shared target: no per-domain certificates to wait for
        "validation_records_missing": 0,
        "sending_records_invalid": 0,  # no transport here (DELIVERY_TRANSPORT=none): no sending records
        "certificates_awaiting_deletion": 0,
    }
    assert metric_values(emf, "TrackingDomainsUnhealthy") == [({"service": "opentracking"}, 1.0)]
    assert metric_values(emf, "CnameBroke") == [({"service": "opentracking"}, 1.0)]
    assert metric_values(emf, "CnameRecovered") == [({"service": "opentracking"}, 1.0)]
    per_domain = {dims["domain"]: value for dims, value in metric_values(emf, "TrackingCnameValid")}
    assert per_domain == {"broken.example": 0, "fixed.example": 1, "steady.example": 1, "new.example": 0}
    s3 = boto3.client("s3")
    bucket = aws.ref("MessageBucket")
    report = json.loads(s3.get_object(Bucket=bucket, Key=result["report"])["Body"].read())
    latest = json.loads(s3.get_object(Bucket=bucket, Key="health/latest.json")["Body"].read())
    assert report == latest
    by_domain = {d["domain"]: d for d in report["domains"]}
    assert by_domain["broken.example"]["transition"] == "broke"
    assert by_domain["fixed.example"]["transition"] == "recovered"
    assert by_domain["broken.example"]["detail"]
    assert by_domain["steady.example"]["cached"] == ["alias.steady.example", TARGET]


def test_a_dns_outage_changes_no_injection_decision(aws, dns_server, lambda_context, capsys):
    put("flaky.example", ready=True)
    dns_server.set_record("email.flaky.example", "CNAME", TARGET)
    dns_server.set_fault("email.flaky.example", "servfail")
    result, emf = run_checker(lambda_context, capsys)
    assert registry.get("flaky.example").cname_valid == "unknown"
    assert tracked("flaky.example")
    assert result["totals"]["unknown"] == 1 and result["totals"]["broke"] == 0
    assert metric_values(emf, "TrackingDomainsUnhealthy") == [({"service": "opentracking"}, 0.0)]


def test_no_domains_still_reports_zero(aws, dns_server, lambda_context, capsys):
    result, emf = run_checker(lambda_context, capsys)
    assert result["totals"]["checked"] == 0
    assert metric_values(emf, "DomainsChecked") == [({"service": "opentracking"}, 0.0)]


def test_checker_reports_the_certificate_served_on_valid_tracking_hosts(
    aws, dns_server, lambda_context, capsys, tmp_path, monkeypatch
):
    # GIVEN a tracking host that resolves to a loopback HTTPS server with a trusted 90-day certificate
    now = int(time.time())
    ca = make_ca("test CA")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = LoopbackServer(
        cert=make_leaf(tmp_path, "leaf", ["email.tls.example"], now - DAY, now + 90 * DAY, ca)
    )
    server.start()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("TRACKING_HTTPS_PORT", str(server.port))
    monkeypatch.setenv("TRACKING_HTTP_PORT", str(closed_port()))
    put("tls.example", ready=True)
    dns_server.set_record("email.tls.example", "CNAME", TARGET)
    dns_server.set_record(TARGET, "A", "127.0.0.1")
    try:
        # WHEN the checker runs
        result, emf = run_checker(lambda_context, capsys)
    finally:
        server.stop()
    # THEN the domain records the certificate, and its days left are a per-domain metric
    domain = registry.get("tls.example")
    assert domain.https_status == "ok"
    assert domain.cert_days_left in (89, 90)  # 90 days from a moment ago
    assert domain.tracking_record()["https"]["status"] == "ok"
    assert result["totals"]["https_broken"] == 0
    assert metric_values(emf, "TrackingCertDaysLeft") == [
        ({"service": "opentracking", "domain": "tls.example"}, 89.0)
    ]
