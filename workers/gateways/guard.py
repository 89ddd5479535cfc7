"""The worker's SendGuard: gateway pauses and the circuit breaker, on the ledger's gateway_states.

Before a send: a paused gateway raises ``GatewayPaused`` (no call is made, the delivery waits on its
route), except the one trial send of a breaker whose cool-down has passed. After a send: a transport
failure (connect error, timeout, a dropped connection, HTTP 5xx) counts towards opening the breaker;
any answer from the provider (a receipt, a refusal of the message) ends the run, and closes the breaker
when it was the trial. The rules and the counts are dispatcher/domain/gateway_pauses.py's; every worker
process shares them through the ledger. A ledger that cannot be read here never stops a send: the
guard logs and lets it go (the send itself is recorded by the worker path as always).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import gateway_pauses
from dispatcher.domain.db import transaction
from dispatcher.domain.gateway_pauses import BreakerConfig, Gate, Pause
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.messages import Receipt
from dispatcher.domain.models import utcnow
from workers.gateways.base import Gateway
from workers.gateways.errors import (
    CHANNEL_MISMATCH,
    ConfigurationFault,
    DeliveryError,
    GatewayPaused,
    Unknown,
    transport_failure,
)

log = logging.getLogger(__name__)


def says_nothing(outcome: Receipt | DeliveryError) -> bool:
    """Outcomes that tell nothing of the gateway's health: no call made, our configuration, or ambiguous."""
    if isinstance(outcome, Receipt):
        return False
    return (
        isinstance(outcome, GatewayPaused | ConfigurationFault)
        or outcome.code == CHANNEL_MISMATCH
        or (isinstance(outcome, Unknown) and not transport_failure(outcome))
    )


class LedgerGuard:
    """A SendGuard whose state every worker shares through the ledger database."""

    def __init__(
        self, factory: sessionmaker[Session], config: BreakerConfig, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.factory = factory
        self.config = config
        self.clock = clock

    def before_send(self, gateway: Gateway) -> bool:
        now = self.clock()
        try:
            with transaction(self.factory) as session:
                pause = gateway_pauses.pause_of(session, gateway.name)
                if pause is None:
                    return False
                if pause.gate(now=now) is Gate.TRIAL and gateway_pauses.take_trial(
                    SqlLedger(session), gateway.name, at=now, config=self.config
                ):
                    log.warning("gateway %s: circuit breaker half-open: one trial send", gateway.name)
                    return True
        except SQLAlchemyError as err:
            log.error("gateway %s: its pause state could not be read (%s); sending", gateway.name, type(err).__name__)
            return False
        raise _paused(pause)

    def after_send(self, gateway: Gateway, outcome: Receipt | DeliveryError, *, trial: bool) -> None:
        if says_nothing(outcome):
            return
        now = self.clock()
        try:
            with transaction(self.factory) as session:
                self._count(SqlLedger(session), gateway.name, outcome, trial=trial, now=now)
        except SQLAlchemyError as err:
            log.error("gateway %s: its breaker count could not be written (%s)", gateway.name, type(err).__name__)

    def after_sends(self, gateway: Gateway, outcomes: Sequence[Receipt | DeliveryError], *, trial: bool) -> None:
        """The outcomes of a batch of sends, in order, counted in one transaction: each transport failure
        as after_send counts it, and a run of answers between them clears the count once."""
        counted = [o for o in outcomes if not says_nothing(o)]
        if not counted:
            return
        now = self.clock()
        try:
            with transaction(self.factory) as session:
                ledger = SqlLedger(session)
                for index, outcome in enumerate(counted):
                    answer_follows = index + 1 < len(counted) and not transport_failure(counted[index + 1])
                    if not transport_failure(outcome) and answer_follows:
                        continue  # the last answer of a run clears the count (and closes a trial) once
                    self._count(ledger, gateway.name, outcome, trial=trial and index == 0, now=now)
        except SQLAlchemyError as err:
            log.error("gateway %s: its breaker count could not be written (%s)", gateway.name, type(err).__name__)

    def _count(
        self, ledger: SqlLedger, name: str, outcome: Receipt | DeliveryError, *, trial: bool, now: datetime
    ) -> None:
        if not transport_failure(outcome):
            ledger.clear_gateway_failures(name)
            if trial:
                gateway_pauses.close_breaker(ledger, name, at=now)
            return
        reason = str(outcome)
        if trial:
            gateway_pauses.open_breaker(
                ledger, name, at=now, config=self.config, reason=f"the trial send failed: {reason}"
            )
        else:
            gateway_pauses.record_transport_failure(ledger, name, at=now, config=self.config, reason=reason)


def install_guard(gateways: Iterable[Gateway], guard: LedgerGuard) -> None:
    """Every send of these gateways goes through ``guard``."""
    for gateway in gateways:
        gateway.guard = guard


def _paused(pause: Pause) -> GatewayPaused:
    why = "circuit breaker open" if pause.cause == gateway_pauses.BREAKER else "configuration fault"
    return GatewayPaused(
        f"{pause.name}: paused ({why}) since {pause.since:%Y-%m-%d %H:%M:%S} UTC: {pause.reason}; nothing sent",
        code=f"paused-{pause.cause}",
    )
