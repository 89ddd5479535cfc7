"""SMTP: the universal email gateway, over one reused connection per gateway instance.

How SMTP answers map to our errors (the phase matters: only the end of DATA can deliver anything):

- connect: refused, timed out, dropped, 4xx greeting (421 busy) -> ``Transient``; 5xx greeting ->
  ``Permanent``; TLS, STARTTLS or AUTH refused, and an authentication reply (530, 534, 535, 538: RFC 4954)
  in any phase -> ``ConfigurationFault`` naming the ``DISPATCH_<NAME>_*`` settings to check: the relay
  refuses us, not the address, so the gateway is paused and the letter waits
- MAIL / RCPT / the DATA command: 4xx -> ``Transient``, 5xx -> ``Permanent`` (reply code kept in
  ``code``); a connection lost before DATA -> ``Transient`` (the server holds no message yet)
- after DATA was sent, a connection dropped or timed out before the final reply -> ``Unknown``: the
  server may have queued the letter and SMTP offers no way to ask, so an operator must check
- final reply 250 -> a :class:`Receipt` whose ``provider_id`` is the Message-ID (status "queued")

The connection is kept between messages. One idle for more than ``IDLE_CHECK_SECONDS`` must answer NOOP
first; one used just now is not asked (a NOOP before every message cost a round trip each). If the server
closed it all the same, the loss shows at MAIL or RCPT, before anything was sent, and the message is
sent once on a fresh connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import logging
import os
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.domain.messages import EmailMessage, Receipt, StatusEvent
from dispatcher.domain.rendering.mime import sender_address, to_bytes
from dispatcher.domain.states import Channel
from workers.gateways.base import Gateway
from workers.gateways.errors import (
    ConfigurationFault,
    DeliveryError,
    GatewayConfigError,
    Permanent,
    StatusLookupError,
    Transient,
    Unknown,
)
from workers.gateways.registry import env_prefix

log = logging.getLogger(__name__)

Security = Literal["starttls", "ssl", "plain"]
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "ssl": 465, "plain": 25}
ACCEPTED_RCPT = frozenset({250, 251})  # 251 "user not local; will forward" is an acceptance too
AUTH_REPLY_CODES = frozenset({530, 534, 535, 538})  # auth required / too weak / invalid / needs TLS
# A connection idle longer than this is checked with NOOP before a message; servers drop idle clients
# after minutes (Postfix's smtpd_timeout: 300 s), so one used just now is taken as it is.
IDLE_CHECK_SECONDS = 5.0

# Everything smtplib, socket and ssl raise on a live connection. SMTPException and ssl.SSLError are
# OSError subclasses already; both are named so the intent survives a reader who does not know that.
TRANSPORT_ERRORS = (smtplib.SMTPException, ssl.SSLError, OSError)


class SmtpSettings(BaseSettings):
    """One SMTP relay, read from ``DISPATCH_<NAME>_*`` (HOST, PORT, SECURITY, USERNAME, ...)."""

    # The registry passes the prefix of the configured name; this default keeps a direct
    # SmtpSettings(...) from reading bare variables such as USERNAME or PORT from the environment.
    model_config = SettingsConfigDict(env_prefix="DISPATCH_SMTP_")

    host: str
    port: int | None = Field(default=None, gt=0, lt=65536)  # None: 587 / 465 / 25 by security
    security: Security = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = Field(default=30.0, gt=0)  # seconds, for the connect and for each reply
    helo_name: str | None = None  # EHLO name; None lets smtplib use this host's FQDN
    local_domain: str | None = None  # right part of Message-IDs made here; None: the sender's domain

    def resolved_port(self) -> int:
        """The configured port, or the standard one for the security mode."""
        return self.port or DEFAULT_PORTS[self.security]


@dataclasses.dataclass(frozen=True)
class _Envelope:
    """Who the server accepted at RCPT, and who it refused (address -> code, reply)."""

    accepted: list[str]
    refused: dict[str, tuple[int, str]]


class SmtpGateway(Gateway):
    """Send email through one SMTP relay; sends share one connection and are serialised by a lock."""

    provider: ClassVar[str] = "smtp"
    channel: ClassVar[Channel] = Channel.EMAIL
    settings_class: ClassVar[type[BaseSettings]] = SmtpSettings
    reports_delivery: ClassVar[bool] = False  # no webhooks, no lookup: the relay's 250 is the last word
    max_webhook_bytes: ClassVar[int] = 0  # SMTP reports nothing by webhook: no body is expected
    # The operator's own relay: no provider limit to honour. Postfix, the relay of the deployment
    # examples, limits no client by default (postconf(5): smtpd_client_message_rate_limit = 0,
    # smtpd_client_connection_rate_limit = 0), so the default only keeps a runaway campaign from flooding
    # a relay: 1,000/s, above what two worker processes reach (bench/README.md). A relay with limits of its
    # own (a hosted one's quota, smtpd_client_message_rate_limit) is mirrored in DISPATCH_GATEWAY_LIMITS.
    # Sends share one connection, so more calls in flight only queue.
    per_second: ClassVar[int] = 1000
    in_flight: ClassVar[int] = 10
    settings: SmtpSettings

    def __init__(self, settings: BaseSettings, *, name: str | None = None) -> None:
        if not isinstance(settings, SmtpSettings):
            raise GatewayConfigError(f"smtp gateway needs SmtpSettings, got {type(settings).__name__}")
        super().__init__(settings, name=name)
        self._prefix = env_prefix(self.name)
        if settings.username and settings.password is None:
            raise GatewayConfigError(
                f"gateway {self.name!r} (smtp): {self._prefix}USERNAME is set but {self._prefix}PASSWORD is missing"
            )
        self._lock = threading.Lock()
        self._conn: smtplib.SMTP | None = None
        self._conn_pid = 0  # the process that opened _conn; a forked child never reuses it
        self._used = 0.0  # monotonic time the connection last carried a message

    # -- the credential check at start-up ----------------------------------------------------------

    def _check_credentials(self) -> None:
        """Connect, EHLO, STARTTLS and AUTH (when credentials are set), then QUIT: nothing is sent."""
        with self._lock:
            try:
                conn = self._connect()
            except ConfigurationFault as err:
                detail = err.raw if isinstance(err.raw, str) else str(err)
                raise ConfigurationFault.refused(
                    err.setting or self._credentials(), by=self.name, detail=detail
                ) from err
            with contextlib.suppress(*TRANSPORT_ERRORS):
                conn.quit()

    # -- sending ----------------------------------------------------------------------------------

    def _send_email(self, message: EmailMessage) -> Receipt:
        """Send one email to ``to + cc``; the receipt's provider_id is its Message-ID."""
        message = self._with_message_id(message)
        recipients = _unique([*message.to, *message.cc])
        if not recipients:
            raise Permanent(f"{self.name}: {message.message_id} has no recipients", code="no_recipients")
        payload = to_bytes(message)
        sender = sender_address(message.sender)[1]
        with self._lock, self._discard_on_failure():
            conn, reused = self._connection()
            try:
                envelope = self._envelope(conn, sender, recipients, to=message.to, payload=payload)
            except Transient as err:
                if not (reused and err.code == "dropped"):
                    raise
                # the reused connection had been closed by the server (nothing sent before DATA): once
                # more on a fresh one
                self._drop()
                conn, _ = self._connection()
                envelope = self._envelope(conn, sender, recipients, to=message.to, payload=payload)
            reply = self._data(conn, payload, message.message_id)
            self._used = time.monotonic()
        # Addresses are personal data: INFO names the message and a count, never the recipients.
        log.info("%s: %s queued for %d recipient(s)", self.name, message.message_id, len(envelope.accepted))
        return self._receipt(message.message_id, envelope, reply)

    def _with_message_id(self, message: EmailMessage) -> EmailMessage:
        """Fill in ``<reference@local_domain>`` when the message came without a Message-ID."""
        if message.message_id.strip():
            return message
        domain = self.settings.local_domain or _domain_of(message.sender) or "localhost"
        return dataclasses.replace(message, message_id=f"<{message.reference}@{domain}>")

    def _receipt(self, message_id: str, envelope: _Envelope, reply: str) -> Receipt:
        """The receipt for a message the server queued; raw keeps the reply and any refused copies."""
        refused = {addr: {"code": code, "reply": text} for addr, (code, text) in envelope.refused.items()}
        raw = {
            "host": self.settings.host,
            "port": self.settings.resolved_port(),
            "reply": reply,
            "accepted": envelope.accepted,
            "refused": refused,
        }
        return Receipt(
            provider=self.provider, provider_id=message_id, accepted_at=datetime.now(UTC), status="queued", raw=raw
        )

    # -- the connection -----------------------------------------------------------------------------

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        """The open connection (and True), else a fresh one (and False). One used within the last
        ``IDLE_CHECK_SECONDS`` is taken as it is (no NOOP before every message: if the server closed it
        anyway, the MAIL command finds out, before anything is sent); an idle one must answer NOOP."""
        conn = self._conn
        fresh_enough = time.monotonic() - self._used < IDLE_CHECK_SECONDS
        if conn is not None and self._conn_pid == os.getpid() and (fresh_enough or _answers_noop(conn)):
            return conn, True
        self._drop()
        conn = self._connect()
        self._conn, self._conn_pid, self._used = conn, os.getpid(), time.monotonic()
        return conn, False

    def _connect(self) -> smtplib.SMTP:
        """Open, greet, secure and authenticate a new connection."""
        conn = self._open()
        try:
            self._greet(conn)
            if self.settings.security == "starttls":
                self._starttls(conn)
                self._greet(conn)  # RFC 3207: forget the plaintext EHLO and ask again over TLS
            if self.settings.username:
                self._login(conn)
        except DeliveryError:
            conn.close()
            raise
        log.debug("%s: connected to %s:%d", self.name, self.settings.host, self.settings.resolved_port())
        return conn

    def _open(self) -> smtplib.SMTP:
        """TCP (or implicit TLS) connect and read the greeting."""
        s = self.settings
        where = f"{s.host}:{s.resolved_port()}"
        try:
            if s.security == "ssl":
                return smtplib.SMTP_SSL(
                    s.host,
                    s.resolved_port(),
                    local_hostname=s.helo_name,
                    timeout=s.timeout,
                    context=ssl.create_default_context(),
                )
            return smtplib.SMTP(s.host, s.resolved_port(), local_hostname=s.helo_name, timeout=s.timeout)
        except smtplib.SMTPConnectError as err:  # the greeting was not 220, e.g. 421 "too busy"
            raise self._reply_error(f"greeting from {where}", err.smtp_code, err.smtp_error) from err
        except ssl.SSLError as err:
            raise self._tls_error(err) from err
        except TRANSPORT_ERRORS as err:  # refused, timed out, unreachable, closed before the greeting
            raise Transient(f"{self.name}: could not connect to {where} ({_describe(err)})", code="connect") from err

    def _greet(self, conn: smtplib.SMTP) -> None:
        """EHLO (HELO as fallback), unless already done on this connection."""
        try:
            conn.ehlo_or_helo_if_needed()
        except smtplib.SMTPHeloError as err:
            raise self._reply_error("EHLO", err.smtp_code, err.smtp_error) from err
        except TRANSPORT_ERRORS as err:
            raise Transient(f"{self.name}: connection lost at EHLO ({_describe(err)})", code="dropped") from err

    def _starttls(self, conn: smtplib.SMTP) -> None:
        """Upgrade to TLS; a server without STARTTLS is a configuration error, never a plaintext send."""
        try:
            code, reply = conn.starttls(context=ssl.create_default_context())
        except smtplib.SMTPNotSupportedError as err:
            raise ConfigurationFault(
                f"{self.name}: {self.settings.host} does not offer STARTTLS; check "
                f"{self._prefix}SECURITY and {self._prefix}PORT",
                code="starttls",
                setting=f"{self._prefix}SECURITY",
            ) from err
        except ssl.SSLError as err:
            raise self._tls_error(err) from err
        except TRANSPORT_ERRORS as err:
            raise Transient(f"{self.name}: connection lost at STARTTLS ({_describe(err)})", code="dropped") from err
        if code != 220:  # smtplib returns a refused STARTTLS instead of raising
            raise self._reply_error("STARTTLS", code, reply)

    def _login(self, conn: smtplib.SMTP) -> None:
        """AUTH with the configured credentials; a refusal names the settings to check."""
        s = self.settings
        password = s.password.get_secret_value() if s.password is not None else ""
        try:
            conn.login(s.username or "", password)
        except smtplib.SMTPAuthenticationError as err:
            raise self._reply_error("AUTH", err.smtp_code, err.smtp_error) from err
        except smtplib.SMTPServerDisconnected as err:
            raise Transient(f"{self.name}: connection lost at AUTH ({_describe(err)})", code="dropped") from err
        except smtplib.SMTPException as err:  # AUTH not offered, or no mechanism in common
            raise ConfigurationFault(
                f"{self.name}: cannot authenticate to {s.host} ({err}); check "
                f"{self._prefix}SECURITY, {self._prefix}USERNAME and {self._prefix}PASSWORD",
                code="auth",
                setting=self._credentials(),
            ) from err
        except TRANSPORT_ERRORS as err:
            raise Transient(f"{self.name}: connection lost at AUTH ({_describe(err)})", code="dropped") from err

    def _drop(self) -> None:
        """Forget the connection, closing its socket (no QUIT: it may be dead or mid-transaction)."""
        conn, self._conn = self._conn, None
        if conn is not None and self._conn_pid == os.getpid():
            conn.close()

    @contextmanager
    def _discard_on_failure(self) -> Iterator[None]:
        """After a failed send the session state is unclear; a fresh connection is cheap."""
        try:
            yield
        except DeliveryError:
            self._drop()
            raise
        except TRANSPORT_ERRORS as err:  # a safety net only: every phase maps its own errors
            self._drop()
            raise Unknown(
                f"{self.name}: unexpected {_describe(err)}; check before any resend", code="unexpected"
            ) from err

    def close(self) -> None:
        """QUIT and close the pooled connection."""
        with self._lock:
            conn = self._conn
            if conn is not None and self._conn_pid == os.getpid():
                try:
                    conn.quit()
                except TRANSPORT_ERRORS:
                    conn.close()
            self._conn = None

    # -- one transaction ----------------------------------------------------------------------------

    def _envelope(
        self, conn: smtplib.SMTP, sender: str, recipients: Sequence[str], *, to: Sequence[str], payload: bytes
    ) -> _Envelope:
        """MAIL FROM and one RCPT TO per recipient; raise unless the letter may go out."""
        options = self._mail_options(conn, payload, [sender, *recipients])
        code, reply = self._command("MAIL", conn.mail, sender, options)
        if code != 250:
            raise self._reply_error("MAIL", code, reply)
        envelope = _Envelope(accepted=[], refused={})
        for rcpt in recipients:
            code, reply = self._command("RCPT", conn.rcpt, rcpt)
            if code in ACCEPTED_RCPT:
                envelope.accepted.append(rcpt)
            else:
                envelope.refused[rcpt] = (code, reply)
        self._check_refusals(envelope, to)
        return envelope

    def _check_refusals(self, envelope: _Envelope, to: Sequence[str]) -> None:
        """Decide, before DATA, whether a partly refused envelope may still be sent.

        - Everything refused: nothing can be sent; 4xx anywhere -> Transient, else Permanent.
        - An addressee in To refused: abort, though the Cc were accepted. Delivering to the copies only
          would record the letter as sent while the official never got it, a lost letter; aborting
          before DATA sends nothing, so the next attempt (or route) duplicates nothing.
        - Only Cc refused: the official gets the letter, which makes a receipt; the refused copies go
          into ``raw`` so the ledger keeps them as evidence.
        """
        if not envelope.refused:
            return
        to_keys = {addr.lower() for addr in to}
        blocking = {a: r for a, r in envelope.refused.items() if a.lower() in to_keys or not envelope.accepted}
        if blocking:
            summary = "; ".join(f"{code} {reply}" for code, reply in blocking.values())
            codes = [code for code, _ in blocking.values()]
            auth = next(((c, r) for c, r in blocking.values() if c in AUTH_REPLY_CODES), None)
            if auth is not None:  # the relay wants other credentials: ours to fix, not the address
                raise self._reply_error("RCPT", *auth)
            cls = Transient if any(400 <= c < 500 for c in codes) else Permanent
            raise cls(
                f"{self.name}: {len(blocking)} addressee(s) refused at RCPT: {summary}",
                code=str(codes[0]),
                raw={"refused": blocking, "accepted": envelope.accepted},
            )

    def _mail_options(self, conn: smtplib.SMTP, payload: bytes, addresses: Iterable[str]) -> list[str]:
        """BODY=8BITMIME for non-ASCII bodies and SMTPUTF8 for non-ASCII addresses, as offered."""
        options = []
        if not payload.isascii() and conn.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        if not all(addr.isascii() for addr in addresses):
            if not conn.has_extn("smtputf8"):
                raise Permanent(
                    f"{self.name}: an address is not ASCII and {self.settings.host} does not offer SMTPUTF8",
                    code="smtputf8",
                )
            options.append("SMTPUTF8")
        return options

    def _command(self, phase: str, call: Callable[..., tuple[int, bytes]], *args: Any) -> tuple[int, str]:
        """Run one command before DATA; a lost connection here sent nothing, so it is Transient."""
        try:
            code, reply = call(*args)
        except TRANSPORT_ERRORS as err:
            raise Transient(f"{self.name}: connection lost at {phase} ({_describe(err)})", code="dropped") from err
        return code, _text(reply)

    def _data(self, conn: smtplib.SMTP, payload: bytes, message_id: str) -> str:
        """DATA, the message, and the final reply: the one step that can deliver, hence Unknown."""
        try:
            code, reply = conn.data(payload)
        except smtplib.SMTPDataError as err:  # the DATA command itself was refused: nothing sent
            raise self._reply_error("DATA", err.smtp_code, err.smtp_error) from err
        except TRANSPORT_ERRORS as err:
            # smtplib cannot tell "lost before 354" from "lost after the final dot"; the first sent
            # nothing, the second may have queued the letter. Only the safe answer is given: Unknown.
            raise Unknown(
                f"{self.name}: connection lost after DATA ({_describe(err)}); the server may "
                f"have queued {message_id}. SMTP has no status lookup: an operator must check "
                "the server's logs before any resend",
                code="dropped",
            ) from err
        if code != 250:
            raise self._reply_error("end of DATA", code, reply, after_data=True)
        return f"{code} {_text(reply)}"

    # -- error mapping ------------------------------------------------------------------------------

    def _reply_error(self, phase: str, code: int, reply: bytes | str, *, after_data: bool = False) -> DeliveryError:
        """Map an SMTP reply: 4xx Transient, 5xx Permanent (auth codes name the settings)."""
        text = f"{code} {_text(reply)}".strip()
        if code in AUTH_REPLY_CODES:
            return ConfigurationFault(
                f"{self.name}: {phase} refused ({text}); check {self._prefix}USERNAME and "
                f"{self._prefix}PASSWORD (and {self._prefix}SECURITY)",
                code=str(code),
                setting=self._credentials(),
                raw=text,
            )
        if 400 <= code < 500:
            return Transient(f"{self.name}: {phase} deferred ({text})", code=str(code))
        if 500 <= code < 600:
            return Permanent(f"{self.name}: {phase} refused ({text})", code=str(code))
        # Any other code is a protocol violation. Before DATA it sent nothing; after DATA it might have.
        cls = Unknown if after_data else Transient
        return cls(f"{self.name}: unexpected reply at {phase} ({text})", code=str(code))

    def _tls_error(self, err: ssl.SSLError) -> DeliveryError:
        """A peer that closes during the handshake may be busy; any other TLS failure is configuration."""
        if isinstance(err, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return Transient(f"{self.name}: connection closed during the TLS handshake", code="tls")
        return ConfigurationFault(
            f"{self.name}: TLS with {self.settings.host} failed ({err}); check "
            f"{self._prefix}HOST, {self._prefix}PORT, {self._prefix}SECURITY and the "
            "server's certificate",
            code="tls",
            setting=f"{self._prefix}SECURITY",
        )

    def _credentials(self) -> str:
        """The settings an authentication refusal points at."""
        return f"{self._prefix}USERNAME and {self._prefix}PASSWORD"

    # -- status -------------------------------------------------------------------------------------

    def _fetch_status(self, provider_id: str) -> StatusEvent:
        """SMTP has no status lookup."""
        raise StatusLookupError(
            f"{self.name}: SMTP offers no status lookup for {provider_id}; an operator must check the relay's logs"
        )

    def _find_by_reference(self, reference: str, *, to: str | None, sent_after: datetime | None) -> StatusEvent | None:
        """Raise, never return None: None would mean "never seen" and invite a duplicate send."""
        raise StatusLookupError(
            f"{self.name}: SMTP cannot look up {reference}; an operator must check the "
            "relay's logs for its Message-ID before any resend"
        )


def _answers_noop(conn: smtplib.SMTP) -> bool:
    """Whether a pooled connection is still usable (servers drop idle ones)."""
    try:
        return conn.noop()[0] == 250
    except TRANSPORT_ERRORS:
        return False


def _unique(addresses: Iterable[str]) -> list[str]:
    """Addresses in order, once each: a repeated RCPT may be delivered twice."""
    seen: dict[str, str] = {}
    for addr in addresses:
        seen.setdefault(addr.strip().lower(), addr.strip())
    return [addr for addr in seen.values() if addr]


def _domain_of(address: str) -> str:
    """The domain of an address (display name allowed); "" when there is none."""
    return email.utils.parseaddr(address)[1].rpartition("@")[2]


def _text(reply: bytes | str) -> str:
    """An SMTP reply as text, whatever bytes the server sent."""
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _describe(err: BaseException) -> str:
    """Exception type and text, for messages (the type alone says little: "OSError")."""
    detail = str(err)
    return f"{type(err).__name__}: {detail}" if detail else type(err).__name__
