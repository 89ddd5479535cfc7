"""Waking the scheduler when a command made deliveries due: on PostgreSQL a NOTIFY sent in the command's
transaction, which the scheduler hears only once it commits; in one process, an event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, select

from dispatcher.domain import db
from dispatcher.domain.models import Delivery
from dispatcher.processes.wakeup import EventWakeup, PostgresWakeup, notify

from .conftest import _drop_postgres_database, _fresh_postgres_database
from .spawn import base_env, dispatch

LONG = 60.0  # a wait that a wake-up ends at once; the test would only take this long if it failed


@pytest.fixture
def engine() -> Iterator[Engine]:
    name, url = _fresh_postgres_database()
    engine = db.make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        _drop_postgres_database(name)


@pytest.mark.postgres
def test_a_committed_notify_wakes_the_scheduler(engine: Engine) -> None:
    factory = db.session_factory(engine)
    wakeup = PostgresWakeup(engine)
    try:
        assert wakeup.wait(0.05) is False  # listening now; nothing sent yet
        for _ in range(3):  # several commands before the scheduler woke
            with db.transaction(factory) as session:
                notify(session)
        assert wakeup.wait(LONG) is True
        # the wake-ups already received are served by that one tick; one still on its way may wake it once
        # more (a tick too many is harmless), never more often than there were commands
        extra = 0
        while wakeup.wait(0.2):
            extra += 1
            assert extra < 3
    finally:
        wakeup.close()


@pytest.mark.postgres
def test_a_rolled_back_command_wakes_nobody(engine: Engine) -> None:
    factory = db.session_factory(engine)
    wakeup = PostgresWakeup(engine)
    try:
        wakeup.wait(0.01)
        with pytest.raises(RuntimeError), db.transaction(factory) as session:
            notify(session)
            raise RuntimeError("the command failed")
        assert wakeup.wait(0.2) is False
    finally:
        wakeup.close()


def test_notify_on_sqlite_does_nothing(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    with db.transaction(db.session_factory(engine)) as session:
        notify(session)  # no LISTEN/NOTIFY on SQLite: the scheduler ticks as before


def test_an_event_wakes_the_in_process_scheduler() -> None:
    wakeup = EventWakeup()
    assert wakeup.wait(0.01) is False
    wakeup.wake()
    assert wakeup.wait(LONG) is True
    assert wakeup.wait(0.01) is False


@pytest.mark.postgres
@pytest.mark.redis
def test_schedule_wakes_a_scheduler_that_ticks_once_an_hour(tmp_path: Path, example_file: Path) -> None:
    name, url = _fresh_postgres_database()
    env = base_env(
        tmp_path,
        DISPATCH_DATABASE_URL=url,
        DISPATCH_CHECK_CREDENTIALS="false",
        DISPATCH_QUEUE_PREFIX=f"test-wakeup-{name}-",
    )
    scheduler = None
    try:
        db.upgrade(url)
        assert dispatch("campaign", "load", str(example_file), "--skip-invalid", env=env, cwd=tmp_path).finish(
            timeout=LONG
        )
        scheduler = dispatch("scheduler", "--interval", "3600", env=env, cwd=tmp_path)
        scheduler.wait_for(lambda line: "listening" in line)  # after its first tick, asleep for an hour
        dispatch("campaign", "schedule", "north-korean-refugees-2015", env=env, cwd=tmp_path).finish(timeout=LONG)
        scheduler.wait_for(lambda line: "woken" in line, timeout=LONG)
        engine = db.make_engine(url)
        with db.reading(db.session_factory(engine)) as session:
            queued = session.scalars(select(Delivery.id).where(Delivery.state == "queued")).all()
        engine.dispose()
        assert queued, "the woken tick queued the campaign's due deliveries"
    finally:
        if scheduler is not None:
            scheduler.stop()
        _drop_postgres_database(name)
        broker = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for key in broker.scan_iter(match=f"test-wakeup-{name}-*"):
            broker.delete(key)
