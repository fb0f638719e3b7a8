"""HTTP requests to URLs a user configured (webhook receivers), made so that a URL cannot reach inside.

The host is resolved once, every address it resolves to is vetted, and the connection is made to a vetted
address. Resolving to check and letting the HTTP client resolve again to connect would let a name answer
with a public address for the check and with 127.0.0.1 or 169.254.169.254 for the connection (DNS
rebinding). TLS still names the host: SNI and the certificate check use the URL's host, not the address.

Public means globally routable, and for the IPv6 forms that carry an IPv4 address inside (NAT64, 6to4,
Teredo, IPv4-mapped, -compatible and -translated), the IPv4 address inside is public too: otherwise
`http://[64:ff9b::a9fe:a9fe]/` reaches 169.254.169.254 through a NAT64 gateway.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

import urllib3
import urllib3.connection

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
SocketAddress = tuple[socket.AddressFamily, tuple[Any, ...]]


class RefusedTarget(Exception):
    """The URL's host is, or resolves to, an address that is not public."""


def _last_32_bits(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)


def _sixtofour(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return address.sixtofour or _last_32_bits(address)


def _teredo_client(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    teredo = address.teredo
    return teredo[1] if teredo else _last_32_bits(address)


# RFC 6052 (NAT64, well-known and local-use prefixes), RFC 4291 (mapped, compatible), RFC 2765
# (translated), RFC 3056 (6to4), RFC 4380 (Teredo, whose client address is stored inverted).
_IPV4_EMBEDDING = (
    (ipaddress.IPv6Network("64:ff9b::/96"), _last_32_bits),
    (ipaddress.IPv6Network("64:ff9b:1::/48"), _last_32_bits),
    (ipaddress.IPv6Network("::ffff:0:0/96"), _last_32_bits),
    (ipaddress.IPv6Network("::ffff:0:0:0/96"), _last_32_bits),
    (ipaddress.IPv6Network("::/96"), _last_32_bits),
    (ipaddress.IPv6Network("2002::/16"), _sixtofour),
    (ipaddress.IPv6Network("2001::/32"), _teredo_client),
)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    for network, extract in _IPV4_EMBEDDING:
        if address in network:
            return extract(address)
    return None


def is_public(address: Address) -> bool:
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None and (not inner.is_global or inner.is_multicast):
            return False
    return True


def literal_address(host: str) -> Address | None:
    """The host as an IP address when it is one (`[...]` already stripped, as urlsplit's hostname is)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def resolve(host: str, port: int, *, allow_private: bool) -> list[SocketAddress]:
    """Every address the host resolves to, in resolver order; RefusedTarget when one of them is not public
    (a name that mixes public and private answers is refused whole), unless private targets are allowed.
    OSError (socket.gaierror) when the name does not resolve."""
    found: list[SocketAddress] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = literal_address(str(sockaddr[0]))
        if address is None:
            raise RefusedTarget(f"{host} resolved to something that is not an IP address")
        if not allow_private and not is_public(address):
            raise RefusedTarget(f"{host} resolves to an address that is not public")
        found.append((family, sockaddr))
    if not found:
        raise socket.gaierror(f"{host} has no address")
    return found


def _connect(addresses: list[SocketAddress], timeout: float | None) -> socket.socket:
    """A TCP connection to the first of the vetted addresses that answers."""
    last_error: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last_error = exc
    assert last_error is not None  # resolve() never returns an empty list
    raise last_error


class _Connected:
    """urllib3 connections that use a socket already connected to a vetted address instead of resolving
    the host again; everything else (the request, TLS with SNI and the certificate check for the URL's
    host, the response) is urllib3's."""

    def __init__(self, *args: Any, connected: socket.socket, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._connected = connected

    def _new_conn(self) -> socket.socket:
        return self._connected


class _ConnectedHTTP(_Connected, urllib3.connection.HTTPConnection):
    pass


class _ConnectedHTTPS(_Connected, urllib3.connection.HTTPSConnection):
    pass


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    *,
    allow_private: bool = False,
    tls_context: ssl.SSLContext | None = None,
) -> int:
    """POST `body` to an http(s) URL and return the HTTP status; redirects are answers, never followed.
    Credentials in the URL (`https://user:pass@host/...`) are sent as HTTP Basic auth. RefusedTarget for a
    host that is not public; OSError when the request fails (a timeout, a refused connection, a
    certificate that is not the host's)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {parts.scheme!r}")
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    headers = dict(headers)
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    connected = _connect(resolve(host, port, allow_private=allow_private), timeout)
    pool: urllib3.HTTPConnectionPool
    if parts.scheme == "https":
        context = tls_context or ssl.create_default_context()
        pool = urllib3.HTTPSConnectionPool(host, port, ssl_context=context, connected=connected)
        pool.ConnectionCls = _ConnectedHTTPS
    else:
        pool = urllib3.HTTPConnectionPool(host, port, connected=connected)
        pool.ConnectionCls = _ConnectedHTTP
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        response = pool.urlopen(
            "POST", target, body=body, headers=headers, retries=False, redirect=False, timeout=timeout
        )
        return int(response.status)
    except urllib3.exceptions.HTTPError as exc:
        raise _os_error(exc) from exc
    finally:
        pool.close()
        connected.close()


def _os_error(exc: urllib3.exceptions.HTTPError) -> OSError:
    """The socket or TLS error under urllib3's wrapper (the webhook sender retries OSErrors)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError):
            return cause
        cause = (
            cause.__cause__
            or cause.__context__
            or next((arg for arg in getattr(cause, "args", ()) if isinstance(arg, BaseException)), None)
        )
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return TimeoutError(str(exc))
    return ConnectionError(str(exc))
