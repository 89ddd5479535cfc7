"""The circuit breaker on the real worker path: Telnyx emulator, our web app, SQLite and PostgreSQL.

Three faxes each get a 500 from the emulator: three transport failures in a row open the breaker and
the gateway is paused; nothing is sent during the cool-down; then one trial send goes (half-open). A
failing trial opens the breaker again; an answered one closes it and the rest go, each fax once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import gateway_pauses
from dispatcher.domain.gateway_pauses import BREAKER, BreakerConfig, Pause
from dispatcher.domain.media import media_url
from dispatcher.domain.models import Attempt, Delivery
from dispatcher.processes.views import gateway_alerts
from workers.delivery import WorkerContext
from workers.gateways.guard import LedgerGuard, install_guard

from ..builders import build_campaign, official
from .conftest import Sandbox, campaign_status, drive, schedule_campaign, states, worker_context

NUMBERS = {  # E.164 -> as written in the campaign file
    "+861063070900": "+86 10 6307 0900",
    "+861065591516": "+86 10 6559 1516",
    "+861062381025": "+86 10 6238 1025",
}
COOL_DOWN = timedelta(seconds=2)
CONFIG = BreakerConfig(failures=3, window=timedelta(seconds=60), cooldown=COOL_DOWN)


def three_faxes(tmp_path: Path) -> Path:
    to, *cc = [official(f"Minister {i}", fax=[written]) for i, written in enumerate(NUMBERS.values())]
    return build_campaign(tmp_path, to=[to], cc=cc, supporters=[], route_policy="all-routes")


def guarded_worker(factory: sessionmaker[Session], sandbox: Sandbox) -> WorkerContext:
    worker = worker_context(
        factory,
        sandbox.gateways(),
        media_url=lambda delivery_id, at: media_url(sandbox.web_url, delivery_id, secret=sandbox.secret, now=at),
    )
    install_guard(worker.gateways.values(), LedgerGuard(factory, CONFIG, clock=worker.clock))
    return worker


def pause(factory: sessionmaker[Session]) -> Pause | None:
    with factory() as session:
        return gateway_pauses.pause_of(session, "telnyx")


def attempts(factory: sessionmaker[Session]) -> list[tuple[str, int, str | None, datetime]]:
    """(destination, number, outcome, started_at) of every fax attempt, oldest first."""
    with factory() as session:
        rows = session.execute(
            select(Delivery.destination, Attempt.number, Attempt.outcome, Attempt.started_at)
            .join(Delivery, Delivery.id == Attempt.delivery_id)
            .order_by(Attempt.started_at, Attempt.id)
        ).all()
        return [tuple(row) for row in rows]  # type: ignore[misc]


def next_in_line(factory: sessionmaker[Session]) -> str:
    """The fax the scheduler takes first once it may claim one (its order: not_before, then id)."""
    with factory() as session:
        waiting = select(Delivery.destination).where(Delivery.state == "retry_wait")
        return session.scalars(waiting.order_by(Delivery.not_before, Delivery.id)).first() or ""


def test_a_run_of_server_errors_opens_the_breaker_and_one_answered_trial_closes_it(
    factory: sessionmaker[Session], sandbox: Sandbox, tmp_path: Path
) -> None:
    for number in NUMBERS:
        sandbox.fax.script(number, ["server_error"])
    worker = guarded_worker(factory, sandbox)
    name = schedule_campaign(factory, three_faxes(tmp_path))

    drive(worker, until=lambda: pause(factory) is not None)
    opened = pause(factory)
    assert opened is not None and opened.cause == BREAKER and "3 transport failures in a row" in opened.reason
    assert [a[2] for a in attempts(factory)] == ["transient"] * 3
    assert set(states(factory).values()) == {"retry_wait"}  # each waits on its route
    with factory() as session:
        [alert] = gateway_alerts(session)  # what `dispatch campaign show` prints above its tables
    assert alert.startswith("gateway telnyx paused since ") and "one trial send at" in alert
    trial = next_in_line(factory)
    sandbox.fax.script(trial, ["server_error"])  # the first trial fails too

    drive(worker, until=lambda: len(attempts(factory)) == 4)
    reopened = pause(factory)
    assert reopened is not None and reopened.since == opened.since and reopened.trial_after is not None
    assert opened.trial_after is not None and reopened.trial_after >= opened.trial_after + COOL_DOWN
    fourth = attempts(factory)[3]
    assert (fourth[0], fourth[2]) == (trial, "transient")
    assert fourth[3] >= opened.trial_after  # nothing went during the cool-down: only the trial, after it

    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert pause(factory) is None  # the second trial was answered: the breaker closed
    assert set(states(factory).values()) == {"delivered"}
    later = [a for a in attempts(factory) if a[3] > fourth[3]]
    assert later and min(a[3] for a in later) >= reopened.trial_after  # the second trial, after the cool-down
    assert [a[2] for a in later] == ["delivered"] * 3  # each attempt record completed when its fax was delivered
    assert sorted(e.destination for e in sandbox.fax.oracle()) == sorted(NUMBERS)  # each fax once
    assert sandbox.duplicates() == {}
