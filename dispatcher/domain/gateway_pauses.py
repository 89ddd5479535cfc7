"""Gateways paused by a configuration fault or by their circuit breaker, as the ledger keeps them.

- A configuration fault (the provider refused our credentials, or could not fetch our document) pauses
  the gateway until an operator fixes the setting and runs `dispatch gateway resume NAME`.
- A run of transport failures through one gateway (connect errors, timeouts, 5xx: the gateway itself is
  down), ``failures`` in a row within ``window``, opens its circuit breaker: the gateway is paused, and
  after ``cooldown`` one trial send goes through (half-open). An answer closes the breaker; another
  transport failure opens it for another cool-down. An operator may resume it at any time.

While a gateway is paused the scheduler claims none of its deliveries (one at a time when a trial is
due), and the worker hands back any that still reach it without calling the provider. A delivery caught
by a fault waits on its route (``retry_wait``): not failed, its attempt not counted against the route,
no fallback to the next route, so its campaign is not completed while it waits. The state lives in the
ledger database (``gateway_states``), written only through the ledger, so every worker, scheduler and
`dispatch campaign show` sees it, across restarts.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.domain.ledger import CONFIGURATION_PAUSE, Ledger, redact_addresses
from dispatcher.domain.models import Delivery, GatewayState
from dispatcher.domain.settings import Settings
from dispatcher.domain.states import State

log = logging.getLogger(__name__)

CONFIGURATION = CONFIGURATION_PAUSE  # paused until an operator resumes it
BREAKER = "breaker"  # paused by the circuit breaker: a trial send after the cool-down
ERROR_CLASS = "config"  # delivery_events.error_class of a delivery held back by a paused gateway


@dataclass(frozen=True, kw_only=True)
class BreakerConfig:
    failures: int  # transport failures in a row that open the breaker
    window: timedelta  # ... when they all fall within this long
    cooldown: timedelta  # the breaker stays open this long before one trial send

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> BreakerConfig:
        """DISPATCH_BREAKER_FAILURES, _BREAKER_WINDOW_SECONDS and _BREAKER_COOLDOWN_SECONDS, unless overridden."""
        config = cls(
            failures=settings.breaker_failures,
            window=timedelta(seconds=settings.breaker_window_seconds),
            cooldown=timedelta(seconds=settings.breaker_cooldown_seconds),
        )
        return replace(config, **overrides)


class Gate(enum.StrEnum):
    """What a gateway's state means for a delivery that is due."""

    SEND = "send"
    HOLD = "hold"  # paused: nothing goes
    TRIAL = "trial"  # breaker half-open: one send may go


@dataclass(frozen=True)
class Pause:
    """A paused gateway, as read from the ledger."""

    name: str
    cause: str  # CONFIGURATION | BREAKER
    since: datetime
    reason: str
    setting: str | None
    trial_after: datetime | None

    def gate(self, *, now: datetime) -> Gate:
        """Hold everything; for the breaker, one trial once its cool-down has passed."""
        if self.cause == BREAKER and self.trial_after is not None and now >= self.trial_after:
            return Gate.TRIAL
        return Gate.HOLD

    def alert(self) -> str:
        """One line for the operator: what is paused, since when, why, and what to do."""
        since = f"{self.since:%Y-%m-%d %H:%M:%S} UTC"
        resume = f"`dispatch gateway resume {self.name}`"
        if self.cause == BREAKER:
            trial = f"{self.trial_after:%H:%M:%S} UTC" if self.trial_after else "after the cool-down"
            return (
                f"gateway {self.name} paused since {since}: {self.reason}; one trial send at {trial}, or run {resume}"
            )
        return f"gateway {self.name} paused since {since}: {self.reason}; fix the setting, then run {resume}"


def pauses(session: Session) -> dict[str, Pause]:
    """Every paused gateway, by name."""
    rows = session.scalars(select(GatewayState).where(GatewayState.paused_at.is_not(None)).order_by(GatewayState.name))
    return {row.name: _pause(row) for row in rows}


def pause_of(session: Session, name: str) -> Pause | None:
    row = session.get(GatewayState, name)
    return _pause(row) if row is not None and row.paused_at is not None else None


def queue_gates(session: Session, *, now: datetime, gateways: Mapping[str, str]) -> dict[str, Gate]:
    """What the pauses mean for each queue ("fax", "email", "copies" -> its gateway's name), for the
    queues that may not send freely; one trial at a time per gateway, on its first queue."""
    paused = pauses(session)
    gates: dict[str, Gate] = {}
    trials: set[str] = set()
    for queue, name in gateways.items():
        pause = paused.get(name)
        if pause is None:
            continue
        gate = pause.gate(now=now)
        if gate is Gate.TRIAL and name in trials:
            gate = Gate.HOLD
        trials.add(name)
        gates[queue] = gate
    return gates


def states(session: Session) -> dict[str, GatewayState]:
    """Every gateway the ledger knows something about (paused, or counting failures), by name."""
    return {row.name: row for row in session.scalars(select(GatewayState).order_by(GatewayState.name))}


def _pause(row: GatewayState) -> Pause:
    assert row.paused_at is not None and row.cause is not None
    return Pause(row.name, row.cause, row.paused_at, row.reason, row.setting, row.trial_after)


# -- configuration faults -----------------------------------------------------------------------------


def pause_for_configuration(ledger: Ledger, name: str, *, at: datetime, reason: str, setting: str | None) -> bool:
    """Pause gateway ``name`` until an operator resumes it; logs at ERROR the first time. True when newly paused."""
    reason = redact_addresses(reason)
    if not ledger.pause_gateway(name, cause=CONFIGURATION, at=at, reason=reason, setting=setting):
        return False
    log.error(
        "gateway %s paused: %s; check %s, then run `dispatch gateway resume %s`",
        name,
        reason,
        setting or "its settings",
        name,
    )
    return True


def wait_on_route(
    ledger: Ledger,
    delivery: Delivery,
    *,
    actor: str,
    now: datetime,
    reason: str,
    error_code: str | None = None,
    provider_event_id: str | None = None,
) -> None:
    """The delivery waits on its current route for its gateway: ``retry_wait``, due at once (the scheduler
    holds it while the gateway is paused). Not failed, and no fallback: the route is not at fault."""
    ledger.move(
        delivery,
        State.RETRY_WAIT,
        actor=actor,
        at=now,
        error_class=ERROR_CLASS,
        reason=f"{reason}; waiting on this route until gateway {delivery.gateway} sends again",
        provider_event_id=provider_event_id,
        data={"error_code": error_code} if error_code else None,
        not_before=now,
    )


def hold_reported_fault(
    ledger: Ledger,
    delivery: Delivery,
    *,
    actor: str,
    now: datetime,
    reason: str,
    setting: str | None,
    error_code: str | None,
    provider_event_id: str | None,
) -> None:
    """A provider reported, after accepting the send, that our configuration failed it (it could not fetch
    our document): nothing reached the addressee, so the attempt no longer counts, the gateway is paused
    and the delivery waits on its route."""
    gateway = delivery.gateway or "?"
    ledger.not_sent(delivery, delivery.attempt_count, detail=reason)
    pause_for_configuration(ledger, gateway, at=now, reason=reason, setting=setting)
    wait_on_route(
        ledger,
        delivery,
        actor=actor,
        now=now,
        reason=reason,
        error_code=error_code,
        provider_event_id=provider_event_id,
    )


# -- the circuit breaker ------------------------------------------------------------------------------


def record_transport_failure(ledger: Ledger, name: str, *, at: datetime, config: BreakerConfig, reason: str) -> bool:
    """Count one transport failure; open the breaker when they reach ``config.failures`` within the window.
    True when this failure opened it."""
    failures = ledger.count_gateway_failure(name, at=at, window=config.window)
    if failures < config.failures:
        return False
    return open_breaker(ledger, name, at=at, config=config, reason=f"{failures} transport failures in a row ({reason})")


def open_breaker(ledger: Ledger, name: str, *, at: datetime, config: BreakerConfig, reason: str) -> bool:
    """Pause the gateway for a cool-down, after which one trial send goes; logs at ERROR. True when newly paused."""
    reason = redact_addresses(reason)
    trial_after = at + config.cooldown
    opened = ledger.pause_gateway(name, cause=BREAKER, at=at, reason=reason, setting=None, trial_after=trial_after)
    if opened:  # not when a configuration pause holds the gateway already
        log.error(
            "gateway %s: circuit breaker open: %s; one trial send at %s, or run `dispatch gateway resume %s`",
            name,
            reason,
            f"{trial_after:%H:%M:%S} UTC",
            name,
        )
    return opened


def take_trial(ledger: Ledger, name: str, *, at: datetime, config: BreakerConfig) -> bool:
    """Whether this caller sends the half-open breaker's one trial (another gets its turn a cool-down later)."""
    return ledger.take_gateway_trial(name, at=at, next_trial=at + config.cooldown)


def close_breaker(ledger: Ledger, name: str, *, at: datetime) -> bool:
    """The trial send got an answer: the gateway sends again. A configuration pause is left alone."""
    closed = ledger.resume_gateway(name, at=at, cause=BREAKER)
    if closed:
        log.warning("gateway %s: circuit breaker closed: the trial send got an answer", name)
    return closed


def resume(ledger: Ledger, name: str, *, at: datetime) -> bool:
    """An operator resumes a paused gateway (either cause); True when it was paused."""
    resumed = ledger.resume_gateway(name, at=at)
    if resumed:
        log.warning("gateway %s resumed by an operator", name)
    return resumed
