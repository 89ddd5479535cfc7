"""Scheduler back-pressure: a tick queues no more rows on a queue than DISPATCH_MAX_QUEUED_PER_QUEUE allows,
and the sweeper republishes a stale `queued` row only when no message for it can still be waiting (the
queue's broker list is empty, and no worker took its message within DISPATCH_REPUBLISH_AFTER_SECONDS).
The real scheduler functions on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.models import Delivery
from dispatcher.domain.scheduling import SchedulerConfig, TickResult, run_once
from workers.delivery import WorkerContext, deliver_many

from ..builders import build_campaign
from .conftest import SETTINGS, Sandbox, now, schedule_campaign

SUPPORTERS = [(f"s{i}.supporter@example.org", f"S {i}", "yes") for i in range(5)]


def copies_campaign(factory: sessionmaker[Session], tmp_path: Path) -> None:
    path = build_campaign(tmp_path, supporters=SUPPORTERS, extra={"supporters": {"copies": "at-dispatch"}})
    schedule_campaign(factory, path)


def tick(
    factory: sessionmaker[Session], at: datetime, *, waiting: dict[str, int] | None = None, **config: int
) -> tuple[TickResult, dict[str, list[int]]]:
    published: dict[str, list[int]] = {}

    def publisher(queue: str, ids: Sequence[int]) -> None:
        published.setdefault(queue, []).extend(ids)

    result = run_once(
        factory,
        publisher,
        lambda queue, ids: None,
        now=at,
        config=SchedulerConfig.from_settings(SETTINGS, **config),  # type: ignore[arg-type]
        waiting=None if waiting is None else waiting.get,
    )
    return result, published


def queued_copies(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).where(Delivery.kind == "copy", Delivery.state == "queued")) or 0)


def test_a_tick_queues_no_more_than_the_cap_per_queue_and_tops_it_up_as_workers_take_rows(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    copies_campaign(factory, tmp_path)
    _, first = tick(factory, now(), max_queued_per_queue=3)
    assert len(first["copies"]) == 3
    assert len(first["fax"]) <= 3 and len(first.get("email", [])) <= 3  # the letters' queues are capped too
    _, second = tick(factory, now(), max_queued_per_queue=3)
    assert "copies" not in second  # three copies still queued: nothing more until workers take some
    assert queued_copies(factory) == 3
    deliver_many(worker, first["copies"][:2])  # a worker sends two
    _, third = tick(factory, now(), max_queued_per_queue=3)
    assert len(third["copies"]) == 2  # the last two of five
    assert queued_copies(factory) == 3


def test_stale_rows_are_republished_only_when_their_queue_holds_no_message(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    copies_campaign(factory, tmp_path)
    start = now()
    _, first = tick(factory, start)
    later = start + timedelta(seconds=SETTINGS.republish_after_seconds + 1)
    result, _ = tick(factory, later, waiting={"copies": 2, "fax": 1, "email": 1})
    assert result.republished == {}  # messages still wait in the broker: they are late, not lost
    result, _ = tick(factory, later, waiting={"copies": 0, "fax": 1, "email": 1})
    assert sorted(result.republished["copies"]) == sorted(first["copies"])  # lost: published again
    assert set(result.republished) == {"copies"}
    result, _ = tick(factory, later + timedelta(seconds=1), waiting={"copies": 0, "fax": 1, "email": 1})
    assert result.republished == {}  # republished a second ago: its new message may be waiting


def test_without_a_broker_count_stale_rows_are_republished_by_age_as_before(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    copies_campaign(factory, tmp_path)
    start = now()
    _, first = tick(factory, start)
    result, _ = tick(factory, start + timedelta(seconds=SETTINGS.republish_after_seconds + 1))
    assert sorted(result.republished["copies"]) == sorted(first["copies"])


def test_a_worker_taking_a_message_of_letters_stamps_its_rows_so_they_are_not_republished_while_it_works(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    copies_campaign(factory, tmp_path)
    start = now()
    _, first = tick(factory, start)
    letters = first["fax"]
    with transaction(factory) as session:  # queued long ago: the message waited in the broker
        long_ago = start - timedelta(seconds=SETTINGS.republish_after_seconds + 1)
        session.execute(update(Delivery).where(Delivery.id.in_(letters)).values(queued_at=long_ago))
    stamped: list[datetime | None] = []

    def look(delivery_id: int) -> None:  # while the worker is on its first letter, the rest still queued
        with factory() as session:
            stamped.extend(
                session.scalars(
                    select(Delivery.queued_at).where(Delivery.id.in_(letters[:2]), Delivery.state == "queued")
                )
            )

    worker.hooks["after_claim"] = look
    deliver_many(worker, letters[:2])
    assert stamped and all(at is not None and at >= start for at in stamped)
