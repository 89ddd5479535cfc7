"""Letters from one broker message go through a pipeline (workers/delivery.py, ``_pipelined``): the next
is claimed and rendered while the current one is with the provider. Against the Telnyx emulator, on
SQLite and PostgreSQL; the sandbox's oracle judges "never twice"."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.models import Attempt, Delivery, utcnow
from dispatcher.domain.scheduling import claim_due
from workers.delivery import WorkerContext, deliver_many

from ..builders import build_campaign
from .conftest import Sandbox, schedule_campaign

XI_1, WANG = "+861063070900", "+861065591516"  # the example's two fax letters that may go first


def queued_faxes(factory: sessionmaker[Session], tmp_path: Path) -> list[int]:
    schedule_campaign(factory, build_campaign(tmp_path))
    with transaction(factory) as session:
        claimed = claim_due(session, now=utcnow(), limit=100)
    return [c.id for c in claimed if c.channel == "fax"]


def by_destination(factory: sessionmaker[Session], ids: list[int]) -> dict[str, str]:
    with factory() as session:
        return {d.destination: d.state for d in session.scalars(select(Delivery).where(Delivery.id.in_(ids)))}


def test_the_next_fax_is_claimed_while_the_current_one_is_sent(
    factory: sessionmaker[Session],
    worker: WorkerContext,
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = queued_faxes(factory, tmp_path)
    assert len(ids) == 2
    gateway = worker.gateways["fax"]
    send = gateway.send
    seen: list[dict[str, str]] = []

    def watching(message: Any) -> Any:
        # while this fax is with the provider, the other may be claimed: wait for it (a few seconds at most)
        deadline = time.monotonic() + 5
        while "queued" in (states := by_destination(factory, ids)).values() and time.monotonic() < deadline:
            time.sleep(0.02)
        seen.append(states)
        return send(message)

    monkeypatch.setattr(gateway, "send", watching)
    summary = deliver_many(worker, ids)
    assert sum(n for outcome, n in summary.items() if outcome == "submitted" or outcome.startswith("receipt")) == 2
    # while the first fax was with the provider, the second was already claimed (and rendered)
    assert seen[0] == {XI_1: "sending", WANG: "sending"}
    assert sorted(e.destination for e in sandbox.fax.oracle()) == [XI_1, WANG]
    assert sandbox.duplicates() == {}


def test_a_time_limit_during_a_send_records_the_fax_prepared_ahead_as_not_sent(
    factory: sessionmaker[Session],
    worker: WorkerContext,
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = queued_faxes(factory, tmp_path)

    def cut(message: Any) -> Any:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(worker.gateways["fax"], "send", cut)
    with pytest.raises(SoftTimeLimitExceeded):
        deliver_many(worker, ids)
    first, second = ids
    with factory() as session:
        states = {d.id: d.state for d in session.scalars(select(Delivery).where(Delivery.id.in_(ids)))}
        attempts = {
            a.delivery_id: (a.outcome, a.error_code)
            for a in session.scalars(select(Attempt).where(Attempt.delivery_id.in_(ids)))
        }
    # the fax cut mid-call may have reached the provider: unknown, reconciled by reference, never resent
    # blindly; the one prepared ahead never left: not sent, retried after backoff, not counted
    assert states == {first: "unknown", second: "retry_wait"}
    assert attempts == {first: ("unknown", "timeout"), second: ("not-sent", "batch-stopped")}
    assert sandbox.fax.oracle() == []


def test_a_faxs_outcome_is_recorded_while_the_next_fax_is_with_the_provider(
    factory: sessionmaker[Session],
    worker: WorkerContext,
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recording the first fax's acceptance does not keep the line to the provider idle: the second fax's call
    starts before the first's record is written (the record waits here until it has), and both end recorded."""
    ids = queued_faxes(factory, tmp_path)
    gateway = worker.gateways["fax"]
    send = gateway.send
    second_started = threading.Event()
    seen: list[dict[str, str]] = []

    def watching(message: Any) -> Any:
        seen.append(by_destination(factory, ids))
        if len(seen) == 2:
            second_started.set()
        return send(message)

    def before_record(delivery_id: int) -> None:
        if delivery_id == ids[0] or delivery_id == ids[1]:
            second_started.wait(timeout=5)

    monkeypatch.setattr(gateway, "send", watching)
    worker.hooks["before_record"] = before_record
    summary = deliver_many(worker, ids)
    assert len(seen) == 2
    assert list(seen[1].values()).count("sending") == 2  # the first fax was not yet recorded: both in flight
    assert sum(n for outcome, n in summary.items() if outcome == "submitted" or outcome.startswith("receipt")) == 2
    assert set(by_destination(factory, ids).values()) <= {"submitted", "delivered"}
    assert sorted(e.destination for e in sandbox.fax.oracle()) == [XI_1, WANG]
    assert sandbox.duplicates() == {}
