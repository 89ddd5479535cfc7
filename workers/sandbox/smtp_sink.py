"""A local SMTP server (aiosmtpd) that keeps what it accepts and follows scripted outcomes.

Every accepted message is kept (envelope, Message-ID, parsed message) and recorded in the oracle of a
:class:`SandboxState`: one entry per accepted recipient, reference = the Message-ID's left part,
provider_id = the Message-ID. Outcomes are scripted per recipient address and consumed at RCPT:

    ok, bounce, soft_bounce,         250 at RCPT; the message is accepted (SMTP sends no status back,
    complaint                        so a bounce or a complaint is only marked in the oracle)
    rate_limited, server_error,      451 at RCPT: nothing accepted for that recipient
    busy, no_answer, no_fax_tone     (the fax-only ones act as the nearest SMTP analog, "try later")
    invalid_number                   550 at RCPT, "no such mailbox"
    unauthorized                     530 at RCPT, "authentication required" (RFC 4954), as a relay
                                     that wants AUTH answers a client that sent none
    drop, bad_gateway                250 at RCPT; after DATA the message is recorded as accepted and the
                                     connection is closed without the final reply

One entry per recipient means a message with a Cc has several entries under one reference; judge
"never twice" per (reference, destination). (The renderer sends each email to a single recipient.)

``state.latency`` delays the final reply to DATA (after the message is recorded), so a client timeout
there is a genuine "accepted, but the client never heard".
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import hmac
import socket
import threading
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from workers.sandbox.core import SandboxState

RCPT_REPLIES: dict[str, str] = {
    "rate_limited": "451 4.7.1 Rate limit exceeded, try again later",
    "server_error": "451 4.3.0 Temporary server error, try again later",
    "busy": "451 4.4.5 System busy, try again later",
    "no_answer": "451 4.4.1 No answer from host, try again later",
    "no_fax_tone": "451 4.4.1 No answer from host, try again later",
    "invalid_number": "550 5.1.1 No such mailbox",
    "unauthorized": "530 5.7.0 Authentication required",
}
DROP_OUTCOMES = frozenset({"drop", "bad_gateway"})


@dataclass(frozen=True)
class SinkMessage:
    """One message the sink accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message_id: str
    message: email.message.EmailMessage
    outcomes: Mapping[str, str]  # recipient -> the scripted outcome consumed at RCPT
    session: int  # which SMTP session (1-based) carried it
    raw: bytes


class _SinkEnvelope(Envelope):
    """An envelope that remembers the outcome consumed for each recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: dict[str, str] = {}


class _SinkSMTP(SMTP):
    """One client connection; numbered when it first greets, so the sink can count sessions."""

    session_number = 0

    def _create_envelope(self) -> Envelope:
        return _SinkEnvelope()


@dataclass
class _Handler:
    """The aiosmtpd handler: applies scripted outcomes and records accepted messages."""

    state: SandboxState
    messages: list[SinkMessage] = field(default_factory=list)
    sessions: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _greeted(self, server: SMTP) -> None:
        """Number a session on its first EHLO/HELO (a second EHLO, after STARTTLS, is the same one)."""
        if isinstance(server, _SinkSMTP) and not server.session_number:
            with self.lock:
                self.sessions += 1
                server.session_number = self.sessions

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self._greeted(server)
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str) -> Any:
        self._greeted(server)
        return MISSING

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Consume this recipient's next outcome; refuse it at RCPT or accept it."""
        outcome = self.state.next_outcome(address)
        refusal = RCPT_REPLIES.get(outcome)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        if isinstance(envelope, _SinkEnvelope):
            envelope.outcomes[address] = outcome
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep and record the message; then answer, wait, or drop the connection unanswered."""
        sink_message = self._keep(server, envelope)
        if DROP_OUTCOMES & set(sink_message.outcomes.values()):
            _drop_connection(server)
            return "250 2.0.0 never sent"  # written to a closed transport, so the client never reads it
        if self.state.latency:
            await asyncio.sleep(self.state.latency)
        return f"250 2.0.0 Ok: queued as {sink_message.message_id}"

    def _keep(self, server: SMTP, envelope: Envelope) -> SinkMessage:
        """Parse, keep and record one accepted message (one oracle entry per recipient)."""
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)  # guaranteed by policy.default
        message_id = str(parsed.get("Message-ID", "")).strip()
        outcomes = dict(envelope.outcomes) if isinstance(envelope, _SinkEnvelope) else {}
        kept = SinkMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            message_id=message_id,
            message=parsed,
            outcomes=outcomes,
            raw=raw,
            session=getattr(server, "session_number", 0),
        )
        with self.lock:
            self.messages.append(kept)
        for rcpt in kept.rcpt_tos:
            self.state.record(
                provider_id=message_id,
                reference=reference_of(message_id) or None,
                destination=rcpt,
                outcome=outcomes.get(rcpt, "ok"),
            )
        return kept


def _drop_connection(server: SMTP) -> None:
    """Close the client's connection as smtp_QUIT does: stop the session task, then the transport."""
    task = getattr(server, "_handler_coroutine", None)
    if task is not None:
        task.cancel()  # the pending reply write then ends in a quiet cancellation, not a logged error
    if server.transport is not None:
        server.transport.close()


def reference_of(message_id: str) -> str:
    """Our reference: the left part of ``<reference@domain>``."""
    return message_id.strip().strip("<>").rpartition("@")[0]


class _SinkController(Controller):
    """A Controller that serves on a socket bound in advance (port 0 works) with our SMTP class."""

    def __init__(self, handler: _Handler, sock: socket.socket, **kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)
        self._sock = sock

    def factory(self) -> SMTP:
        return _SinkSMTP(self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


class SmtpSink:
    """A local SMTP sink on 127.0.0.1 in a background thread; ``with SmtpSink() as sink: ...``."""

    def __init__(
        self,
        state: SandboxState | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.state = state or SandboxState(provider="smtp")
        self.host = host
        self.port = port
        self._credentials = (username, password) if username is not None else None
        self._handler = _Handler(self.state)
        self._controller: _SinkController | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    @property
    def sessions(self) -> int:
        """How many SMTP sessions (connections that greeted) the sink has served."""
        with self._handler.lock:
            return self._handler.sessions

    def messages(self) -> list[SinkMessage]:
        """Every accepted message, oldest first."""
        with self._handler.lock:
            return list(self._handler.messages)

    def script(self, recipient: str, outcomes: Iterable[str]) -> None:
        """Queue outcomes for the next messages to ``recipient`` (see the module docstring)."""
        self.state.script(recipient, outcomes)

    def start(self) -> SmtpSink:
        """Bind and serve; returns self once the server answers."""
        sock = socket.create_server((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._controller = _SinkController(
            self._handler, sock, server_hostname="sandbox.smtp.test", ready_timeout=10.0, **self._auth_kwargs()
        )
        self._controller.start()
        return self

    def _auth_kwargs(self) -> dict[str, Any]:
        """With credentials: offer AUTH over plain TCP (loopback sandbox only) and check them."""
        if self._credentials is None:
            return {}
        # Not auth_required: aiosmtpd warns on every session when AUTH is required without TLS.
        # A client that logs in is still checked, which is what the gateway's tests need.
        return {"auth_require_tls": False, "authenticator": self._authenticate}

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """Accept exactly the configured username and password."""
        if not isinstance(auth_data, LoginPassword) or self._credentials is None:
            return AuthResult(success=False, handled=False)
        username, password = self._credentials
        ok_user = hmac.compare_digest(auth_data.login, (username or "").encode())
        ok_password = hmac.compare_digest(auth_data.password, (password or "").encode())
        return AuthResult(success=ok_user and ok_password, handled=False)

    def stop(self) -> None:
        """Stop serving and close every client connection."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
