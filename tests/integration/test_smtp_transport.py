"""Delivery through an SMTP relay (opentracking.delivery.smtp) against real SMTP servers on loopback
(aiosmtpd, devstack.smtp_server): 250, 550 and 451 per recipient, a dropped connection, a silent server,
STARTTLS with a certificate the client checks, implicit TLS refused where none is offered, and AUTH."""

from __future__ import annotations

import ssl

import pytest
import trustme

from devstack.smtp_server import MailSink
from devstack.tlslab import LoopbackServer
from opentracking.delivery import smtp

MESSAGE = (
    b"From: Sender <s@example.com>\r\nTo: ok@example.net\r\nSubject: Hi\r\nMessage-ID: <m1@example.com>\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body>Caf\xc3\xa9\r\n.leading dot</body></html>\r\n"
)


@pytest.fixture
def sink():
    server = MailSink().start()
    server.replies.update(
        {
            "bad@example.net": "550 5.1.1 No such user",
            "later@example.net": "451 4.3.0 Try again later",
            "gone@example.net": "drop",
        }
    )
    yield server
    server.stop()


def plain(sink: MailSink) -> smtp.Relay:
    return smtp.Relay.parse(sink.address, "none", timeout=5.0)


def test_a_2xx_after_data_is_delivered_byte_for_byte(sink):
    reply = smtp.send(plain(sink), "s@example.com", "ok@example.net", MESSAGE)
    assert reply.outcome is smtp.Outcome.DELIVERED and reply.code == 250
    assert reply.message.startswith("2.0.0 Ok: queued as local-")
    assert reply.mx_host == "127.0.0.1" and reply.tls is False
    [received] = sink.to("ok@example.net")
    assert received.mail_from == "s@example.com" and received.recipients == ("ok@example.net",)
    assert received.data == MESSAGE  # dot-stuffing undone, 8-bit bytes intact


@pytest.mark.parametrize(
    ("recipient", "outcome", "code", "text"),
    [
        ("bad@example.net", smtp.Outcome.PERMANENT, 550, "5.1.1 No such user"),
        ("later@example.net", smtp.Outcome.TEMPORARY, 451, "4.3.0 Try again later"),
    ],
)
def test_a_refused_recipient_is_a_permanent_or_temporary_failure(sink, recipient, outcome, code, text):
    reply = smtp.send(plain(sink), "s@example.com", recipient, MESSAGE)
    assert (reply.outcome, reply.code, reply.message) == (outcome, code, text)
    assert sink.received == []


def test_a_dropped_connection_is_temporary(sink):
    reply = smtp.send(plain(sink), "s@example.com", "gone@example.net", MESSAGE)
    assert reply.outcome is smtp.Outcome.TEMPORARY and reply.code == smtp.NO_REPLY_CODE
    assert "SMTPServerDisconnected" in reply.message or "4.4.2" in reply.message


def test_a_silent_server_times_out_as_temporary():
    silent = LoopbackServer(silent=True).start()
    try:
        reply = smtp.send(
            smtp.Relay.parse(f"127.0.0.1:{silent.port}", "none", timeout=0.5), "s@x.com", "a@y.net", b""
        )
        assert reply.outcome is smtp.Outcome.TEMPORARY and reply.code == smtp.NO_REPLY_CODE
        assert "timed out" in reply.message.lower()
    finally:
        silent.stop()


def test_nobody_listening_is_temporary(sink):
    address = sink.address
    sink.stop()
    reply = smtp.send(
        smtp.Relay.parse(address, "none", timeout=2.0), "s@example.com", "ok@example.net", MESSAGE
    )
    assert reply.outcome is smtp.Outcome.TEMPORARY and "ConnectionRefusedError" in reply.message


@pytest.fixture
def tls_sink():
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "relay.example.test").configure_cert(server_context)
    server = MailSink(tls_context=server_context, credentials={"app": "s3cret"}).start()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    yield server, client_context
    server.stop()


def test_starttls_and_auth_with_a_checked_certificate(tls_sink):
    server, client_context = tls_sink
    relay = smtp.Relay.parse(
        server.address, "starttls", username="app", password="s3cret", tls_context=client_context, timeout=5.0
    )
    reply = smtp.send(relay, "s@example.com", "ok@example.net", MESSAGE)
    assert reply.outcome is smtp.Outcome.DELIVERED and reply.tls and reply.certificate_verified
    [received] = server.received
    assert received.tls and received.authenticated_as == "app"


def test_wrong_credentials_or_an_untrusted_certificate_send_nothing(tls_sink):
    server, client_context = tls_sink
    wrong = smtp.Relay.parse(
        server.address, "starttls", username="app", password="nope", tls_context=client_context, timeout=5.0
    )
    refused = smtp.send(wrong, "s@example.com", "ok@example.net", MESSAGE)
    assert refused.outcome is smtp.Outcome.TEMPORARY and refused.code == 535
    untrusted = smtp.Relay.parse(server.address, "starttls", username="app", password="s3cret", timeout=5.0)
    unverified = smtp.send(untrusted, "s@example.com", "ok@example.net", MESSAGE)
    assert unverified.outcome is smtp.Outcome.TEMPORARY and "CERTIFICATE_VERIFY_FAILED" in unverified.message
    assert server.received == []


def test_relay_configuration_is_checked():
    with pytest.raises(smtp.RelayConfigurationError):
        smtp.Relay.parse("no-port")
    with pytest.raises(smtp.RelayConfigurationError):
        smtp.Relay.parse("host:25", "ssl")
    assert smtp.Relay.parse("[::1]:2525", "none").host == "::1"
    assert smtp.credentials_from_secret('{"username": "u", "password": "p"}') == ("u", "p")
    with pytest.raises(smtp.RelayConfigurationError):
        smtp.credentials_from_secret('{"user": "u"}')


def test_require_tls_sends_only_over_tls(sink, tls_sink):
    """Mailgun's require-tls: a relay on a trusted network (security none) is asked for STARTTLS; one that
    offers none gets nothing, and the attempt fails temporarily (it is retried, then too old)."""
    refused = smtp.send(plain(sink), "s@example.com", "ok@example.net", MESSAGE, require_tls=True)
    assert (refused.outcome, refused.code, refused.message) == (
        smtp.Outcome.TEMPORARY,
        smtp.NO_REPLY_CODE,
        smtp.REQUIRE_TLS_REFUSED,
    )
    assert sink.received == []
    server, client_context = tls_sink
    relay = smtp.Relay.parse(
        server.address, "none", username="app", password="s3cret", tls_context=client_context, timeout=5.0
    )
    reply = smtp.send(relay, "s@example.com", "ok@example.net", MESSAGE, require_tls=True)
    assert reply.outcome is smtp.Outcome.DELIVERED and reply.tls and reply.certificate_verified
    [received] = server.received
    assert received.tls


def test_skip_verification_accepts_an_untrusted_certificate_and_says_so(tls_sink):
    server, _ = tls_sink  # the client does not trust the server's CA
    relay = smtp.Relay.parse(server.address, "starttls", username="app", password="s3cret", timeout=5.0)
    reply = smtp.send(relay, "s@example.com", "ok@example.net", MESSAGE, skip_verification=True)
    assert reply.outcome is smtp.Outcome.DELIVERED
    assert reply.tls is True and reply.certificate_verified is False  # encrypted, not authenticated
    [received] = server.received
    assert received.tls
