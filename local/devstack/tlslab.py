"""Test certificates and loopback HTTP(S) servers: certificate authorities and leaf certificates from
`trustme`, and a tiny server that answers every request with one fixed response. For the HTTPS-check tests
and anything else that needs a tracking host with a real certificate on 127.0.0.1."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DAY = 86400
Authority = trustme.CA


def _moment(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def iso(epoch: float) -> str:
    return _moment(epoch).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_ca(name: str) -> Authority:
    """A certificate authority whose certificate names it `name` (its organization)."""
    return trustme.CA(organization_name=name)


def make_leaf(
    folder: Path, label: str, names: list[str], not_before: float, not_after: float, ca: Authority | None
) -> tuple[Path, Path]:
    """A server certificate for `names` (issued by `ca`, or self-signed when None), written as PEM."""
    if ca is None:
        cert_pem, key_pem = _self_signed(names, not_before, not_after)
    else:
        leaf = ca.issue_cert(*names, not_before=_moment(not_before), not_after=_moment(not_after))
        cert_pem, key_pem = leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()
    cert_path, key_path = folder / f"{label}.crt", folder / f"{label}.key"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    return cert_path, key_path


def _self_signed(names: list[str], not_before: float, not_after: float) -> tuple[bytes, bytes]:
    """A leaf that signs itself (trustme only issues from a CA): the case a checker calls self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_moment(not_before))
        .not_valid_after(_moment(not_after))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# ---------------------------------------------------------------------------------------------- servers


class LoopbackServer:
    """A tiny HTTP(S) server on 127.0.0.1 that answers every request with one fixed response.

    `silent` accepts connections and never says anything (for timeouts). It records the SNI names and the
    requests it saw, and `stop()` returns within about `timeout` seconds, telling whether every thread ended.
    """

    def __init__(
        self,
        *,
        cert: tuple[Path, Path] | None = None,
        status: str = "404 Not Found",
        headers: dict[str, str] | None = None,
        silent: bool = False,
    ) -> None:
        self.context: ssl.SSLContext | None = None
        self.sni: list[str | None] = []
        if cert is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(*cert)
            self.context.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)
        head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.response = (head + "Content-Length: 0\r\nConnection: close\r\n\r\n").encode("ascii")
        self.silent = silent
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]

    def start(self) -> LoopbackServer:
        thread = threading.Thread(target=self._accept_loop, name=f"loopback-{self.port}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> bool:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._listener.close()
        return not any(thread.is_alive() for thread in self._threads)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        sock: socket.socket = conn
        try:
            if self.silent:
                self._stop.wait(10)
                return
            conn.settimeout(2)
            if self.context is not None:
                sock = self.context.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.requests.append(data)
            sock.sendall(self.response)
        except OSError:
            pass  # the client rejected our certificate, or went away
        finally:
            sock.close()
            conn.close()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
