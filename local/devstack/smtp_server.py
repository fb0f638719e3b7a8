"""The local stack's SMTP server (aiosmtpd): the local "internet" that delivery reaches. It accepts and keeps
every message, one `.eml` per recipient's transaction in its folder (when it has one), and answers each
recipient as told (`replies`: an address to an SMTP reply such as "550 5.1.1 No such user", or "drop" to
close the connection at RCPT), so tests can make a relay that says 250, 550 or 451 per recipient."""

from __future__ import annotations

import itertools
import random
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Received:
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    tls: bool
    authenticated_as: str | None


class _Handler:
    def __init__(self, sink: MailSink):
        self.sink = sink

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.sink.note_rcpt(address)
        answer = self.sink.replies.get(address.lower()) or self.sink.injected_fault()
        if answer == "drop":
            assert server.transport is not None
            server.transport.close()
            return "421 4.4.2 Connection dropped"
        if answer is not None:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        received = Received(
            mail_from=str(envelope.mail_from),
            recipients=tuple(envelope.rcpt_tos),
            data=content,
            tls=session.ssl is not None,
            authenticated_as=session.auth_data.decode() if isinstance(session.auth_data, bytes) else None,
        )
        number = self.sink.keep(received)
        return f"250 2.0.0 Ok: queued as local-{number}"


def _free_port() -> int:
    """A loopback port to listen on (aiosmtpd's controller connects to the port it was given to check that
    the server is up, so it cannot be given 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MailSink:
    """An SMTP server on 127.0.0.1 that keeps what it receives. `tls_context` offers STARTTLS;
    `credentials` ({username: password}) requires AUTH (over TLS when STARTTLS is offered)."""

    def __init__(
        self,
        *,
        port: int = 0,
        folder: Path | None = None,
        tls_context: ssl.SSLContext | None = None,
        credentials: dict[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.replies: dict[str, str] = {}
        # Faults injected at random into that share of transactions (tests of "nothing lost, nothing twice")
        self.fault_rate = 0.0
        self._faults = random.Random(7)  # noqa: S311 - seeded fault injection, not security
        self.received: list[Received] = []
        self.rcpts: list[str] = []  # every RCPT TO asked, refused ones too
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        kwargs: dict[str, Any] = {"decode_data": False, "enable_SMTPUTF8": True}
        if tls_context is not None:
            kwargs["tls_context"] = tls_context
        if credentials is not None:
            kwargs.update(
                auth_required=True,
                auth_require_tls=tls_context is not None,
                authenticator=self._authenticator(credentials),
            )
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=port or _free_port(), **kwargs
        )
        self._running = False

    @staticmethod
    def _authenticator(credentials: dict[str, str]) -> Any:
        def authenticate(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            if isinstance(data, LoginPassword):
                user, password = data.login.decode(), data.password.decode()
                if credentials.get(user) == password:
                    return AuthResult(success=True, auth_data=data.login)
            return AuthResult(success=False, handled=False)

        return authenticate

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> MailSink:
        self._controller.start()
        self._running = True
        return self

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._controller.stop()

    def injected_fault(self) -> str | None:
        """With probability `fault_rate`: a throttle, a temporary refusal or a dropped connection."""
        with self._lock:
            if self.fault_rate <= 0 or self._faults.random() >= self.fault_rate:
                return None
            return self._faults.choice(
                ("421 4.7.0 Too many connections, slow down", "451 4.3.0 Try again", "drop")
            )

    def keep(self, received: Received) -> int:
        with self._lock:
            number = next(self._numbers)
            self.received.append(received)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / f"{number:06d}.eml").write_bytes(received.data)
        return number

    def note_rcpt(self, address: str) -> None:
        with self._lock:
            self.rcpts.append(address.lower())

    def asked_for(self, address: str) -> int:
        """How many times a sender asked for this recipient (RCPT TO), whatever the answer."""
        with self._lock:
            return self.rcpts.count(address.lower())

    def to(self, address: str) -> list[Received]:
        """What arrived for one recipient."""
        with self._lock:
            return [r for r in self.received if address.lower() in (x.lower() for x in r.recipients)]
