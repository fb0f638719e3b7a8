"""Delivery through an SMTP relay the user already runs: one transaction per recipient's copy.

The relay is `SMTP_RELAY` (`host:port`), `SMTP_SECURITY` (`starttls`, the default; `tls` for implicit TLS
on connect, usually port 465; `none` for a relay on a trusted network, as the local stack's) and, when the
relay wants AUTH, `SMTP_CREDENTIALS_SECRET`: a Secrets Manager secret `{"username": ..., "password": ...}`.

What the relay answers decides the outcome, as Mailgun reads a receiving server's answers: a 2xx after DATA
is `delivered`; a 5xx at MAIL, RCPT or DATA is a permanent failure; a 4xx, a timeout or a dropped connection
is a temporary one (the sender retries it on a schedule). The reply's code and text are kept for the
event's `delivery-status`.
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from opentracking.core.errors import OpenTrackingError
from opentracking.delivery.replies import Outcome, Reply

SECURITIES = ("starttls", "tls", "none")
DEFAULT_TIMEOUT = 30.0
# Mailgun's code for "could not talk to the receiving server at all" (its delivery-status shows 4xx/5xx
# replies as they were; a connection that failed has no reply of its own).
NO_REPLY_CODE = 421
REQUIRE_TLS_REFUSED = "TLS is required (require-tls) and the server does not offer STARTTLS"


class RelayConfigurationError(OpenTrackingError):
    """SMTP_RELAY, SMTP_SECURITY or the credentials secret is missing or malformed."""


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    security: str = "starttls"
    username: str | None = None
    password: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    tls_context: ssl.SSLContext | None = None

    @classmethod
    def parse(cls, address: str, security: str = "starttls", **kwargs: Any) -> Relay:
        """`host:port` (IPv6 in brackets) and a security mode; RelayConfigurationError when malformed."""
        host, sep, port = address.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RelayConfigurationError(f"SMTP relay must be host:port, not {address!r}")
        if security not in SECURITIES:
            raise RelayConfigurationError(f"SMTP security must be one of {', '.join(SECURITIES)}")
        return cls(host, int(port), security, **kwargs)


def credentials_from_secret(secret: str) -> tuple[str, str]:
    """The relay's AUTH credentials from the secret's JSON: {"username": ..., "password": ...}."""
    try:
        document = json.loads(secret)
        return str(document["username"]), str(document["password"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RelayConfigurationError(
            'the SMTP credentials secret must be {"username": "...", "password": "..."}'
        ) from exc


def relay_from_environment(credentials: tuple[str, str] | None = None) -> Relay:
    address = os.environ.get("SMTP_RELAY", "").strip()
    if not address:
        raise RelayConfigurationError("environment variable SMTP_RELAY is not set")
    username, password = credentials or (None, None)
    return Relay.parse(
        address,
        os.environ.get("SMTP_SECURITY", "starttls").strip().lower(),
        username=username,
        password=password,
    )


@cache
def _system_trust() -> ssl.SSLContext:
    """The system's certificate authorities, loaded once per container (loading them is most of what a
    plain local transaction costs, so a context is never built per copy)."""
    return ssl.create_default_context()


def _classify(code: int) -> Outcome:
    if 200 <= code < 400:
        return Outcome.DELIVERED
    return Outcome.PERMANENT if 500 <= code < 600 else Outcome.TEMPORARY


def _text(message: bytes | str) -> str:
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)


@cache
def _any_certificate() -> ssl.SSLContext:
    """TLS that accepts any certificate and host name (Mailgun's skip-verification): encrypted, not
    authenticated."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def send(
    relay: Relay,
    sender: str,
    recipient: str,
    message: bytes,
    *,
    require_tls: bool = False,
    skip_verification: bool = False,
) -> Reply:
    """One SMTP transaction: MAIL FROM the sender, RCPT TO one recipient, DATA the copy's bytes.

    Mailgun's connection settings: with `require_tls` the copy goes only over TLS (a relay on a trusted
    network, security `none`, is asked for STARTTLS, and without it the attempt fails temporarily); with
    `skip_verification` any certificate is accepted."""
    started = time.monotonic()
    context = _any_certificate() if skip_verification else relay.tls_context or _system_trust()
    tls = False

    def reply(code: int, text: bytes | str, outcome: Outcome | None = None) -> Reply:
        return Reply(
            outcome or _classify(code),
            code,
            _text(text).strip(),
            tls,
            relay.host,
            round(time.monotonic() - started, 3),
            certificate_verified=tls and context.verify_mode == ssl.CERT_REQUIRED,
        )

    try:
        smtp: smtplib.SMTP
        if relay.security == "tls":
            smtp = smtplib.SMTP_SSL(relay.host, relay.port, timeout=relay.timeout, context=context)
            tls = True
        else:
            smtp = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout)
        with smtp:
            smtp.ehlo()
            if relay.security == "none" and require_tls and not smtp.has_extn("starttls"):
                return reply(NO_REPLY_CODE, REQUIRE_TLS_REFUSED, Outcome.TEMPORARY)
            if relay.security == "starttls" or (relay.security == "none" and require_tls):
                code, text = smtp.starttls(context=context)
                if code != 220:
                    return reply(code, text)
                tls = True
                smtp.ehlo()
            if relay.username is not None:
                smtp.login(relay.username, relay.password or "")
            options = []
            if any(byte > 127 for byte in message) and smtp.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            if not (sender + recipient).isascii() and smtp.has_extn("smtputf8"):
                options.append("SMTPUTF8")
            for code, text in (smtp.mail(sender, options), smtp.rcpt(recipient)):
                if _classify(code) is not Outcome.DELIVERED:
                    smtp.rset()
                    return reply(code, text)
            code, text = smtp.data(message)
            return reply(code, text)
    except smtplib.SMTPAuthenticationError as exc:
        # The relay refused our credentials: every copy would fail alike until the secret is fixed.
        return reply(exc.smtp_code, exc.smtp_error, Outcome.TEMPORARY)
    except smtplib.SMTPResponseException as exc:
        return reply(exc.smtp_code, exc.smtp_error)
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        # No answer to classify: a refused or dropped connection, a timeout, a TLS failure.
        return reply(NO_REPLY_CODE, f"{type(exc).__name__}: {exc}", Outcome.TEMPORARY)
