"""The one writer of delivery state: what the domain rules and the worker path need from it.

Everything that changes a delivery's state, its ``last_error``, its attempts or the append-only
``delivery_events`` goes through a ``Ledger``, and so does a gateway's pause and circuit-breaker state
(``gateway_states``, see dispatcher/domain/gateway_pauses.py). Its one implementation (``ledger_sql.SqlLedger``)
checks each move against the state machine and stores every reason through ``stored_text``, so a
supporter's address never reaches the log, the read API or an operator's screen. Reads (which rows
are due, which attempt came first) stay with the callers' own queries in the same transaction.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from dispatcher.domain.models import Delivery
from dispatcher.domain.states import DeliveryKind, State

ADDRESS = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")
# a reason with one of these targets is also what the delivery shows as its last error
KEEPS_LAST_ERROR = frozenset({State.FAILED, State.SKIPPED, State.RETRY_WAIT, State.UNKNOWN})
CONFIGURATION_PAUSE = "configuration"  # gateway_states.cause of a pause only an operator lifts


def redact_addresses(text: str) -> str:
    """Replace every email address in ``text`` (e.g. an SMTP reply echoing the recipient)."""
    return ADDRESS.sub("<address>", text)


def redact(text: str, words: Sequence[str], marker: str) -> str:
    """``text`` with every occurrence of each of ``words`` (any case; the longest first) replaced by ``marker``."""
    for word in sorted({w for w in words if w.strip()}, key=len, reverse=True):
        text = re.sub(re.escape(word), marker, text, flags=re.IGNORECASE)
    return text


def stored_text(kind: str, text: str) -> str:
    """The form in which a reason or a provider's detail is stored for a delivery of ``kind``.

    A supporter's copy never keeps an address: the supporter's own data stays out of the ledger's log."""
    return redact_addresses(text) if kind == DeliveryKind.COPY else text


@dataclass(frozen=True)
class Planned:
    """A delivery to insert at load time, in its first state (planned, or skipped with a reason)."""

    values: dict[str, Any]  # the deliveries row, without state or last_error
    state: State
    reason: str


@dataclass(frozen=True)
class Due:
    """A delivery the scheduler moves to ``queued`` in bulk, as read by its locked SELECT."""

    id: int
    campaign_id: int
    kind: str
    state: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Submitted:
    """A receipt the worker records in bulk (``SqlLedger.submit_many``): the claim it answers, the
    document sent and the provider's id."""

    delivery_id: int
    campaign_id: int
    kind: str
    attempt: int
    provider_id: str
    reason: str
    document_sha256: str | None
    page_count: int | None
    evidence: dict[str, Any]


@dataclass(frozen=True)
class Finished:
    """How one attempt ended, with the document that was (or was not) sent."""

    outcome: str  # submitted | transient | permanent | unknown | not-sent | late
    document_sha256: str | None = None
    page_count: int | None = None
    provider_id: str | None = None
    error_code: str | None = None
    detail: str | None = None
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True)
class Erased:
    """What erasing a person from their copies touched: the copies' events and attempts (rows kept)."""

    events: int
    attempts: int


class Ledger(Protocol):
    """Writes to deliveries, attempts and delivery_events, in the caller's transaction."""

    def plan(self, campaign_id: int, rows: Sequence[Planned], *, actor: str) -> None:
        """Insert a campaign's deliveries and their first events, in bulk."""

    def discard_draft(self, campaign_id: int) -> None:
        """Delete an unsent draft's deliveries (their events go with them)."""

    def move(
        self,
        delivery: Delivery,
        target: State,
        *,
        actor: str,
        at: datetime,
        reason: str = "",
        error_class: str | None = None,
        provider_id: str | None = None,
        provider_event_id: str | None = None,
        data: dict[str, Any] | None = None,
        not_before: datetime | None = None,
    ) -> None:
        """Move ``delivery`` to ``target`` (checked against the state machine) and log the event;
        ``not_before``, when given, is when the scheduler may take it up next."""

    def note(
        self,
        delivery: Delivery,
        *,
        actor: str,
        at: datetime,
        reason: str,
        error_class: str | None = None,
        provider_id: str | None = None,
        provider_event_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Log an event that changes no state (a provider's progress report, a hold)."""

    def queue(self, due: Sequence[Due], *, actor: str, at: datetime) -> None:
        """Move rows the caller locked to ``queued`` in bulk, with their events."""

    def requeued(self, delivery: Delivery, *, at: datetime) -> None:
        """A queued delivery was published again (its first message was lost)."""

    def wait(self, delivery: Delivery, *, until: datetime) -> None:
        """The scheduler takes ``delivery`` up again no sooner than ``until``."""

    def wait_all(self, campaign_id: int, *, kind: str, state: str, until: datetime) -> int:
        """Every delivery of ``kind`` in ``state`` in the campaign waits until ``until``, in one statement;
        returns how many."""

    def claim(
        self, delivery: Delivery, *, actor: str, at: datetime, lease_until: datetime, gateway: str, reports: bool
    ) -> int | None:
        """Compare-and-set ``queued -> sending`` with a lease, its event and a new attempt row.
        Returns the attempt's number, or None when another process got there first."""

    def renew(self, delivery_id: int, attempt: int, *, at: datetime, until: datetime) -> bool:
        """Compare-and-set the lease of attempt ``attempt`` to ``until``, only while the delivery is still
        ``sending`` for that attempt and its lease has not run out at ``at``. False: the claim is lost
        (expired, swept to ``unknown``, recorded, or claimed again), and nothing may be sent for it."""

    def finish_attempt(self, delivery: Delivery, number: int, *, at: datetime, finished: Finished) -> None:
        """Record how attempt ``number`` ended, and the document the delivery sent."""

    def identify(self, delivery: Delivery, provider_id: str) -> None:
        """The provider's id for the current attempt, where the delivery and the attempt have none yet."""

    def attach(self, delivery: Delivery, provider_id: str) -> None:
        """The provider's id for the current attempt only, where it has none yet."""

    def not_sent(self, delivery: Delivery, number: int, *, detail: str) -> None:
        """Attempt ``number`` turned out to send nothing (the provider could not fetch our document):
        it no longer counts against the route."""

    def erase(self, delivery_ids: Sequence[int], *, marker: str, personal: Sequence[str]) -> Erased:
        """Take a person out of these supporter copies, whose rows, states, times and attempts stay: the
        destination becomes ``marker`` and the link to the supporter goes; the attempts' provider evidence
        is replaced by ``{marker: True}``; ``personal`` (their address and name) is replaced by ``marker``
        in the last error and the attempts' details; the events' ``data`` is cleared (NULL), the one change
        the event log's append-only trigger allows."""

    # -- gateways (gateway_states) -----------------------------------------------------------------

    def pause_gateway(
        self,
        name: str,
        *,
        cause: str,
        at: datetime,
        reason: str,
        setting: str | None,
        trial_after: datetime | None = None,
    ) -> bool:
        """Pause gateway ``name`` for ``cause`` ("configuration" or "breaker", with the time of its trial send).
        A configuration pause is kept as it is (its first time and reason); a breaker pause gives way to a
        configuration one, or is re-armed. True when anything changed."""

    def resume_gateway(self, name: str, *, at: datetime, cause: str | None = None) -> bool:
        """The gateway sends again (only if paused for ``cause``, when given) and its failure count is
        cleared; True when it was paused."""

    def count_gateway_failure(self, name: str, *, at: datetime, window: timedelta) -> int:
        """One more transport failure in a row; the count restarts when the first of them is older than
        ``window``. Returns the count."""

    def clear_gateway_failures(self, name: str) -> None:
        """The gateway answered: its run of transport failures is over."""

    def take_gateway_trial(self, name: str, *, at: datetime, next_trial: datetime) -> bool:
        """Compare-and-set: the caller sends the open breaker's one trial when it is due; the next trial is
        due at ``next_trial`` should this one never report. False when it is not due or another caller took it."""


def new_idempotency_key() -> str:
    """A fresh random key for one delivery, stored with it: it goes to providers and into Message-IDs.

    Random, not derived from the campaign (whose names, numbers and addresses are public): a status
    webhook names a delivery by this key, so nobody outside the ledger may be able to compute it.
    "d" and 31 hex digits (124 random bits) fit a Message-ID's left part and every provider's
    reference field (Telnyx client_state as base64, Phaxio tags, Sinch labels, Postmark Metadata,
    SendGrid custom_args, Mailgun variables)."""
    return "d" + secrets.token_hex(16)[:31]
