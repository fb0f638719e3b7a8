"""GET /v3/domains/{d}/tracking/diagnose names the right cause for each failure in the seed: no CNAME,
no HTML, tracking off, a certificate problem on the tracking host; plus never loaded and bots only.

In-process under moto, with a DNS server and a TLS tracking host on 127.0.0.1."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import boto3
import pytest

from devstack.dns_server import DnsServer
from devstack.events import pixel_path
from devstack.tlslab import DAY, LoopbackServer, closed_port, make_ca, make_leaf
from opentracking.domains import registry

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])
TARGET = "track.opentracking.test"
HOST = "email.example.com"


@pytest.fixture
def lab(aws, tmp_path, monkeypatch):
    """DNS with the tracking CNAME in place, and an HTTPS tracking host with a trusted certificate."""
    now = int(time.time())
    ca = make_ca("opentracking test CA")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    good = make_leaf(tmp_path, "good", [HOST], now - DAY, now + 90 * DAY, ca)
    wrong = make_leaf(tmp_path, "wrong", ["email.other.example"], now - DAY, now + 90 * DAY, ca)
    servers = {
        "good": LoopbackServer(cert=good, headers={"Strict-Transport-Security": "max-age=31536000"}).start(),
        "wrong": LoopbackServer(cert=wrong).start(),
    }
    with DnsServer() as dns:
        dns.set_record(HOST, "CNAME", TARGET)
        dns.set_record(TARGET, "A", "127.0.0.1")
        monkeypatch.setenv("OPENTRACKING_NAMESERVERS", dns.nameserver)
        monkeypatch.setenv("TRACKING_HTTPS_PORT", str(servers["good"].port))
        monkeypatch.setenv("TRACKING_HTTP_PORT", str(closed_port()))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        monkeypatch.setenv("TRACKING_SCHEME", "https")
        registry.put(
            registry.Domain(
                name="example.com",
                cname_target=TARGET,
                open_tracking=True,
                tracking_ready=True,
                cname_valid="valid",
            )
        )
        yield dns, servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def api(lab, invoke):
    return invoke


def send(api, **fields) -> str:
    base = {
        "from": "s@example.com",
        "to": "reader@example.net",
        "html": "<html><body>hi</body></html>",
        "o:tag": "launch",
    }
    response = api(
        "submit",
        "POST",
        "/v3/example.com/messages",
        route="/v3/{domain}/messages",
        params={"domain": "example.com"},
        fields={**base, **fields},
    )
    status, body = response
    assert status == 200, body
    return body["id"]


def diagnose(api, message_id=None, recipient=None) -> dict[str, dict]:
    query = urlencode({k: v for k, v in (("message-id", message_id), ("recipient", recipient)) if v})
    response = api(
        "api",
        "GET",
        "/v3/domains/example.com/tracking/diagnose",
        query=query,
        route="/v3/domains/{name}/tracking/diagnose",
        params={"name": "example.com"},
    )
    status, body = response
    assert status == 200, body
    checks = {c["check"]: c for c in body["checks"]}
    checks["_healthy"] = body["healthy"]
    return checks


def load_pixel(
    api,
    aws,
    message_id: str,
    *,
    method="GET",
    user_agent="Mozilla/5.0 (Windows NT 10.0) Outlook",
    seconds_later: float = 120,
) -> None:
    """Load the recipient's pixel as a mail client would, `seconds_later` after acceptance."""
    table = boto3.resource("dynamodb").Table(aws.ref("DataTable"))
    copies = table.query(
        IndexName="gsi1",
        KeyConditionExpression="gsi1pk = :k",
        ExpressionAttributeValues={":k": f"COPIES#example.com#{message_id.strip('<>')}"},
    )["Items"]
    (copy,) = copies
    # move acceptance into the past, so the load is not "seconds after acceptance"
    table.update_item(
        Key={"pk": copy["pk"], "sk": "COPY"},
        UpdateExpression="SET created_at = :t",
        ExpressionAttributeValues={":t": str(time.time() - seconds_later)},
    )
    body = boto3.client("s3").get_object(Bucket=aws.ref("MessageBucket"), Key=copy["s3_key"])["Body"].read()
    token = body.decode().split("/o/", 1)[1].split('"', 1)[0]
    api(
        "pixel",
        method,
        pixel_path(token),
        route="/o/{token}",
        params={"token": token},
        headers={"user-agent": user_agent},
    )


def test_everything_in_order(api, aws):
    message_id = send(api)
    load_pixel(api, aws, message_id)
    checks = diagnose(api, message_id, "reader@example.net")
    assert checks["_healthy"] is True
    assert {name: c["status"] for name, c in checks.items() if name != "_healthy"} == {
        "certificate": "skip",  # one shared target here: no per-domain certificate
        "cname": "pass",
        "https": "pass",
        "sending_records": "skip",  # nothing is sent here (DELIVERY_TRANSPORT=none): no sending records
        "tracking_enabled": "pass",
        "html_body": "pass",
        "tag": "pass",
        "link_scheme": "pass",
        "pixel_loaded": "pass",
        "bot_opens": "pass",
    }
    # HSTS is on, and the detail says it cannot break https pixel links
    assert "HSTS" in checks["https"]["detail"] and "always https" in checks["https"]["detail"]
    assert "domain setting" in checks["tracking_enabled"]["detail"]


def test_no_cname(api, lab):
    dns, _servers = lab
    dns.remove(HOST)
    checks = diagnose(api)
    assert checks["cname"]["status"] == "fail"
    assert HOST in checks["cname"]["detail"] and TARGET in checks["cname"]["detail"]
    assert checks["_healthy"] is False


def test_no_html(api):
    message_id = send(api, html="", text="plain text only")
    checks = diagnose(api, message_id)
    assert checks["html_body"]["status"] == "fail"
    assert "no HTML part" in checks["html_body"]["detail"]


def test_tracking_off(api):
    registry.save(registry.Domain(**{**registry.get("example.com").__dict__, "open_tracking": False}))
    message_id = send(api)
    checks = diagnose(api, message_id)
    assert checks["tracking_enabled"]["status"] == "fail"
    assert "Open tracking is off for this domain" in checks["tracking_enabled"]["detail"]
    assert "domain setting decided" in checks["tracking_enabled"]["detail"]
    # and a message that switched it off says so, naming the option
    message_id = send(api, **{"o:tracking-opens": "no"})
    assert "o:tracking-opens" in diagnose(api, message_id)["tracking_enabled"]["detail"]


def test_certificate_problem_on_the_tracking_host(api, lab, monkeypatch):
    _dns, servers = lab
    monkeypatch.setenv("TRACKING_HTTPS_PORT", str(servers["wrong"].port))
    checks = diagnose(api)
    assert checks["https"]["status"] == "fail"
    assert HOST in checks["https"]["detail"] and "email.other.example" in checks["https"]["detail"]


def test_never_loaded_and_only_bots(api, aws):
    message_id = send(api)
    assert diagnose(api, message_id)["pixel_loaded"]["status"] == "fail"
    load_pixel(api, aws, message_id, method="HEAD")
    load_pixel(api, aws, message_id, user_agent="Mozilla/5.0")
    checks = diagnose(api, message_id)
    assert checks["pixel_loaded"]["status"] == "pass"
    assert checks["bot_opens"]["status"] == "warn"
    assert "HEAD" in checks["bot_opens"]["detail"] and "Apple" in checks["bot_opens"]["detail"]


def test_untagged_message_is_a_warning_not_a_failure(api):
    message_id = send(api, **{"o:tag": ""})
    checks = diagnose(api, message_id)
    assert checks["tag"]["status"] == "warn"


def test_unknown_message_and_recipient_are_404(api):
    response = api(
        "api",
        "GET",
        "/v3/domains/example.com/tracking/diagnose",
        query="message-id=%3Cnope%40x%3E",
        route="/v3/domains/{name}/tracking/diagnose",
        params={"name": "example.com"},
    )
    assert response[0] == 404
    message_id = send(api)
    response = api(
        "api",
        "GET",
        "/v3/domains/example.com/tracking/diagnose",
        query=urlencode({"message-id": message_id, "recipient": "someone@else.example"}),
        route="/v3/domains/{name}/tracking/diagnose",
        params={"name": "example.com"},
    )
    assert response[0] == 404
