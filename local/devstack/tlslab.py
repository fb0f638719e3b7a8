"""Test certificates and loopback HTTP(S) servers: a CA and leaf certificates made with `cryptography`,
and a tiny server that answers every request with one fixed response. For the HTTPS-check tests and
anything else that needs a tracking host with a real certificate on 127.0.0.1."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = 86400


def _moment(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def iso(epoch: float) -> str:
    return _moment(epoch).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def make_ca(common_name: str, t0: int) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_moment(t0 - 365 * DAY))
        .not_valid_after(_moment(t0 + 3650 * DAY))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, cert)


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_leaf(
    folder: Path, label: str, names: list[str], not_before: float, not_after: float, ca: Authority | None
) -> tuple[Path, Path]:
    """A server certificate for `names` (issued by `ca`, or self-signed when None), written as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    issuer_key = ca.key if ca else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_moment(not_before))
        .not_valid_after(_moment(not_after))
        .add_extension(x509.SubjectAlternativeName([_alt_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = folder / f"{label}.crt", folder / f"{label}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


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
