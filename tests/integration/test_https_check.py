"""The tracking-host HTTPS checker against real TLS and HTTP servers and a real DNS server on 127.0.0.1.

Certificates come from a test CA made with `trustme`; the checker trusts it through `ca_file`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from devstack.dns_server import DnsServer
from devstack.tlslab import DAY, LoopbackServer, closed_port, iso, make_ca, make_leaf
from opentracking.domains.dns_check import make_resolver
from opentracking.domains.https_check import (
    HTTP_PORT_ENV,
    HTTPS_PORT_ENV,
    HttpsCheck,
    HttpsStatus,
    check_https,
    link_scheme_problems,
)

pytestmark = [pytest.mark.integration, pytest.mark.allow_hosts(["127.0.0.1"])]

HSTS = "max-age=31536000; includeSubDomains"
HOSTS = [
    "email.example.com",
    "email.hsts.com",
    "email.expiring.com",
    "email.expired.com",
    "email.mismatch.com",
    "email.selfsigned.com",
    "email.rogue.com",
    "email.silent.com",
]


@dataclass
class Lab:
    t0: int
    ca_file: str
    dns: DnsServer
    https: dict[str, LoopbackServer]
    http: dict[str, LoopbackServer]

    def check(self, host: str, server: str | None = None, **kwargs) -> HttpsCheck:
        options = {
            "resolver": make_resolver([("127.0.0.1", self.dns.port)], timeout=1.0, lifetime=2.0),
            "https_port": self.https[server].port if server else None,
            "http_port": closed_port(),
            "ca_file": self.ca_file,
            "now": self.t0,
            "timeout": 2.0,
        }
        options.update(kwargs)
        return check_https(host, **options)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("https-check")
    t0 = int(time.time())
    ca = make_ca("opentracking test CA")
    rogue = make_ca("Rogue CA")
    ca_file = folder / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_file))

    good = make_leaf(folder, "good", ["email.example.com", "email.hsts.com"], t0 - DAY, t0 + 90 * DAY, ca)
    certs = {
        "good": good,
        "expiring": make_leaf(folder, "expiring", ["email.expiring.com"], t0 - DAY, t0 + 5 * DAY, ca),
        "expired": make_leaf(folder, "expired", ["email.expired.com"], t0 - 30 * DAY, t0 - 2 * DAY, ca),
        # valid until 2051: stored as a GeneralizedTime, which the checker's DER reader must handle
        "mismatch": make_leaf(
            folder, "mismatch", ["*.other.com", "other.com"], t0 - DAY, 2556144000, ca
        ),  # 2051-01-01
        "selfsigned": make_leaf(
            folder, "selfsigned", ["email.selfsigned.com"], t0 - DAY, t0 + 90 * DAY, None
        ),
        "rogue": make_leaf(folder, "rogue", ["email.rogue.com"], t0 - DAY, t0 + 90 * DAY, rogue),
    }
    https = {name: LoopbackServer(cert=cert) for name, cert in certs.items()}
    https["hsts"] = LoopbackServer(cert=good, status="200 OK", headers={"Strict-Transport-Security": HSTS})
    https["mismatch_hsts"] = LoopbackServer(
        cert=certs["mismatch"], headers={"Strict-Transport-Security": "max-age=600"}
    )
    https["silent"] = LoopbackServer(silent=True)
    http = {
        "redirect": LoopbackServer(
            status="301 Moved Permanently", headers={"Location": "https://email.example.com/"}
        ),
        "redirect_http": LoopbackServer(status="302 Found", headers={"Location": "http://elsewhere.test/"}),
        "plain": LoopbackServer(status="200 OK"),
    }
    records = {f"{host}.": ("A", "127.0.0.1") for host in HOSTS}
    records["email.noaddress.com."] = ("TXT", '"no address here"')
    servers = [*https.values(), *http.values()]
    with DnsServer(records) as dns_server:
        for server in servers:
            server.start()
        try:
            yield Lab(t0, str(ca_file), dns_server, https, http)
        finally:
            stopped = [server.stop() for server in servers]
    assert all(stopped), "a loopback server did not stop within its bound"


# ---------------------------------------------------------------------------------------------- statuses


def test_valid_certificate_is_ok_with_days_left_and_names(lab):
    # GIVEN email.example.com serves a certificate from a trusted CA valid for 90 more days, no HSTS
    server = lab.https["good"]
    # WHEN it is checked
    result = lab.check("email.example.com", "good")
    # THEN it is ok, with the certificate's names, expiry and days left
    assert result.status is HttpsStatus.OK
    assert result.ok
    assert result.address == "127.0.0.1"
    assert result.days_left == 90
    assert result.not_after == iso(lab.t0 + 90 * DAY)
    assert result.names == ["email.example.com", "email.hsts.com"]
    # AND nothing about HSTS or plain HTTP is reported (no header; nothing listens on the HTTP port)
    assert result.hsts is None
    assert result.http_redirects_to_https is None
    assert "email.example.com" in result.detail
    assert "nothing needs to change" in result.detail
    assert "HSTS" not in result.detail
    # AND the checker connected by IP with SNI set to the host, and asked for / with the host in Host
    assert "email.example.com" in server.sni
    assert any(b"GET / HTTP/1.1\r\nHost: email.example.com:" in request for request in server.requests)


def test_certificate_with_five_days_left_is_expiring(lab):
    # GIVEN a trusted certificate for the host that expires in 5 days
    # WHEN it is checked
    result = lab.check("email.expiring.com", "expiring")
    # THEN it still works (ok) but is reported as expiring, with a renewal fix
    assert result.status is HttpsStatus.EXPIRING
    assert result.ok
    assert result.days_left == 5
    assert result.not_after == iso(lab.t0 + 5 * DAY)
    assert result.names == ["email.expiring.com"]
    assert "email.expiring.com" in result.detail
    assert "5 days left" in result.detail
    assert "renew" in result.detail


def test_now_moves_the_expiry_window(lab):
    # GIVEN the 90-day certificate of email.example.com, checked as if 80 days had passed
    # WHEN it is checked with that `now`
    result = lab.check("email.example.com", "good", now=lab.t0 + 80 * DAY)
    # THEN 10 days are left and it is expiring
    assert (result.status, result.days_left) == (HttpsStatus.EXPIRING, 10)


def test_expired_certificate(lab):
    # GIVEN a certificate for the host, from the trusted CA, that expired two days ago
    # WHEN it is checked
    result = lab.check("email.expired.com", "expired")
    # THEN it is expired, with the expiry read from the certificate itself
    assert result.status is HttpsStatus.EXPIRED
    assert not result.ok
    assert result.days_left == -2
    assert result.not_after == iso(lab.t0 - 2 * DAY)
    assert result.names == ["email.expired.com"]
    assert result.detail.startswith("The certificate served for email.expired.com")
    assert "expired on" in result.detail
    assert "renew it" in result.detail


def test_certificate_for_another_name_is_a_name_mismatch(lab):
    # GIVEN email.mismatch.com serves a trusted certificate valid only for *.other.com and other.com
    # WHEN it is checked
    result = lab.check("email.mismatch.com", "mismatch")
    # THEN it is a name mismatch that names what the certificate covers and how to fix it
    assert result.status is HttpsStatus.NAME_MISMATCH
    assert not result.ok
    assert result.names == ["*.other.com", "other.com"]
    assert result.not_after == "2051-01-01T00:00:00Z"
    assert "email.mismatch.com" in result.detail
    assert "is valid for *.other.com, other.com only" in result.detail
    assert "install a certificate that lists email.mismatch.com" in result.detail
    assert "CNAME" in result.detail


@pytest.mark.parametrize(
    ("host", "server", "issuer"),
    [
        ("email.selfsigned.com", "selfsigned", "self-signed"),
        ("email.rogue.com", "rogue", "issued by Rogue CA"),
    ],
)
def test_self_signed_or_unknown_ca_is_untrusted(lab, host, server, issuer):
    # GIVEN a certificate for the host that is self-signed, or issued by a CA nobody trusts
    # WHEN it is checked
    result = lab.check(host, server)
    # THEN it is untrusted, the detail says why and how to fix it, and the names are still reported
    assert result.status is HttpsStatus.UNTRUSTED
    assert not result.ok
    assert result.names == [host]
    assert result.days_left == 90
    assert host in result.detail
    assert issuer in result.detail
    assert "public certificate authority" in result.detail


def test_untrusted_certificate_that_is_also_for_another_name_says_both(lab):
    # GIVEN a self-signed certificate for email.selfsigned.com served for email.example.com
    # WHEN email.example.com is checked against that server
    result = lab.check("email.example.com", "selfsigned")
    # THEN the status is untrusted and the detail also says it does not cover the host
    assert result.status is HttpsStatus.UNTRUSTED
    assert "and it is not valid for email.example.com (it lists email.selfsigned.com)" in result.detail


def test_without_the_test_ca_the_good_certificate_is_untrusted(lab):
    # GIVEN only the system trust store (which does not know the test CA)
    # WHEN the good certificate is checked
    result = lab.check("email.example.com", "good", ca_file=None)
    # THEN it is untrusted
    assert result.status is HttpsStatus.UNTRUSTED


def test_closed_port_is_unreachable_quickly(lab):
    # GIVEN nothing listens on the HTTPS port
    port = closed_port()
    # WHEN the host is checked
    started = time.monotonic()
    result = lab.check("email.example.com", https_port=port, timeout=1.0)
    elapsed = time.monotonic() - started
    # THEN it is unreachable, within the bound, and the detail names the host, port and fix
    assert result.status is HttpsStatus.UNREACHABLE
    assert result.address == "127.0.0.1"
    assert result.names == []
    assert result.days_left is None
    assert elapsed < 3.0
    assert "email.example.com" in result.detail
    assert "connection refused" in result.detail
    assert f"HTTPS on port {port}" in result.detail


def test_server_that_never_answers_the_handshake_is_a_bounded_tls_error(lab):
    # GIVEN a server that accepts TCP connections on the HTTPS port but never speaks
    # WHEN the host is checked with a short timeout
    started = time.monotonic()
    result = lab.check("email.silent.com", "silent", timeout=0.5)
    elapsed = time.monotonic() - started
    # THEN the handshake is reported as failed, after about one timeout
    assert result.status is HttpsStatus.TLS_ERROR
    assert "email.silent.com" in result.detail
    assert "no answer within 0.5 s during the TLS handshake" in result.detail
    assert elapsed < 3.0


def test_plain_http_on_the_https_port_is_a_tls_error(lab):
    # GIVEN the HTTPS port answers plain HTTP
    # WHEN the host is checked
    result = lab.check("email.example.com", https_port=lab.http["plain"].port, timeout=0.5)
    # THEN the TLS handshake failed
    assert result.status is HttpsStatus.TLS_ERROR
    assert "TLS handshake with email.example.com" in result.detail


def test_nxdomain_is_a_dns_error(lab):
    # GIVEN a tracking host that does not exist in DNS
    # WHEN it is checked
    result = lab.check("email.missing.com", "good")
    # THEN it is a DNS error and the fix is to create the CNAME
    assert result.status is HttpsStatus.DNS_ERROR
    assert result.address is None
    assert "email.missing.com" in result.detail
    assert "NXDOMAIN" in result.detail
    assert "create a CNAME record" in result.detail


def test_name_without_addresses_is_unreachable(lab):
    # GIVEN a tracking host that exists but has no A or AAAA record
    # WHEN it is checked
    result = lab.check("email.noaddress.com", "good")
    # THEN it is unreachable: no address
    assert result.status is HttpsStatus.UNREACHABLE
    assert result.address is None
    assert "no A or AAAA address" in result.detail


def test_unanswered_dns_is_a_bounded_dns_error(lab):
    # GIVEN the DNS server drops every query for the host
    lab.dns.set_fault("email.example.com", "timeout")
    try:
        # WHEN it is checked with a short timeout
        started = time.monotonic()
        result = lab.check("email.example.com", "good", timeout=0.5)
        elapsed = time.monotonic() - started
    finally:
        lab.dns.set_fault("email.example.com", None)
    # THEN it is a DNS error, within the bound
    assert result.status is HttpsStatus.DNS_ERROR
    assert "timed out" in result.detail
    assert elapsed < 3.0


# ------------------------------------------------------------------------------------- HSTS and redirects


def test_hsts_header_is_reported_and_said_to_be_harmless(lab):
    # GIVEN a valid certificate and a Strict-Transport-Security header on GET /
    # WHEN the host is checked
    result = lab.check("email.hsts.com", "hsts")
    # THEN the header is reported, the status is ok and the detail says HSTS does not break https pixels
    assert result.status is HttpsStatus.OK
    assert result.hsts == HSTS
    assert f"The HSTS header ({HSTS}) on email.hsts.com does not break" in result.detail
    assert "always https" in result.detail


def test_hsts_is_reported_even_when_the_certificate_is_wrong(lab):
    # GIVEN a certificate for another name, served with an HSTS header on a 404 page
    # WHEN the host is checked
    result = lab.check("email.mismatch.com", "mismatch_hsts")
    # THEN the mismatch is the status, and the header is still reported
    assert result.status is HttpsStatus.NAME_MISMATCH
    assert result.hsts == "max-age=600"
    assert "always https" in result.detail


def test_http_redirect_to_https_is_reported_and_said_to_be_harmless(lab):
    # GIVEN plain HTTP answers GET / with 301 to https://, next to a valid HTTPS server with HSTS
    # WHEN the host is checked
    result = lab.check("email.hsts.com", "hsts", http_port=lab.http["redirect"].port)
    # THEN the redirect is reported, and the detail says neither breaks opentracking's pixel links
    assert result.status is HttpsStatus.OK
    assert result.http_redirects_to_https is True
    assert "HTTP-to-HTTPS redirect on email.hsts.com do not break opentracking's pixel links" in result.detail
    assert any(b"Host: email.hsts.com:" in request for request in lab.http["redirect"].requests)


@pytest.mark.parametrize("server", ["plain", "redirect_http"])
def test_http_without_https_redirect_is_reported_as_false(lab, server):
    # GIVEN plain HTTP answers 200, or redirects to another http:// address
    # WHEN the host is checked
    result = lab.check("email.example.com", "good", http_port=lab.http[server].port)
    # THEN it does not redirect to https, and the detail says nothing about it
    assert result.http_redirects_to_https is False
    assert "redirect" not in result.detail


def test_environment_ports_are_honoured(lab, monkeypatch):
    # GIVEN TRACKING_HTTPS_PORT and TRACKING_HTTP_PORT name the local servers
    monkeypatch.setenv(HTTPS_PORT_ENV, str(lab.https["hsts"].port))
    monkeypatch.setenv(HTTP_PORT_ENV, str(lab.http["redirect"].port))
    # WHEN the host is checked without explicit ports
    result = lab.check("email.hsts.com", http_port=None)
    # THEN those ports were used
    assert result.status is HttpsStatus.OK
    assert result.hsts == HSTS
    assert result.http_redirects_to_https is True
    assert f"(port {lab.https['hsts'].port})" in result.detail


def test_bad_environment_port_is_misuse(lab, monkeypatch):
    # GIVEN TRACKING_HTTPS_PORT is not a port
    monkeypatch.setenv(HTTPS_PORT_ENV, "https")
    # WHEN a check is made THEN it raises rather than report a network status
    with pytest.raises(ValueError, match=HTTPS_PORT_ENV):
        lab.check("email.example.com")


def test_missing_ca_file_is_misuse(lab, tmp_path):
    # GIVEN a CA file that does not exist
    # WHEN a check is made THEN it raises rather than report a TLS error
    with pytest.raises(FileNotFoundError):
        lab.check("email.example.com", "good", ca_file=str(tmp_path / "missing.pem"))


def test_as_dict_is_json_safe(lab):
    # GIVEN a check result
    result = lab.check("email.hsts.com", "hsts", http_port=lab.http["redirect"].port)
    # WHEN it is turned into a dict
    data = json.loads(json.dumps(result.as_dict()))
    # THEN the status is its string and every field is there
    assert data["status"] == "ok"
    assert data["ok"] is True
    assert data["host"] == "email.hsts.com"
    assert data["names"] == ["email.example.com", "email.hsts.com"]
    assert data["hsts"] == HSTS
    assert data["http_redirects_to_https"] is True
    assert data["days_left"] == 90
    assert data["detail"] == result.detail


def test_ip_literal_host_skips_dns(lab):
    # GIVEN a host given as an IP address (the certificate does not list it)
    # WHEN it is checked
    result = lab.check("127.0.0.1", "good")
    # THEN no DNS is needed and the certificate is a name mismatch
    assert result.address == "127.0.0.1"
    assert result.status is HttpsStatus.NAME_MISMATCH


# ---------------------------------------------------------------------------------------------- stored copies


def test_link_scheme_problems_finds_plain_http_pixel_links_only():
    # GIVEN HTML with a plain-http pixel, an https pixel, and http links elsewhere
    html = (
        '<p><a href="http://email.example.com/c/abc">click</a>'
        '<img src="http://email.example.com/o/AAAA_bb-1" alt="">'
        '<img src="https://email.example.com/o/CCCC" alt="">'
        '<img src="http://email.other.com/o/DDDD" alt="">'
        '<img src="HTTP://Email.Example.com:8080/o/EEEE" alt=""></p>'
    )
    # WHEN it is searched for the tracking host
    problems = link_scheme_problems(html, "email.example.com")
    # THEN only the plain-http pixel URLs on that host are returned, in order
    assert problems == ["http://email.example.com/o/AAAA_bb-1", "HTTP://Email.Example.com:8080/o/EEEE"]
    assert link_scheme_problems(html.encode(), "email.example.com.") == problems


def test_link_scheme_problems_reads_encoded_mime_parts():
    # GIVEN a stored MIME copy whose HTML part is quoted-printable with a soft line break inside the URL,
    # and a base64 part with another plain-http pixel
    import base64

    encoded = base64.b64encode(b'<img src="http://email.example.com/o/BASE64tok">').decode()
    message = (
        "From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        '<p>hello</p><img src=3D"http://email.example.com/o/QPtok=\r\nen123" alt=3D"">\r\n'
        "--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{encoded}\r\n--b1--\r\n"
    ).encode()
    # WHEN it is searched
    problems = link_scheme_problems(message, "email.example.com")
    # THEN both plain-http pixels are found, decoded
    assert "http://email.example.com/o/QPtoken123" in problems
    assert "http://email.example.com/o/BASE64tok" in problems


def test_link_scheme_problems_ignores_https_copies():
    # GIVEN a stored copy whose pixel is https, as opentracking always writes it
    copy = b'<html><body><img src="https://email.example.com/o/tok" /></body></html>'
    # WHEN it is searched THEN nothing is flagged
    assert link_scheme_problems(copy, "email.example.com") == []
