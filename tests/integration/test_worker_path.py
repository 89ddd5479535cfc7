"""Scheduler + worker path in this process, against the real emulators, on SQLite and PostgreSQL.

The sandbox's oracle (every send a provider accepted, by our reference) judges "never twice".
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import control
from dispatcher.domain.db import transaction
from dispatcher.domain.models import Attempt, Delivery, DeliveryEvent
from dispatcher.domain.states import State
from workers.delivery import WorkerContext, deliver, deliver_many

from ..builders import build_campaign, xi_jinping
from .conftest import Sandbox, campaign_status, drive, schedule_campaign, states

XI_1, XI_2, WANG = "+861063070900", "+861062381025", "+861065591516"
GUO_EMAIL = "gabzfwz@mps.gov.cn"
ADA, GRACE = "ada.supporter@example.org", "grace.supporter@example.net"  # the supporter copies
PAUSED_TICKS = 5


def test_seed_campaign_is_sent_once_each(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path, example_file: Path
) -> None:
    name = schedule_campaign(factory, example_file, skip_invalid=True)
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    result = states(factory)
    assert result[XI_1] == "delivered"
    assert result["+011 10 6238 1025"] == "skipped"  # the malformed number, recorded with its reason
    assert result[WANG] == "delivered"
    assert result[GUO_EMAIL] == "submitted"  # SMTP acceptance is final: SMTP reports nothing more
    assert sandbox.duplicates() == {}
    assert sorted(e.destination for e in sandbox.fax.oracle()) == [XI_1, WANG]
    assert len(sandbox.mail.oracle()) == 3  # Guo Shengkun + two supporter copies


def test_busy_then_success_retries_the_same_route(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.fax.script(WANG, ["busy", "busy"])
    name = schedule_campaign(factory, build_campaign(tmp_path))
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert states(factory)[WANG] == "delivered"
    assert [e.outcome for e in sandbox.fax.oracle() if e.destination == WANG] == ["busy", "busy", "ok"]
    with factory() as session:
        wang = session.scalars(select(Delivery).where(Delivery.destination == WANG)).one()
        assert wang.attempt_count == 3
        reasons = session.scalars(
            select(DeliveryEvent.reason).where(
                DeliveryEvent.delivery_id == wang.id, DeliveryEvent.to_state == "retry_wait"
            )
        ).all()
        assert len(reasons) == 2 and all("user_busy" in r for r in reasons)


def test_fallback_fax_to_fax_to_email(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Xi Jinping: first fax is not a valid number, second never answers with a fax tone: email goes."""
    path = build_campaign(
        tmp_path, to=[xi_jinping(fax=["+86 10 6307 0900", "+86 10 6238 1025"], email=["president@example.gov.cn"])]
    )
    sandbox.fax.script(XI_1, ["invalid_number"])
    sandbox.fax.script(XI_2, ["no_fax_tone"] * 4)
    name = schedule_campaign(factory, path)
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    result = states(factory)
    assert (result[XI_1], result[XI_2], result["president@example.gov.cn"]) == ("failed", "failed", "submitted")
    assert [m.destination for m in sandbox.mail.oracle()].count("president@example.gov.cn") == 1
    assert sandbox.duplicates() == {}


def test_first_success_skips_the_remaining_routes(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    name = schedule_campaign(factory, build_campaign(tmp_path))
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert states(factory)[XI_2] == "skipped"
    assert XI_2 not in {e.destination for e in sandbox.fax.oracle()}


def test_same_delivery_published_twice_is_sent_once(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    from dispatcher.domain.models import utcnow
    from dispatcher.domain.scheduling import claim_due

    schedule_campaign(factory, build_campaign(tmp_path))
    with transaction(factory) as session:
        ids = [d.id for d in claim_due(session, now=utcnow(), limit=100)]
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def send_all() -> None:  # not named `worker`: that would hide the WorkerContext fixture
        barrier.wait()
        outcomes.extend(deliver(worker, delivery_id) for delivery_id in ids)

    threads = [threading.Thread(target=send_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # each delivery claimed by exactly one of the four workers; the others found it claimed already.
    # A claim ends "submitted", or "receipt-after-..." when the fax's status webhook overtook the receipt
    claimed = [o for o in outcomes if not o.startswith("not-claimable:") and o != "lost-race"]
    assert len(outcomes) == 4 * len(ids)
    assert len(claimed) == len(ids), outcomes
    assert all(o == "submitted" or o.startswith("receipt-after-") for o in claimed), outcomes
    assert sandbox.duplicates() == {}
    with factory() as session:
        assert session.scalar(select(Attempt.id).where(Attempt.number > 1)) is None


def test_drop_after_accept_is_unknown_then_reconciled_without_a_second_send(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.fax.script(WANG, ["drop"])
    name = schedule_campaign(factory, build_campaign(tmp_path))
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert [e.outcome for e in sandbox.fax.oracle() if e.destination == WANG] == ["drop"]
    with factory() as session:
        wang = session.scalars(select(Delivery).where(Delivery.destination == WANG)).one()
        path = [
            e.to_state
            for e in session.scalars(
                select(DeliveryEvent).where(DeliveryEvent.delivery_id == wang.id).order_by(DeliveryEvent.id)
            )
        ]
        assert "unknown" in path
        assert wang.attempt_count == 1  # reconciled: the provider had it, so it was never sent again
        assert wang.state in (State.SUBMITTED, State.DELIVERED)


def ticks(n: int) -> Callable[[], bool]:
    """An ``until`` for drive(): true after ``n`` calls, so drive() runs exactly ``n`` ticks."""
    calls = itertools.count()
    return lambda: next(calls) >= n


def event_count(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(DeliveryEvent)) or 0)


def test_paused_campaign_sends_nothing_then_each_letter_once_on_resume(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    from dispatcher.domain.models import utcnow
    from dispatcher.domain.scheduling import claim_due

    name = schedule_campaign(factory, build_campaign(tmp_path))
    with transaction(factory) as session:  # a tick's claim, published just before the operator pauses
        published = [d.id for d in claim_due(session, now=utcnow(), limit=100)]
    # Xi's first fax, Guo's email, Wang's fax; Xi's second fax waits for the first, and the two supporter
    # copies (after-delivery, the default) for every letter's outcome
    assert len(published) == 3
    with transaction(factory) as session:
        assert control.pause(session, name) == 3  # the queued ones go back to planned
    assert event_count(factory) == 12  # 6 planned, 3 queued, 3 back to planned

    # paused: the message published before the pause arrives, and the scheduler and worker keep running
    assert deliver_many(worker, published) == {"not-claimable:planned": 3}
    assert drive(worker, until=ticks(PAUSED_TICKS)) == PAUSED_TICKS
    assert sandbox.fax.oracle() == [] and sandbox.mail.oracle() == []
    assert states(factory) == {
        XI_1: "planned",
        XI_2: "planned",
        GUO_EMAIL: "planned",
        WANG: "planned",
        ADA: "planned",
        GRACE: "planned",
    }
    assert event_count(factory) == 12  # nothing was claimed, not even to be handed back
    assert campaign_status(factory, name) == "paused"

    with transaction(factory) as session:
        control.resume(session, name)
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert sorted(e.destination for e in sandbox.fax.oracle()) == [XI_1, WANG]
    assert sorted(m.destination for m in sandbox.mail.oracle()) == [ADA, GUO_EMAIL, GRACE]
    assert sandbox.duplicates() == {}
    assert states(factory) == {
        XI_1: "delivered",
        XI_2: "skipped",  # first-success: Xi's first fax was delivered
        GUO_EMAIL: "submitted",  # SMTP acceptance is final
        WANG: "delivered",
        ADA: "submitted",
        GRACE: "submitted",
    }


def test_worker_holds_what_a_tick_claimed_while_a_pause_committed(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    """PostgreSQL: a pause that commits while a tick's claim is still open finds nothing queued to hand
    back; the tick then commits and publishes. The worker's check of the campaign status holds them."""
    from dispatcher.domain.models import utcnow
    from dispatcher.domain.scheduling import claim_due

    name = schedule_campaign(factory, build_campaign(tmp_path))
    tick = factory()
    if tick.get_bind().dialect.name != "postgresql":
        tick.close()
        pytest.skip("SQLite runs write transactions one at a time: a pause cannot cross a claim")
    published = [d.id for d in claim_due(tick, now=utcnow(), limit=100)]  # the tick's transaction, still open
    with transaction(factory) as session:
        assert control.pause(session, name) == 0  # the claimed rows are still planned as far as it can see
    tick.commit()
    tick.close()
    assert len(published) == 3  # the copies wait for the letters' outcomes
    assert campaign_status(factory, name) == "paused"
    assert set(states(factory).values()) == {"queued", "planned"}  # paused, with queued rows: the race's result

    assert deliver_many(worker, published) == {"held:paused": 3}
    assert drive(worker, until=ticks(PAUSED_TICKS)) == PAUSED_TICKS
    assert sandbox.fax.oracle() == [] and sandbox.mail.oracle() == []
    assert states(factory) == {
        XI_1: "planned",
        XI_2: "planned",
        GUO_EMAIL: "planned",
        WANG: "planned",
        ADA: "planned",
        GRACE: "planned",
    }

    with transaction(factory) as session:
        control.resume(session, name)
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert sorted(e.destination for e in sandbox.fax.oracle()) == [XI_1, WANG]
    assert sorted(m.destination for m in sandbox.mail.oracle()) == [ADA, GUO_EMAIL, GRACE]
    assert sandbox.duplicates() == {}


def test_cancel_after_pause_sends_nothing(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    name = schedule_campaign(factory, build_campaign(tmp_path))
    with transaction(factory) as session:
        control.pause(session, name)
    with transaction(factory) as session:
        control.resume(session, name)
        control.cancel(session, name)
    assert drive(worker, until=ticks(PAUSED_TICKS)) == PAUSED_TICKS
    assert states(factory) == {
        XI_1: "cancelled",
        XI_2: "cancelled",
        GUO_EMAIL: "cancelled",
        WANG: "cancelled",
        ADA: "cancelled",
        GRACE: "cancelled",
    }
    assert sandbox.fax.oracle() == [] and sandbox.mail.oracle() == []
    assert campaign_status(factory, name) == "cancelled"


def test_deadline_fails_what_is_left_with_a_reason(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = build_campaign(tmp_path, deadline=datetime(2000, 1, 1, tzinfo=UTC))
    name = schedule_campaign(factory, path)
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    with factory() as session:
        letters = session.execute(select(Delivery.state, Delivery.last_error).where(Delivery.kind == "letter")).all()
    assert {state for state, _ in letters} == {"failed"}
    assert all(e and "deadline" in e for _, e in letters)
    assert sandbox.fax.oracle() == []
    # the deadline is the officials': the supporters still learn that the letter could not be delivered
    copies = [m for m in sandbox.mail.oracle()]
    assert sorted(m.destination for m in copies) == [ADA, GRACE]


def test_submitted_without_webhook_is_polled(factory: sessionmaker[Session], sandbox: Sandbox, tmp_path: Path) -> None:
    """Status webhooks lost (here: sent to a closed port): the poller asks the provider instead."""
    import base64
    from datetime import timedelta

    from dispatcher.domain.scheduling import SchedulerConfig
    from workers.gateways.registry import build_gateway
    from workers.sandbox.server import free_port

    from .conftest import SETTINGS, worker_context

    public_key = base64.b64encode(bytes(sandbox.signing_key.verify_key)).decode()
    lost = f"http://127.0.0.1:{free_port()}/webhooks/telnyx"
    gateways = sandbox.gateways()
    gateways["fax"] = build_gateway(
        "telnyx",
        api_key=sandbox.api_key,
        connection_id="c",
        public_key=public_key,
        base_url=sandbox.fax_url,
        webhook_url=lost,
    )
    worker = worker_context(factory, gateways, media_url=_media(sandbox))
    name = schedule_campaign(factory, build_campaign(tmp_path))
    drive(
        worker,
        until=lambda: campaign_status(factory, name) == "completed",
        config=SchedulerConfig.from_settings(
            SETTINGS, poll_after=timedelta(seconds=0.5), reconcile_every=timedelta(seconds=0.2)
        ),
    )
    assert states(factory)[WANG] == "delivered"
    with factory() as session:
        actors = set(session.scalars(select(DeliveryEvent.actor).where(DeliveryEvent.to_state == "delivered")))
    assert actors and all(actor.startswith("poll:") for actor in actors)
    assert sandbox.duplicates() == {}


def _media(sandbox: Sandbox):  # type: ignore[no-untyped-def]
    from dispatcher.domain.media import media_url

    return lambda delivery_id, at: media_url(sandbox.web_url, delivery_id, secret=sandbox.secret, now=at)


def test_all_routes_policy_sends_every_route(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = build_campaign(tmp_path, route_policy="all-routes")
    name = schedule_campaign(factory, path)
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    result = states(factory)
    assert (result[XI_1], result[XI_2]) == ("delivered", "delivered")
    assert sorted(e.destination for e in sandbox.fax.oracle()) == sorted([XI_1, XI_2, WANG])
    assert sandbox.duplicates() == {}
