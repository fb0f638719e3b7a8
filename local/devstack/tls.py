"""TLS for the local stack (TLS=1): a local certificate authority, made once and kept in the state
folder, that signs a certificate for every host name a client asks for (SNI). A browser that maps
`email.<domain>` to this server then gets a certificate for exactly that name, and is told to trust the
local CA by its key pin (`--ignore-certificate-errors-spki-list`), not by ignoring certificate errors."""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devstack.tlslab import DAY, Authority, make_ca, make_leaf

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
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            return Authority(key, cert)  # type: ignore[arg-type]
        ca = make_ca("opentracking local CA", int(time.time()))
        key_path.write_bytes(
            ca.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        cert_path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
        return ca

    def spki_pin(self) -> str:
        """base64(SHA-256(SubjectPublicKeyInfo)) of the local CA, as Chromium's SPKI list wants it."""
        spki = self.ca.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def _context_for(self, names: list[str]) -> ssl.SSLContext:
        key = names[0]
        with self._lock:
            if key not in self._contexts:
                now = int(time.time())
                label = "host-" + hashlib.sha256(key.encode()).hexdigest()[:16]
                cert, private = make_leaf(self.folder, label, names, now - DAY, now + 90 * DAY, self.ca)
                # Serve the chain (leaf, then the CA), so a client that pins the CA's key finds it.
                cert.write_bytes(cert.read_bytes() + self.ca.cert.public_bytes(serialization.Encoding.PEM))
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
