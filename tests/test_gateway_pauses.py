"""Gateway pauses and circuit-breaker counts in the ledger (gateway_states), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import db, gateway_pauses
from dispatcher.domain.db import transaction
from dispatcher.domain.gateway_pauses import BREAKER, CONFIGURATION, BreakerConfig, Gate
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Base

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CONFIG = BreakerConfig(failures=3, window=timedelta(seconds=60), cooldown=timedelta(seconds=300))


def test_the_migrated_ledger_matches_the_models(db_url: str) -> None:
    engine = db.make_engine(db_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_a_configuration_pause_keeps_its_first_reason_until_resumed(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        ledger = SqlLedger(session)
        assert gateway_pauses.pause_for_configuration(ledger, "telnyx", at=T0, reason="HTTP 401", setting="K")
        assert not gateway_pauses.pause_for_configuration(
            ledger, "telnyx", at=T0 + timedelta(1), reason="x", setting="Y"
        )
    with factory() as session:
        pause = gateway_pauses.pause_of(session, "telnyx")
        assert pause is not None
        assert (pause.cause, pause.since, pause.reason, pause.setting) == (CONFIGURATION, T0, "HTTP 401", "K")
        assert pause.gate(now=T0 + timedelta(days=30)) is Gate.HOLD  # only an operator lifts it
    with transaction(factory) as session:
        assert gateway_pauses.resume(SqlLedger(session), "telnyx", at=T0)
        assert not gateway_pauses.resume(SqlLedger(session), "telnyx", at=T0)
    with factory() as session:
        assert gateway_pauses.pauses(session) == {}


def test_failures_in_a_row_within_the_window_open_the_breaker(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        ledger = SqlLedger(session)
        opened = [
            gateway_pauses.record_transport_failure(
                ledger, "sinch", at=T0 + timedelta(seconds=s), config=CONFIG, reason="500"
            )
            for s in (0, 10, 100, 110)  # 100 s after the first: the window (60 s) starts again
        ]
        assert opened == [False, False, False, False]
        ledger.clear_gateway_failures("sinch")  # an answer: the run is over
        opened = [
            gateway_pauses.record_transport_failure(
                ledger, "sinch", at=T0 + timedelta(seconds=s), config=CONFIG, reason="500"
            )
            for s in (200, 201, 202)
        ]
        assert opened == [False, False, True]
    with factory() as session:
        pause = gateway_pauses.pause_of(session, "sinch")
        assert pause is not None and pause.cause == BREAKER
        trial_at = T0 + timedelta(seconds=202) + CONFIG.cooldown
        assert pause.gate(now=trial_at - timedelta(seconds=1)) is Gate.HOLD
        assert pause.gate(now=trial_at) is Gate.TRIAL


def test_one_trial_per_cool_down(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        ledger = SqlLedger(session)
        gateway_pauses.open_breaker(ledger, "phaxio", at=T0, config=CONFIG, reason="down")
        due = T0 + CONFIG.cooldown
        assert not gateway_pauses.take_trial(ledger, "phaxio", at=due - timedelta(seconds=1), config=CONFIG)
        assert gateway_pauses.take_trial(ledger, "phaxio", at=due, config=CONFIG)
        assert not gateway_pauses.take_trial(ledger, "phaxio", at=due, config=CONFIG)  # another worker: no
        # the trial never reported (its worker died): another one a cool-down later
        assert gateway_pauses.take_trial(ledger, "phaxio", at=due + CONFIG.cooldown, config=CONFIG)
        assert gateway_pauses.close_breaker(ledger, "phaxio", at=due + CONFIG.cooldown)
    with factory() as session:
        assert gateway_pauses.pause_of(session, "phaxio") is None


def test_a_configuration_fault_outranks_the_breaker(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        ledger = SqlLedger(session)
        gateway_pauses.open_breaker(ledger, "smtp", at=T0, config=CONFIG, reason="down")
        assert gateway_pauses.pause_for_configuration(ledger, "smtp", at=T0, reason="535", setting="P")
        assert not gateway_pauses.open_breaker(ledger, "smtp", at=T0, config=CONFIG, reason="down")
        assert not gateway_pauses.take_trial(ledger, "smtp", at=T0 + timedelta(days=1), config=CONFIG)
        assert not gateway_pauses.close_breaker(ledger, "smtp", at=T0)  # a trial never lifts a configuration pause
    with factory() as session:
        pause = gateway_pauses.pause_of(session, "smtp")
        assert pause is not None and pause.cause == CONFIGURATION


def test_pause_reasons_never_keep_an_address(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        reason = "530 5.7.0 <ada.supporter@example.org>: authentication required"
        gateway_pauses.pause_for_configuration(SqlLedger(session), "smtp", at=T0, reason=reason, setting=None)
    with factory() as session:
        pause = gateway_pauses.pause_of(session, "smtp")
        assert pause is not None and "ada.supporter" not in pause.reason and "<address>" in pause.reason
