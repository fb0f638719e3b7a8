"""Check the HTTPS certificate a tracking host serves, and what it says about HSTS and plain HTTP.

Every pixel link opentracking writes is `https://email.example.com/o/<token>`, so the certificate served
on the tracking host must be trusted and valid for that name, or every mail client fails to load the
image. Mailgun warns that HSTS or a forced HTTP->HTTPS redirect breaks its (plain-http) tracking links;
ours are always https, so both are harmless here and the check says so. The diagnose API and the
scheduled checker call `check_https` and show its `detail` to the user.

    result = check_https("email.example.com", resolver=make_resolver())
    result.status, result.days_left, result.names, result.hsts, result.http_redirects_to_https, result.detail

The host is resolved with dnspython (A, then AAAA when there is no A record) and the HTTPS port is
connected by IP with SNI set to the host. A verified handshake (system trust, or `ca_file`) decides the
status; when verification fails, OpenSSL's verify code tells expired, name mismatch and untrusted apart,
and a second, non-verifying handshake fetches the certificate so its names and expiry can be reported
(parsed with a small DER reader: `cryptography` is not available at run time). `GET /` is sent over HTTPS
to read the Strict-Transport-Security header (any status will do) and over plain HTTP to see whether it
redirects to https. Every network step is bounded by `timeout`: DNS takes at most two lookups, the HTTPS
probe at most four steps and the plain HTTP probe (run alongside it) at most two. Network outcomes never
raise; they are statuses. Only misuse raises: an empty host, a bad port (argument or environment) or a
garbage OPENTRACKING_NAMESERVERS (ValueError), or a `ca_file` that cannot be read (OSError, ssl.SSLError).
"""

from __future__ import annotations

import datetime
import email
import email.policy
import html
import ipaddress
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import dns.exception
import dns.resolver

from opentracking.domains.dns_check import make_resolver

HTTPS_PORT_ENV = "TRACKING_HTTPS_PORT"
HTTP_PORT_ENV = "TRACKING_HTTP_PORT"
EXPIRING_DAYS = 14
MAX_ADDRESSES = 4
USER_AGENT = "opentracking-https-check/1"
_MAX_HEADER_BYTES = 64 * 1024
_DAY = 86400

# OpenSSL X509_V_ERR_* codes (ssl.SSLCertVerificationError.verify_code).
_EXPIRED_CODES = frozenset({10})  # CERT_HAS_EXPIRED
_NOT_YET_VALID_CODES = frozenset({9})  # CERT_NOT_YET_VALID
_MISMATCH_CODES = frozenset({62, 64})  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
# UNABLE_TO_GET_ISSUER_CERT, DEPTH_ZERO_SELF_SIGNED_CERT, SELF_SIGNED_CERT_IN_CHAIN,
# UNABLE_TO_GET_ISSUER_CERT_LOCALLY, UNABLE_TO_VERIFY_LEAF_SIGNATURE, INVALID_CA, CERT_UNTRUSTED,
# CERT_REJECTED
_UNTRUSTED_CODES = frozenset({2, 18, 19, 20, 21, 24, 27, 28})


class HttpsStatus(StrEnum):
    OK = "ok"
    EXPIRING = "expiring"  # valid and trusted, but fewer than EXPIRING_DAYS days left
    EXPIRED = "expired"
    NAME_MISMATCH = "name_mismatch"  # the certificate is not valid for the host
    UNTRUSTED = "untrusted"  # self-signed, or issued by an unknown certificate authority
    TLS_ERROR = "tls_error"  # the handshake failed otherwise
    UNREACHABLE = "unreachable"  # no address, connection refused, connect timeout
    DNS_ERROR = "dns_error"  # the host does not exist, or DNS failed


@dataclass(frozen=True)
class HttpsCheck:
    """The outcome of one check. `detail` says what is wrong and how to fix it, in plain English."""

    host: str
    status: HttpsStatus
    address: str | None = None
    days_left: int | None = None
    not_after: str | None = None  # ISO 8601, UTC ("2026-05-09T12:00:00Z")
    names: list[str] = field(default_factory=list)  # DNS names of the subjectAltName
    hsts: str | None = None
    http_redirects_to_https: bool | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (HttpsStatus.OK, HttpsStatus.EXPIRING)

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "status": str(self.status),
            "ok": self.ok,
            "address": self.address,
            "days_left": self.days_left,
            "not_after": self.not_after,
            "names": list(self.names),
            "hsts": self.hsts,
            "http_redirects_to_https": self.http_redirects_to_https,
            "detail": self.detail,
        }


# ---------------------------------------------------------------------------------------------- the check


def check_https(
    host: str,
    *,
    resolver: dns.resolver.Resolver | None = None,
    https_port: int | None = None,
    http_port: int | None = None,
    timeout: float = 3.0,
    now: float | None = None,
    ca_file: str | None = None,
) -> HttpsCheck:
    """Check the certificate `host` serves on HTTPS, its HSTS header and its plain-HTTP redirect."""
    host = _normalise_host(host)
    if not timeout > 0:
        raise ValueError("timeout must be positive")
    https_port = _port(https_port, HTTPS_PORT_ENV, 443)
    http_port = _port(http_port, HTTP_PORT_ENV, 80)
    now = time.time() if now is None else now
    context = _verifying_context(ca_file)  # a missing or bad ca_file is misuse: it raises here

    addresses, dns_problem = _resolve(host, resolver, timeout)
    if dns_problem is not None:
        return HttpsCheck(host, HttpsStatus.DNS_ERROR, detail=_dns_detail(host, dns_problem))
    if not addresses:
        detail = (
            f"{host} has no A or AAAA address, so mail clients cannot load the tracking pixel from it; "
            f"make {host} a CNAME for this deployment's tracking hostname."
        )
        return HttpsCheck(host, HttpsStatus.UNREACHABLE, detail=detail)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="https-check-http") as pool:
        redirect_future = pool.submit(_http_redirect, host, addresses, http_port, timeout)
        probe = _probe_https(host, addresses, https_port, timeout, context)
        redirects = redirect_future.result()
    return _result(host, https_port, probe, redirects, now)


def _normalise_host(host: str) -> str:
    if not isinstance(host, str):
        raise TypeError(f"host must be a string, not {type(host).__name__}")
    name = host.strip().rstrip(".").lower()
    if not name or any(c.isspace() or c in "/@?#" for c in name):
        raise ValueError(f"bad host {host!r}")
    return name


def _port(value: int | None, env: str, default: int) -> int:
    source = "port"
    if value is None:
        text = os.environ.get(env, "").strip()
        if not text:
            return default
        if not text.isascii() or not text.isdigit():
            raise ValueError(f"{env}: {text!r} is not a port number")
        value, source = int(text), env
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ValueError(f"bad {source} {value!r}: must be 1-65535")
    return value


# ---------------------------------------------------------------------------------------------- DNS


def _resolve(
    host: str, resolver: dns.resolver.Resolver | None, timeout: float
) -> tuple[list[str], str | None]:
    """(addresses, None), or ([], a reason DNS failed). A first; AAAA only when there is no A record."""
    try:
        return [str(ipaddress.ip_address(host))], None
    except ValueError:
        pass
    if resolver is None:
        resolver = make_resolver()  # a garbage OPENTRACKING_NAMESERVERS is misuse: ValueError
    if not resolver.nameservers:
        return [], "no DNS resolver is configured"
    lifetime = min(float(resolver.lifetime), timeout)
    addresses: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(host, rdtype, search=False, raise_on_no_answer=False, lifetime=lifetime)
        except dns.resolver.NXDOMAIN:
            return [], "nxdomain"
        except dns.resolver.LifetimeTimeout:
            return [], f"the DNS lookup timed out after {lifetime:g} s"
        except dns.resolver.NoNameservers as error:
            return [], f"no nameserver answered ({_dns_errors(error)})"
        except dns.exception.DNSException as error:
            return [], str(error) or type(error).__name__
        if answer.rrset is not None:
            addresses.extend(str(ipaddress.ip_address(rdata.address)) for rdata in answer.rrset)
        if addresses:
            break
    return addresses[:MAX_ADDRESSES], None


def _dns_errors(error: dns.resolver.NoNameservers) -> str:
    errors = error.kwargs.get("errors") or []
    texts = sorted({str(item[3]) for item in errors if len(item) > 3})
    return "; ".join(texts) or "SERVFAIL or REFUSED"


def _dns_detail(host: str, problem: str) -> str:
    if problem == "nxdomain":
        return (
            f"{host} does not exist in DNS (NXDOMAIN), so mail clients cannot load the tracking pixel; "
            f"create a CNAME record for {host} pointing at this deployment's tracking hostname."
        )
    return (
        f"{host} could not be resolved ({problem.rstrip('.')}); check the DNS records of {host} "
        "and that its DNS provider answers, then check again."
    )


# ---------------------------------------------------------------------------------------------- HTTPS probe


@dataclass
class _Probe:
    address: str | None = None
    connect_error: str | None = None  # set: nothing accepted a connection
    verified: dict[str, Any] | None = None  # getpeercert() of a verified handshake
    verify_code: int | None = None
    verify_message: str | None = None
    tls_error: str | None = None
    certificate: _Certificate | None = None  # parsed from DER when verification failed
    hsts: str | None = None
    redirects: bool | None = None  # the plain-HTTP probe's answer


def _deadline_timeout(deadline: float, timeout: float) -> float:
    remaining = min(timeout, deadline - time.monotonic())
    if remaining <= 0:
        raise TimeoutError("the check ran out of time")
    return remaining


class _ConnectError(Exception):
    def __init__(self, address: str, error: OSError) -> None:
        super().__init__(address, error)
        self.address, self.error = address, error


def _connect(addresses: list[str], port: int, timeout: float, deadline: float) -> tuple[socket.socket, str]:
    """A TCP connection to the first address that accepts one; else _ConnectError for the first address."""
    first: _ConnectError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), _deadline_timeout(deadline, timeout)), address
        except OSError as error:
            first = first or _ConnectError(address, error)
    assert first is not None
    raise first


def _verifying_context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    # Mail clients (browsers, OS TLS stacks) do not apply OpenSSL's RFC 5280 strict mode, which Python
    # 3.13 turns on by default: judge certificates as they do, the same on every Python version.
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


def _inspecting_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _probe_https(
    host: str, addresses: list[str], port: int, timeout: float, context: ssl.SSLContext
) -> _Probe:
    deadline = time.monotonic() + 4 * timeout
    probe = _Probe()
    try:
        sock, probe.address = _connect(addresses, port, timeout, deadline)
    except _ConnectError as failure:
        probe.address = failure.address
        probe.connect_error = _describe(failure.error, timeout)
        return probe
    try:
        with sock:
            sock.settimeout(_deadline_timeout(deadline, timeout))
            with context.wrap_socket(sock, server_hostname=host) as tls:
                probe.verified = tls.getpeercert() or {}
                probe.hsts = _hsts(tls, host, port, timeout, deadline)
        return probe
    except ssl.SSLCertVerificationError as error:
        probe.verify_code = error.verify_code
        probe.verify_message = error.verify_message or error.reason or str(error)
    except (ssl.SSLError, OSError) as error:
        probe.tls_error = _describe(error, timeout, stage="handshake")
        return probe

    # Verification failed: look at the certificate anyway, to say what is wrong with it.
    try:
        raw = socket.create_connection((probe.address, port), _deadline_timeout(deadline, timeout))
        with raw:
            raw.settimeout(_deadline_timeout(deadline, timeout))
            with _inspecting_context().wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
                probe.certificate = _parse_certificate(der) if der else None
                probe.hsts = _hsts(tls, host, port, timeout, deadline)
    except (ssl.SSLError, OSError):
        pass  # the verify error alone still says what is wrong
    return probe


def _hsts(tls: ssl.SSLSocket, host: str, port: int, timeout: float, deadline: float) -> str | None:
    response = _http_get(tls, host, port, 443, timeout, deadline)
    return None if response is None else response[1].get("strict-transport-security")


def _describe(error: OSError, timeout: float, stage: str = "connect") -> str:
    if isinstance(error, TimeoutError):
        during = "while connecting" if stage == "connect" else "during the TLS handshake"
        return f"no answer within {timeout:g} s {during}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ssl.SSLError):
        return error.reason.replace("_", " ").lower() if error.reason else str(error)
    if isinstance(error, ConnectionResetError):
        return "the server reset the connection"
    return error.strerror or str(error) or type(error).__name__


# ---------------------------------------------------------------------------------------------- plain HTTP


def _http_redirect(host: str, addresses: list[str], port: int, timeout: float) -> bool | None:
    """Whether plain HTTP `GET /` redirects to https; None when no HTTP answer could be had."""
    deadline = time.monotonic() + 2 * timeout
    try:
        sock, _address = _connect(addresses, port, timeout, deadline)
    except _ConnectError:
        return None
    with sock:
        response = _http_get(sock, host, port, 80, timeout, deadline)
    if response is None:
        return None
    status, headers = response
    location = headers.get("location", "")
    return status in (301, 302, 307, 308) and location.lower().startswith("https://")


def _http_get(
    sock: socket.socket, host: str, port: int, default_port: int, timeout: float, deadline: float
) -> tuple[int, dict[str, str]] | None:
    """Send `GET /` and read the status and headers (first of each name, names lower-cased); the body
    is never read. None when no well-formed answer arrives in time."""
    authority = host if port == default_port else f"{_bracketed(host)}:{port}"
    request = (
        f"GET / HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n"
        "Connection: close\r\n\r\n"
    )
    try:
        sock.settimeout(_deadline_timeout(deadline, timeout))
        sock.sendall(request.encode("ascii"))
        buffer = b""
        while True:
            head = _response_head(buffer)
            if head is not None:
                status, headers, rest = head
                if status >= 200 or status == 101:
                    return status, headers
                buffer = rest  # an interim 1xx answer: the real one follows
                continue
            if len(buffer) > _MAX_HEADER_BYTES:
                return None
            sock.settimeout(_deadline_timeout(deadline, timeout))
            chunk = sock.recv(16384)
            if not chunk:
                return None
            buffer += chunk
    except (OSError, ValueError, UnicodeError):
        return None


def _response_head(buffer: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """The status and headers at the start of `buffer` and what follows them; None when incomplete."""
    match = re.search(rb"\r?\n\r?\n", buffer)
    if match is None:
        return None
    lines = buffer[: match.start()].decode("latin-1").splitlines()
    status_line = re.fullmatch(r"HTTP/\d(?:\.\d)? (\d{3})(?: .*)?", lines[0].strip()) if lines else None
    if status_line is None:
        raise ValueError("not an HTTP response")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon and name.strip() and not name[:1].isspace():
            headers.setdefault(name.strip().lower(), value.strip())
    return int(status_line.group(1)), headers, buffer[match.end() :]


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# ---------------------------------------------------------------------------------------------- the verdict


def _result(host: str, port: int, probe: _Probe, redirects: bool | None, now: float) -> HttpsCheck:
    probe.redirects = redirects
    common: dict[str, Any] = {
        "address": probe.address,
        "hsts": probe.hsts,
        "http_redirects_to_https": redirects,
    }
    where = host if port == 443 else f"{host} (port {port})"

    if probe.connect_error is not None:
        served_http = (
            " (plain HTTP answers there, but the pixel needs HTTPS)" if redirects is not None else ""
        )
        detail = (
            f"Could not connect to {where} at {probe.address}: {probe.connect_error}{served_http}; "
            f"make sure {host} is a CNAME for this deployment's tracking hostname and that it serves "
            f"HTTPS on port {port}."
        )
        return HttpsCheck(host, HttpsStatus.UNREACHABLE, detail=_with_note(detail, probe, host), **common)

    if probe.tls_error is not None:
        detail = (
            f"The TLS handshake with {where} at {probe.address} failed ({probe.tls_error}); "
            f"make sure {host} is a CNAME for this deployment's tracking hostname and that a certificate "
            f"for {host} is installed there."
        )
        return HttpsCheck(host, HttpsStatus.TLS_ERROR, detail=_with_note(detail, probe, host), **common)

    if probe.verified is not None:
        names = [value for kind, value in probe.verified.get("subjectAltName", ()) if kind == "DNS"]
        expires = _cert_time(probe.verified.get("notAfter"))
        return _verified(host, where, names, expires, now, probe, common)

    return _failed(host, where, probe, now, common)


def _verified(
    host: str,
    where: str,
    names: list[str],
    expires: datetime.datetime | None,
    now: float,
    probe: _Probe,
    common: dict[str, Any],
) -> HttpsCheck:
    if expires is None:  # a verified certificate always has a notAfter; be safe anyway
        detail = f"The certificate served for {where} is valid and trusted; nothing needs to change."
        return HttpsCheck(host, HttpsStatus.OK, names=names, detail=_with_note(detail, probe, host), **common)
    days = _days_left(expires, now)
    date = _date(expires)
    common |= {"names": names, "days_left": days, "not_after": _iso(expires)}
    if days < 0:
        status = HttpsStatus.EXPIRED
        detail = (
            f"The certificate served for {where} expired on {date}; renew it (and fix its automatic "
            f"renewal), or every mail client will fail to load the tracking pixel from {host}."
        )
    elif days < EXPIRING_DAYS:
        status = HttpsStatus.EXPIRING
        detail = (
            f"The certificate served for {where} expires on {date} ({_left(days)}); renew it before then "
            f"(or check that its automatic renewal works), or mail clients will stop loading the tracking "
            f"pixel from {host}."
        )
    else:
        status = HttpsStatus.OK
        detail = (
            f"The certificate served for {where} is valid and trusted until {date} ({_left(days)}); "
            "nothing needs to change."
        )
    return HttpsCheck(host, status, detail=_with_note(detail, probe, host), **common)


def _failed(host: str, where: str, probe: _Probe, now: float, common: dict[str, Any]) -> HttpsCheck:
    code = probe.verify_code
    message = (probe.verify_message or "verification failed").rstrip(".")
    cert = probe.certificate
    fields = dict(
        common
    )  # the caller's fields, with what the certificate adds (the caller's stay as they are)
    if cert is not None:
        fields["names"] = list(cert.names)
        if cert.not_after is not None:
            fields |= {"days_left": _days_left(cert.not_after, now), "not_after": _iso(cert.not_after)}
    expired_too = cert is not None and cert.not_after is not None and _days_left(cert.not_after, now) < 0
    covers = cert is None or _covers(cert, host)

    if code in _EXPIRED_CODES:
        status = HttpsStatus.EXPIRED
        when = f" on {_date(cert.not_after)}" if cert is not None and cert.not_after is not None else ""
        problem = f"The certificate served for {where} expired{when}"
        fix = "renew it (and fix its automatic renewal)"
        also = "" if covers else f" and is not valid for {host} either (it lists {_names(cert)})"
    elif code in _MISMATCH_CODES:
        status = HttpsStatus.NAME_MISMATCH
        valid_for = f"is valid for {_names(cert)} only" if cert is not None else "is not valid for that name"
        problem = f"The certificate served for {where} {valid_for}"
        fix = (
            f"install a certificate that lists {host} where {host} points (check that {host} is a CNAME "
            "for this deployment's tracking hostname, not for another service)"
        )
        also = f" and it has expired{_on(cert)}" if expired_too else ""
    elif code in _UNTRUSTED_CODES:
        status = HttpsStatus.UNTRUSTED
        issuer = ""
        if cert is not None:
            if not cert.self_issued:
                issuer = f", issued by {cert.issuer or 'an unnamed issuer'}"
            elif "self-signed" not in message and "self signed" not in message:
                issuer = ", self-signed"
        problem = f"The certificate served for {where} is not trusted ({message}{issuer})"
        fix = (
            "install a certificate from a public certificate authority (such as ACM or Let's Encrypt) "
            "and serve its full chain"
        )
        extra = []
        if not covers:
            extra.append(f"is not valid for {host} (it lists {_names(cert)})")
        if expired_too:
            extra.append(f"has expired{_on(cert)}")
        also = f", and it {' and '.join(extra)}" if extra else ""
    else:
        status = HttpsStatus.TLS_ERROR
        problem = f"The certificate served for {where} failed verification ({message})"
        fix = f"install a valid certificate for {host} from a public certificate authority"
        also = ""
    detail = f"{problem}{also}; {fix}, or mail clients will refuse to load the tracking pixel from {host}."
    return HttpsCheck(host, status, detail=_with_note(detail, probe, host), **fields)


def _with_note(detail: str, probe: _Probe, host: str) -> str:
    """Add, when there is HSTS or an HTTP->HTTPS redirect, that neither breaks opentracking's pixel links."""
    parts = []
    if probe.hsts is not None:
        parts.append(f"the HSTS header ({probe.hsts})" if probe.hsts else "the HSTS header")
    if probe.redirects:
        parts.append("the HTTP-to-HTTPS redirect")
    if not parts:
        return detail
    what = " and ".join(parts)
    verb = "do not" if len(parts) > 1 else "does not"
    return (
        f"{detail} {what[0].upper()}{what[1:]} on {host} {verb} break opentracking's pixel links, because "
        "they are always https (unlike Mailgun's plain-http tracking links)."
    )


def _covers(cert: _Certificate, host: str) -> bool:
    names = cert.names or ([cert.subject] if cert.subject else [])
    return any(_matches(pattern, host) for pattern in names) or host in cert.addresses


def _matches(pattern: str, host: str) -> bool:
    pattern = pattern.rstrip(".").lower()
    if pattern == host:
        return True
    if pattern.startswith("*.") and "*" not in pattern[2:]:
        label, dot, rest = host.partition(".")
        return bool(label and dot and rest == pattern[2:])
    return False


def _names(cert: _Certificate | None) -> str:
    if cert is None:
        return "other names"
    names = list(cert.names) + list(cert.addresses)
    if not names:
        return f"no names at all (its subject is {cert.subject})" if cert.subject else "no names at all"
    shown = ", ".join(names[:5])
    return f"{shown} and {len(names) - 5} more" if len(names) > 5 else shown


def _on(cert: _Certificate | None) -> str:
    return f" on {_date(cert.not_after)}" if cert is not None and cert.not_after is not None else ""


def _days_left(expires: datetime.datetime, now: float) -> int:
    return int((expires.timestamp() - now) // _DAY)


def _left(days: int) -> str:
    if days == 0:
        return "less than a day left"
    return f"{days} day left" if days == 1 else f"{days} days left"


def _cert_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(text), datetime.UTC)
    except (ValueError, OverflowError):
        return None


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------------------- DER


@dataclass(frozen=True)
class _Certificate:
    names: tuple[str, ...]  # subjectAltName dNSName entries
    addresses: tuple[str, ...]  # subjectAltName iPAddress entries
    not_after: datetime.datetime | None
    subject: str | None  # the subject's common name
    issuer: str | None  # the issuer's common name
    self_issued: bool


_OID_SAN = b"\x55\x1d\x11"  # 2.5.29.17
_OID_CN = b"\x55\x04\x03"  # 2.5.4.3
_OID_ORGANIZATION = b"\x55\x04\x0a"  # 2.5.4.10


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start, end) of the DER element at `pos`; single-byte tags and definite lengths only."""
    if pos + 2 > end:
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tag")
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or pos + count > end:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    items = []
    while start < end:
        item = _tlv(data, start, end)
        items.append(item)
        start = item[2]
    return items


def _parse_certificate(der: bytes) -> _Certificate | None:
    """Names, expiry, subject and issuer of an X.509 certificate; None when it cannot be read."""
    try:
        tag, start, end = _tlv(der, 0, len(der))
        if tag != 0x30:
            return None
        tag, start, end = _children(der, start, end)[0]  # tbsCertificate
        fields = _children(der, start, end)
        if fields and fields[0][0] == 0xA0:  # [0] version
            fields = fields[1:]
        issuer, validity, subject = fields[2], fields[3], fields[4]
        times = _children(der, validity[1], validity[2])
        not_after = _der_time(der[times[1][1] : times[1][2]], times[1][0])
        names: list[str] = []
        addresses: list[str] = []
        for tag, start, end in fields[6:]:
            if tag == 0xA3:  # [3] extensions
                _, seq_start, seq_end = _tlv(der, start, end)
                for _, ext_start, ext_end in _children(der, seq_start, seq_end):
                    parts = _children(der, ext_start, ext_end)
                    if der[parts[0][1] : parts[0][2]] == _OID_SAN:
                        _san(der, parts[-1], names, addresses)
        return _Certificate(
            names=tuple(names),
            addresses=tuple(addresses),
            not_after=not_after,
            subject=_common_name(der, subject),
            issuer=_common_name(der, issuer),
            self_issued=der[issuer[1] : issuer[2]] == der[subject[1] : subject[2]],
        )
    except (ValueError, IndexError):
        return None


def _san(der: bytes, octets: tuple[int, int, int], names: list[str], addresses: list[str]) -> None:
    _, start, end = _tlv(der, octets[1], octets[2])  # the OCTET STRING holds a SEQUENCE of GeneralName
    for tag, name_start, name_end in _children(der, start, end):
        value = der[name_start:name_end]
        if tag == 0x82:  # [2] dNSName
            names.append(value.decode("ascii", "replace"))
        elif tag == 0x87 and len(value) in (4, 16):  # [7] iPAddress
            addresses.append(str(ipaddress.ip_address(value)))


def _common_name(der: bytes, name: tuple[int, int, int]) -> str | None:
    """The name's common name; without one, its organization (some private CAs name only that)."""
    found: dict[bytes, str] = {}
    for _, set_start, set_end in _children(der, name[1], name[2]):  # RelativeDistinguishedName SETs
        for _, attr_start, attr_end in _children(der, set_start, set_end):
            oid, value = _children(der, attr_start, attr_end)[:2]
            raw = der[value[1] : value[2]]
            # A BMPString (0x1E) is UTF-16; the other string types are read as UTF-8.
            text = raw.decode("utf-16-be", "replace") if value[0] == 0x1E else raw.decode("utf-8", "replace")
            found.setdefault(der[oid[1] : oid[2]], text)
    return found.get(_OID_CN) or found.get(_OID_ORGANIZATION)


def _der_time(raw: bytes, tag: int) -> datetime.datetime | None:
    text = raw.decode("ascii")
    if not text.endswith("Z"):
        return None
    text = text[:-1].split(".")[0]
    if tag == 0x17:  # UTCTime: YYMMDDHHMM[SS]Z
        fmt = "%y%m%d%H%M%S" if len(text) == 12 else "%y%m%d%H%M"
        moment = datetime.datetime.strptime(text, fmt)
        if moment.year >= 2050:  # RFC 5280: YY 50-99 is 19YY
            moment = moment.replace(year=moment.year - 100)
    elif tag == 0x18:  # GeneralizedTime: YYYYMMDDHHMMSS[.f]Z
        moment = datetime.datetime.strptime(text, "%Y%m%d%H%M%S")
    else:
        return None
    return moment.replace(tzinfo=datetime.UTC)


# ---------------------------------------------------------------------------------------------- stored copies


def link_scheme_problems(html_or_message: bytes | str, tracking_host: str) -> list[str]:
    """The plain-http pixel URLs (`http://<tracking_host>/o/...`) in a stored copy, each once, in order.

    The input may be HTML or a whole MIME message: text parts are also read decoded (quoted-printable,
    base64), and HTML character references are undone, so a link is found however the copy encodes it.
    """
    host = _normalise_host(tracking_host)
    pattern = re.compile(rf"http://{re.escape(host)}\.?(?::\d{{1,5}})?/o/[^\s\"'<>]*", re.IGNORECASE)
    found: list[str] = []
    for text in _texts(html_or_message):
        for match in pattern.finditer(html.unescape(text)):
            if match.group() not in found:
                found.append(match.group())
    return found


def _texts(content: bytes | str) -> Iterator[str]:
    """A MIME message's decoded text parts; anything else as it is. Decoded as latin-1: URLs are ASCII."""
    raw = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
    if re.match(rb"[\x21-\x39\x3b-\x7e]+:", raw):  # starts with a header field: a message
        try:
            parts = [
                part.get_payload(decode=True)
                for part in email.message_from_bytes(raw, policy=email.policy.compat32).walk()
                if part.get_content_maintype() == "text"
            ]
        except Exception:  # a message too malformed to parse is searched as raw text below
            parts = []
        texts = [part.decode("latin-1") for part in parts if isinstance(part, bytes)]
        if texts:
            yield from texts
            return
    yield raw.decode("latin-1")
