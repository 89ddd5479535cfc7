"""The scheduler and the worker apply the same sending rules (dispatcher/domain/rules.py): here the
deadline, at its very moment, on SQLite and PostgreSQL, with the real worker path and emulators."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.models import Delivery
from dispatcher.domain.scheduling import SchedulerConfig, claim_due, tick
from workers.delivery import WorkerContext, deliver

from ..builders import build_campaign
from .conftest import SETTINGS, Sandbox, schedule_campaign, states

DEADLINE = datetime(2030, 1, 1, tzinfo=UTC)
XI_2, GUO_EMAIL, WANG = "+861062381025", "gabzfwz@mps.gov.cn", "+861065591516"
REASON = "campaign deadline 2030-01-01T00:00:00+00:00 passed before it could be sent"


def test_at_the_deadline_the_worker_and_the_scheduler_both_stop(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = build_campaign(tmp_path, deadline=DEADLINE)
    schedule_campaign(factory, path, at=DEADLINE - timedelta(hours=1))
    with transaction(factory) as session:
        queued = {c.destination: c.id for c in claim_due(session, now=DEADLINE - timedelta(minutes=30), limit=100)}
    assert XI_2 not in queued  # the second route of Xi Jinping waits for the first one
    # one second before the deadline a queued letter goes out; at the deadline the next one does not
    assert deliver(replace(worker, clock=lambda: DEADLINE - timedelta(seconds=1)), queued[GUO_EMAIL]) == "submitted"
    assert deliver(replace(worker, clock=lambda: DEADLINE), queued[WANG]) == "deadline"
    with transaction(factory) as session:
        result = tick(session, now=DEADLINE, config=SchedulerConfig.from_settings(SETTINGS))
    assert result.deadline_failed == 1  # Xi Jinping's second fax, still planned
    assert (states(factory)[GUO_EMAIL], states(factory)[WANG], states(factory)[XI_2]) == (
        "submitted",
        "failed",
        "failed",
    )
    with factory() as session:
        reasons = dict(
            session.execute(
                select(Delivery.destination, Delivery.last_error).where(Delivery.destination.in_([WANG, XI_2]))
            ).all()
        )
    assert reasons == {WANG: REASON, XI_2: REASON}
    assert [e.destination for e in sandbox.mail.oracle()] == [GUO_EMAIL]
    assert sandbox.fax.oracle() == []
