"""TLS for the local stack (TLS=1): a local certificate authority, made once and kept in the state
folder, that signs a certificate for every host name a client asks for (SNI). A browser that maps
`email.<domain>` to this server then gets a certificate for exactly that name, and is told to trust the
local CA by its key pin (`--ignore-certificate-errors-spki-list`), not by ignoring certificate errors."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ssl
import threading
import time
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devstack.tlslab import Authority, make_ca

DEFAULT_NAMES = ["localhost", "127.0.0.1"]


class LocalCertificates:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = self._load_or_make_ca()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.crt"

    def _load_or_make_ca(self) -> Authority:
        cert_path, key_path = self.folder / "ca.crt", self.folder / "ca.key"
        if cert_path.exists() and key_path.exists():
            return trustme.CA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
        ca = make_ca("opentracking local CA")
        ca.private_key_pem.write_to_path(str(key_path))
        key_path.chmod(0o600)
        ca.cert_pem.write_to_path(str(cert_path))
        return ca

    def spki_pin(self) -> str:
        """base64(SHA-256(SubjectPublicKeyInfo)) of the local CA, as Chromium's SPKI list wants it."""
        spki = (
            x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def _context_for(self, names: list[str]) -> ssl.SSLContext:
        key = names[0]
        with self._lock:
            if key not in self._contexts:
                now = time.time()
                label = "host-" + hashlib.sha256(key.encode()).hexdigest()[:16]
                leaf = self.ca.issue_cert(
                    *names,
                    not_before=datetime.datetime.fromtimestamp(now - 86400, datetime.UTC),
                    not_after=datetime.datetime.fromtimestamp(now + 90 * 86400, datetime.UTC),
                )
                cert, private = self.folder / f"{label}.crt", self.folder / f"{label}.key"
                # Serve the chain (leaf, then the CA), so a client that pins the CA's key finds it.
                cert.write_bytes(
                    b"".join(pem.bytes() for pem in leaf.cert_chain_pems) + self.ca.cert_pem.bytes()
                )
                leaf.private_key_pem.write_to_path(str(private))
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(cert, private)
                self._contexts[key] = context
            return self._contexts[key]

    def server_context(self) -> ssl.SSLContext:
        context = self._context_for(DEFAULT_NAMES)

        def pick(sock: ssl.SSLSocket, server_name: str | None, _context: ssl.SSLContext) -> None:
            if server_name and server_name.lower() not in DEFAULT_NAMES:
                sock.context = self._context_for([server_name.lower()])

        context.sni_callback = pick
        return context
