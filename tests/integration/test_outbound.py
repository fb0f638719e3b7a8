"""Requests to user-configured URLs (webhooks) reach only public addresses, and only the address that was
vetted: a DNS answer that changes between the check and the connection (rebinding) gains nothing, IPv6
forms that carry an IPv4 address inside are judged by that address, and TLS still names the host."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme

from opentracking.core.errors import BadRequest
from opentracking.http import outbound
from opentracking.webhooks import delivery, subscriptions

PUBLIC_V4 = "93.184.215.14"  # a globally routable address; nothing answers it from this machine


class Receiver:
    """An HTTP(S) server on 127.0.0.1 that keeps the Host header of every POST it answers."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.hosts: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.hosts.append(self.headers["Host"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def answers(monkeypatch, *addresses: str) -> list[str]:
    """Make the resolver give `addresses[0]` for the first lookup, `addresses[1]` for the second and so on
    (the last one from then on): a rebinding name. Returns the list of names looked up."""
    looked_up: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        looked_up.append(host)
        address = addresses[min(len(looked_up), len(addresses)) - 1]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
        return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("64:ff9b::808:808", True),  # NAT64 of a public address: an IPv6-only network's normal answer
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("10.0.0.1", False),
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254 (Python calls it global)
        ("64:ff9b::7f00:1", False),
        ("64:ff9b:1::a00:1", False),  # local-use NAT64 prefix
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::127.0.0.1", False),  # IPv4-compatible (Python calls it global)
        ("::ffff:0:a9fe:a9fe", False),  # IPv4-translated (Python calls it global)
        ("2002:a9fe:a9fe::1", False),  # 6to4
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("ff0e::1", False),  # global-scope multicast
        ("224.0.0.1", False),
    ],
)
def test_public_means_globally_routable_including_an_embedded_ipv4(address, public):
    assert outbound.is_public(ipaddress.ip_address(address)) is public


def test_the_connection_goes_to_the_vetted_address_not_a_second_answer(monkeypatch, receiver):
    # GIVEN a name that answers with a public address first and with loopback afterwards
    looked_up = answers(monkeypatch, PUBLIC_V4, "127.0.0.1")
    # WHEN a webhook is posted to it
    with pytest.raises(OSError):  # noqa: PT011 - unreachable or timed out, as this machine's network has it
        delivery.post_json(f"http://rebind.example.test:{receiver.port}/hook", b"{}", 0.5)
    # THEN the name was resolved once, and the connection tried the public address only
    assert looked_up == ["rebind.example.test"]
    assert receiver.hosts == []


def test_a_name_with_any_private_answer_is_refused_before_connecting(monkeypatch, receiver):
    answers(monkeypatch, "127.0.0.1")
    with pytest.raises(outbound.RefusedTarget):
        delivery.post_json(f"http://inside.example.test:{receiver.port}/hook", b"{}", 5.0)
    assert receiver.hosts == []


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::127.0.0.1]/",
        "http://[::ffff:0:a9fe:a9fe]/",
        "http://169.254.169.254/",
    ],
)
def test_addresses_that_reach_inside_are_refused_when_sending_and_when_configuring(monkeypatch, url):
    monkeypatch.delenv("WEBHOOK_ALLOW_PRIVATE_URLS", raising=False)
    with pytest.raises(outbound.RefusedTarget):
        delivery.post_json(url, b"{}", 0.5)
    with pytest.raises(BadRequest, match="not a public address"):
        subscriptions.normalise_urls([url])
    # where private receivers are allowed (the local stack), the URL is a valid setting
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE_URLS", "1")
    assert subscriptions.normalise_urls([url]) == (url,)


def test_allowed_private_targets_are_still_reached_at_the_resolved_address(monkeypatch, receiver):
    looked_up = answers(monkeypatch, "127.0.0.1")
    url = f"http://hooks.example.test:{receiver.port}/hook?x=1"
    assert delivery.post_json(url, b"{}", 5.0, allow_private=True) == 204
    assert looked_up == ["hooks.example.test"]
    assert receiver.hosts == [f"hooks.example.test:{receiver.port}"]


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def tls_receiver(ca: trustme.CA, name: str) -> Receiver:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return Receiver(tls=context)


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_https_to_a_pinned_address_still_checks_the_certificate_for_the_host(monkeypatch, ca):
    answers(monkeypatch, "127.0.0.1")
    good = tls_receiver(ca, "hooks.example.test")
    wrong = tls_receiver(ca, "someone-else.example.test")
    try:
        url = f"https://hooks.example.test:{good.port}/hook"
        status = outbound.post(url, b"{}", {}, 5.0, allow_private=True, tls_context=client_context(ca))
        assert status == 204 and good.hosts == [f"hooks.example.test:{good.port}"]
        # the same address under a certificate for another name: the TLS check fails, nothing is posted
        with pytest.raises(ssl.SSLCertVerificationError):
            outbound.post(
                f"https://hooks.example.test:{wrong.port}/hook",
                b"{}",
                {},
                5.0,
                allow_private=True,
                tls_context=client_context(ca),
            )
        assert wrong.hosts == []
    finally:
        good.close()
        wrong.close()
