"""The gateway contract: one base class whose public methods are the only way into a provider.

A provider module subclasses :class:`Gateway`, sets its class variables and implements the hooks its
provider supports:

- ``_send_fax(fax)`` or ``_send_email(email)``: the one of its ``channel``;
- ``_fetch_status(provider_id)``, ``_find_by_reference(reference, *, to, sent_after)`` and
  ``_parse_webhook(request)``; without them the base answers StatusLookupError / WebhookFormatError.

The public methods are template methods. :meth:`Gateway.send` refuses a message of the other channel
before any provider call (``Permanent``, code ``"channel"``), and asks the gateway's :class:`SendGuard`,
when one is installed (the worker installs workers/gateways/guard.py), whether it may send at all
(``GatewayPaused`` when the gateway is paused) and tells it every outcome (its circuit breaker).
A provider with a batch endpoint also sets ``max_batch`` (messages per request) and implements
``_send_email_batch(emails)``; :meth:`Gateway.send_many` is the template method over it (see there).

Every public method turns an exception that is not a :class:`~workers.gateways.errors.GatewayError`
(httpx, smtplib, socket, json, a KeyError from an odd payload) into the error its caller handles:
``Unknown`` from send (the provider may have the message), ``StatusLookupError`` from lookups,
``WebhookFormatError`` from webhooks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import ClassVar, Protocol, cast

from celery.exceptions import SoftTimeLimitExceeded
from pydantic_settings import BaseSettings

from dispatcher.domain.messages import EmailMessage, FaxMessage, Message, Receipt, StatusEvent, WebhookRequest
from dispatcher.domain.states import Channel
from workers.gateways.errors import (
    BATCH_STOPPED,
    CHANNEL_MISMATCH,
    ConfigurationFault,
    DeliveryError,
    GatewayError,
    GatewayPaused,
    Permanent,
    StatusLookupError,
    Transient,
    Unknown,
    WebhookFormatError,
    transport_failure,
)

log = logging.getLogger(__name__)


class SendGuard(Protocol):
    """Whether a gateway may send now, and what each send said of the gateway itself."""

    def before_send(self, gateway: Gateway) -> bool:
        """Raise GatewayPaused when the gateway is paused; True when this send is its breaker's trial."""

    def after_send(self, gateway: Gateway, outcome: Receipt | DeliveryError, *, trial: bool) -> None:
        """Count the outcome: a transport failure, or an answer from the provider."""

    def after_sends(self, gateway: Gateway, outcomes: Sequence[Receipt | DeliveryError], *, trial: bool) -> None:
        """Count the outcomes of a batch of sends, in order, at once."""


class Gateway:
    """Base of every provider adapter."""

    provider: ClassVar[str]
    channel: ClassVar[Channel]
    settings_class: ClassVar[type[BaseSettings]]
    # The largest status webhook body this provider sends, in bytes, stated by each provider with the
    # reason: the web app answers a larger one 413 before reading on, and parse_webhook refuses it.
    max_webhook_bytes: ClassVar[int]
    # The default send rate and calls in flight through this gateway, all workers together, from what
    # the provider documents (stated by each provider with its source, "not documented" where it states
    # none); DISPATCH_GATEWAY_LIMITS overrides them (workers/runtime.py, workers/limits.py).
    per_second: ClassVar[int]
    in_flight: ClassVar[int]
    # False for gateways that never report delivery (SMTP): their acceptance is the final word
    reports_delivery: ClassVar[bool] = True
    # True for providers that fetch the document from a URL we serve (Telnyx): needs DISPATCH_SECRET_KEY
    needs_media_url: ClassVar[bool] = False
    # Messages in one provider request of send_many: 1 sends each alone through send; more than 1 needs the
    # provider's batch hook (_send_email_batch). max_batch_bytes (None: no cap) bounds one request's body,
    # each message counted by _batch_bytes.
    max_batch: ClassVar[int] = 1
    max_batch_bytes: ClassVar[int | None] = None

    def __init__(self, settings: BaseSettings, *, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or self.provider
        self.guard: SendGuard | None = None  # pauses and the circuit breaker; none outside the worker

    # -- the public contract ----------------------------------------------------------------------

    def send(self, message: Message) -> Receipt:
        """Hand one message to the provider: a Receipt, or Transient, Permanent, Unknown, ConfigurationFault,
        or GatewayPaused (the guard's: no call made).

        A message of the other channel (a fax given to an email gateway) is refused before any provider
        call with ``Permanent`` code ``"channel"``.
        """
        guard = self.guard
        trial = guard.before_send(self) if guard is not None else False
        try:
            receipt = self._guarded_send(message)
        except DeliveryError as err:
            if guard is not None:
                guard.after_send(self, err, trial=trial)
            raise
        if guard is not None:
            guard.after_send(self, receipt, trial=trial)
        return receipt

    def send_many(
        self, messages: Sequence[Message], outcomes: list[Receipt | DeliveryError] | None = None
    ) -> list[Receipt | DeliveryError]:
        """Hand many messages to the provider: one outcome per message, in their order, appended to
        ``outcomes`` (a new list unless given) as each is known and returned; a message's own failure is
        its outcome, never raised. Celery's soft time limit still propagates, as from send: the outcomes
        appended so far are known, the message (or request) under way is unknown (reconciled by its
        reference, never resent blindly), and the ones after it were not sent.

        With ``max_batch`` 1 the messages go one after the other (over one connection where the provider
        keeps one: see :meth:`_send_each`). Otherwise the messages go in requests of at most
        ``max_batch`` messages (and ``max_batch_bytes``), split here, each request
        keeping what :meth:`send` does for one message:

        - a message of the other channel is refused (``Permanent`` code ``"channel"``) and left out;
        - the guard is asked once before each request: when it raises ``GatewayPaused`` every message of
          the request gets it and no call is made; when it grants the breaker's trial, the trial request
          carries the first message alone, and the others wait for the guard's next answer;
        - a failure of the whole request (a transport failure, an HTTP error the provider module raises)
          is the outcome of each of its messages, and an exception that is not a GatewayError is
          ``Unknown`` for each (code ``"unexpected"``): the provider may have them all;
        - the guard is told once per request (``after_send``): its circuit breaker counts calls to the
          provider, not messages. A request that failed without an answer is one transport failure (told
          500 times, one timed-out batch would open the breaker at once); a request the provider answered
          is one answer, told as its first receipt, or its first refusal when it accepted none. One
          ledger write per request, not per message, is also what batching is for.
        """
        outcomes = [] if outcomes is None else outcomes
        if self.max_batch <= 1:
            self._send_each(messages, outcomes)
            return outcomes
        for chunk in self._chunks(messages):
            outcomes += self._send_chunk(chunk)
        return outcomes

    def _chunks(self, messages: Sequence[Message]) -> list[list[Message]]:
        """Requests of at most ``max_batch`` messages and ``max_batch_bytes`` (a larger message goes alone)."""
        chunks: list[list[Message]] = []
        size = 0
        for message in messages:
            weight = self._batch_bytes(message) if self.max_batch_bytes is not None else 0
            cap = self.max_batch_bytes
            if not chunks or len(chunks[-1]) >= self.max_batch or (cap is not None and size + weight > cap):
                chunks.append([])
                size = 0
            chunks[-1].append(message)
            size += weight
        return chunks

    def _send_chunk(self, chunk: Sequence[Message]) -> list[Receipt | DeliveryError]:
        """One chunk: channel refusals first, then requests as the guard allows (see send_many)."""
        outcomes: list[Receipt | DeliveryError | None] = [
            None if channel_of(message) is self.channel else self._channel_refusal(message) for message in chunk
        ]
        pending = [index for index, outcome in enumerate(outcomes) if outcome is None]
        guard = self.guard
        while pending:
            try:
                trial = guard.before_send(self) if guard is not None else False
            except DeliveryError as err:  # GatewayPaused: no call for any of them
                for index in pending:
                    outcomes[index] = err
                break
            batch, pending = (pending[:1], pending[1:]) if trial else (pending, [])
            results = self._guarded_batch([chunk[index] for index in batch])
            if guard is not None:
                guard.after_send(self, _request_outcome(results), trial=trial)
            for index, result in zip(batch, results, strict=True):
                outcomes[index] = result
        return [outcome for outcome in outcomes if outcome is not None]

    def _guarded_batch(self, messages: Sequence[Message]) -> list[Receipt | DeliveryError]:
        """One provider request inside the error boundary: a failure of the whole request, or an answer
        that does not pair with the messages, is the outcome of every message."""
        try:
            with _Boundary(
                self, "send_many", lambda text: Unknown(f"{text}; reconcile before any resend", code="unexpected")
            ):
                results = self._send_email_batch(cast(Sequence[EmailMessage], messages))  # channel checked
                if len(results) != len(messages):
                    raise Unknown(
                        f"{self.name}: {len(results)} outcomes for {len(messages)} messages; reconcile them",
                        code="unexpected",
                    )
                return list(results)
        except DeliveryError as err:
            return [err] * len(messages)

    def _channel_refusal(self, message: Message) -> Permanent:
        return Permanent(
            f"{self.name}: {channel_mismatch(self.name, self.provider, self.channel, channel_of(message))}",
            code=CHANNEL_MISMATCH,
        )

    def _send_each(self, messages: Sequence[Message], outcomes: list[Receipt | DeliveryError]) -> None:
        """send_many with ``max_batch`` 1: ``messages`` to the provider one after the other (over one
        connection where the provider keeps one), appending each one's outcome to ``outcomes`` as send()
        would give it (a Receipt or the DeliveryError), so a caller interrupted midway knows which were
        sent.

        The guard is asked once before the batch and told every outcome once after it. A paused gateway
        sends none (each GatewayPaused); a breaker's trial sends only the first message. After a
        transport failure (no answer) or a ConfigurationFault the rest are not sent (Transient, code
        ``batch-stopped``, not counted against their routes): a provider that does not answer one
        message will not answer the next, each waiting out its timeout, and a configuration fault pauses
        the gateway once recorded, as the per-delivery path's next send would find. Any other exception
        from one send is Unknown for that message, as in the per-delivery path."""
        guard = self.guard
        try:
            trial = guard.before_send(self) if guard is not None else False
        except GatewayPaused as paused:
            outcomes.extend(paused for _ in messages)
            return
        sent: list[Receipt | DeliveryError] = []
        try:
            for message in messages:
                if sent and (trial or _stops_a_batch(sent[-1])):
                    # the earlier send's kind and code only: its text may name its own recipient
                    earlier = f"{type(sent[-1]).__name__} ({getattr(sent[-1], 'code', None)})"
                    why = "the breaker's trial goes alone" if trial else f"an earlier send of this batch got {earlier}"
                    outcomes.append(Transient(f"{self.name}: not sent: {why}", code=BATCH_STOPPED))
                    continue
                outcome = self._send_one(message)
                sent.append(outcome)
                outcomes.append(outcome)
        finally:
            if guard is not None and sent:
                guard.after_sends(self, sent, trial=trial)

    def _send_one(self, message: Message) -> Receipt | DeliveryError:
        try:
            return self._guarded_send(message)
        except DeliveryError as err:
            return err
        except SoftTimeLimitExceeded:
            raise
        except Exception as err:  # by contract a send maps its errors; anything else may have left: Unknown
            log.error("gateway %s raised %s in a batch send; outcome unknown", self.name, type(err).__name__)
            return Unknown(f"{self.name} raised {type(err).__name__}", code="unexpected-error")

    def _guarded_send(self, message: Message) -> Receipt:
        """The send inside the error boundary, the channel checked first."""
        with _Boundary(self, "send", lambda text: Unknown(f"{text}; reconcile before any resend", code="unexpected")):
            if self.channel is Channel.FAX and isinstance(message, FaxMessage):
                return self._send_fax(message)
            if self.channel is Channel.EMAIL and isinstance(message, EmailMessage):
                return self._send_email(message)
        raise self._channel_refusal(message)

    def fetch_status(self, provider_id: str) -> StatusEvent:
        """The provider's current state of one message; StatusLookupError when it cannot tell."""
        with _Boundary(self, "fetch_status", StatusLookupError):
            return self._fetch_status(provider_id)

    def find_by_reference(
        self, reference: str, *, to: str | None = None, sent_after: datetime | None = None
    ) -> StatusEvent | None:
        """Our message by its reference, to reconcile an Unknown outcome; None only when the provider
        answered that it has no such message, StatusLookupError when it cannot tell.

        ``to`` (the destination) and ``sent_after`` narrow the search where the provider can filter by
        them; a provider that cannot ignores them.
        """
        with _Boundary(self, "find_by_reference", StatusLookupError):
            return self._find_by_reference(reference, to=to, sent_after=sent_after)

    def parse_webhook(self, request: WebhookRequest) -> list[StatusEvent]:
        """Verify and decode a status webhook; WebhookAuthError / WebhookFormatError when refused."""
        if len(request.body) > self.max_webhook_bytes:
            raise WebhookFormatError(f"{self.name}: webhook body over {self.max_webhook_bytes} bytes")
        with _Boundary(self, "parse_webhook", WebhookFormatError):
            return self._parse_webhook(request)

    def check_credentials(self) -> None:
        """The provider's cheapest authenticated call, made at start-up: ConfigurationFault when the provider
        refuses our credentials, another DeliveryError when it cannot be reached or cannot tell."""
        with _Boundary(self, "check_credentials", lambda text: Transient(f"{text}: not checked", code="unexpected")):
            self._check_credentials()

    def close(self) -> None:
        """Release pooled connections."""

    # -- the provider's hooks ---------------------------------------------------------------------

    def _send_fax(self, fax: FaxMessage) -> Receipt:
        """The provider's send, in a gateway whose channel is fax."""
        raise NotImplementedError(f"{self.provider}: a fax gateway implements _send_fax")

    def _send_email(self, email: EmailMessage) -> Receipt:
        """The provider's send, in a gateway whose channel is email."""
        raise NotImplementedError(f"{self.provider}: an email gateway implements _send_email")

    def _send_email_batch(self, emails: Sequence[EmailMessage]) -> Sequence[Receipt | DeliveryError]:
        """The provider's batch send (``max_batch`` > 1): one outcome per email, in order. Raise a
        DeliveryError for a failure of the whole request; return each email's own failure."""
        raise NotImplementedError(f"{self.provider}: a gateway with max_batch > 1 implements _send_email_batch")

    def _batch_bytes(self, message: Message) -> int:
        """What one message adds to a batch request's body, for ``max_batch_bytes``."""
        return 0

    def _check_credentials(self) -> None:
        """The provider's cheapest authenticated call; nothing to check by default."""

    def _fetch_status(self, provider_id: str) -> StatusEvent:
        raise StatusLookupError(f"{self.name}: {self.provider} offers no status lookup")

    def _find_by_reference(self, reference: str, *, to: str | None, sent_after: datetime | None) -> StatusEvent | None:
        raise StatusLookupError(f"{self.name}: {self.provider} offers no lookup by reference")

    def _parse_webhook(self, request: WebhookRequest) -> list[StatusEvent]:
        raise WebhookFormatError(f"{self.name}: {self.provider} sends no status webhooks")


def _request_outcome(results: Sequence[Receipt | DeliveryError]) -> Receipt | DeliveryError:
    """What one batch request says of the gateway: its first receipt, else its first refusal, else its
    first outcome (an Unknown entry of an answer says less than a refusal; a failure of the whole request
    is the same error for every message)."""
    return next(
        (r for r in results if isinstance(r, Receipt)),
        next((r for r in results if not isinstance(r, Unknown)), results[0]),
    )


def channel_of(message: Message) -> Channel:
    """The channel a message travels on."""
    return Channel.FAX if isinstance(message, FaxMessage) else Channel.EMAIL


def channel_mismatch(name: str, provider: str, channel: Channel, wanted: Channel) -> str:
    """The sentence for a gateway of one channel put where another is needed."""
    return f"gateway {name!r} (provider {provider}) sends {channel}, not {wanted}"


class _Boundary:
    """Lets errors of ours through and turns any other exception into ``error`` (with ``from``).

    Celery's soft time limit is let through too: the worker path records the send as unknown and ends
    the task. Only the exception's class is kept in the error and the log: its text may hold a
    recipient's address (a supporter's personal data)."""

    def __init__(self, gateway: Gateway, operation: str, error: Callable[[str], GatewayError]) -> None:
        self.gateway = gateway
        self.operation = operation
        self.error = error

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if value is None or isinstance(value, GatewayError | SoftTimeLimitExceeded) or not isinstance(value, Exception):
            return
        name = type(value).__name__
        log.warning("%s: unexpected %s in %s", self.gateway.name, name, self.operation)
        raise self.error(f"{self.gateway.name}: unexpected {name} in {self.operation}") from value


def _stops_a_batch(outcome: Receipt | DeliveryError) -> bool:
    """No answer, or our configuration refused: the rest of a batch is not sent (Gateway.send_many)."""
    return transport_failure(outcome) or isinstance(outcome, ConfigurationFault)
