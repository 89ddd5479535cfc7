"""Scheduler + worker path in this process, against the real emulators, on SQLite and PostgreSQL.

The sandbox's oracle (every send a provider accepted, by our reference) judges "never twice".
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import control
from dispatcher.domain.db import transaction
from dispatcher.domain.models import Attempt, Delivery, DeliveryEvent
from dispatcher.domain.states import State
from workers.delivery import WorkerContext, deliver

from ..test_validation import write_campaign
from .conftest import Sandbox, campaign_status, drive, schedule_campaign, states

XI_1, XI_2, WANG = "+861063070900", "+861062381025", "+861065591516"
GUO_EMAIL = "gabzfwz@mps.gov.cn"
FIXED = {"+011 10 6238 1025": "+86 10 6238 1025"}


def campaign(tmp_path: Path, example_file: Path, extra: dict[str, str] | None = None) -> Path:
    return write_campaign(tmp_path, example_file, {**FIXED, **(extra or {})})


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
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path, example_file: Path
) -> None:
    sandbox.fax.script(WANG, ["busy", "busy"])
    name = schedule_campaign(factory, campaign(tmp_path, example_file))
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
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path, example_file: Path
) -> None:
    """Xi Jinping: first fax is not a valid number, second never answers with a fax tone: email goes."""
    path = campaign(
        tmp_path,
        example_file,
        {
            'fax = ["+86 10 6307 0900", "+86 10 6238 1025"]': 'fax = ["+86 10 6307 0900", "+86 10 6238 1025"]\nemail = ["president@example.gov.cn"]'  # noqa: E501
        },
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
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path, example_file: Path
) -> None:
    name = schedule_campaign(factory, campaign(tmp_path, example_file))
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert states(factory)[XI_2] == "skipped"
    assert XI_2 not in {e.destination for e in sandbox.fax.oracle()}


def test_same_delivery_published_twice_is_sent_once(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path, example_file: Path
) -> None:
    from dispatcher.domain.models import utcnow
    from dispatcher.domain.scheduling import claim_due

    schedule_campaign(factory, campaign(tmp_path, example_file))
    with transaction(factory) as session:
        ids = [d.id for d in claim_due(session, now=utcnow(), limit=100)]
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def one_of_four() -> None:  # its own name: the fixture `worker` is what each thread sends with
        barrier.wait()
        outcomes.extend(deliver(worker, delivery_id) for delivery_id in ids)

    threads = [threading.Thread(target=one_of_four) for _ in range(4)]
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
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path, example_file: Path
) -> None:
    sandbox.fax.script(WANG, ["drop"])
    name = schedule_campaign(factory, campaign(tmp_path, example_file))
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


def test_pause_resume_cancel(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path, example_file: Path
) -> None:
    from dispatcher.domain.models import utcnow

    name = schedule_campaign(factory, campaign(tmp_path, example_file))
    with transaction(factory) as session:
        control.pause(session, name)
    drive(worker, until=lambda: True)
    assert sandbox.fax.oracle() == [] and sandbox.mail.oracle() == []
    with transaction(factory) as session:
        control.resume(session, name)
        control.cancel(session, name)
    drive(worker, until=lambda: True)
    assert set(states(factory).values()) == {"cancelled"}
    assert sandbox.fax.oracle() == [] and sandbox.mail.oracle() == []
    assert campaign_status(factory, name) == "cancelled"
    assert utcnow()  # the clock is real here; office hours use a controlled one (test_timing)


def test_deadline_fails_what_is_left_with_a_reason(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path, example_file: Path
) -> None:
    path = campaign(
        tmp_path,
        example_file,
        {'route_order = "fax-first"': 'route_order = "fax-first"\ndeadline = 2000-01-01T00:00:00+00:00'},
    )
    name = schedule_campaign(factory, path)
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    with factory() as session:
        errors = set(session.scalars(select(Delivery.last_error)))
    assert all(e and "deadline" in e for e in errors)
    assert sandbox.fax.oracle() == []


def test_submitted_without_webhook_is_polled(
    factory: sessionmaker[Session], sandbox: Sandbox, tmp_path: Path, example_file: Path
) -> None:
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
    name = schedule_campaign(factory, campaign(tmp_path, example_file))
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
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path, example_file: Path
) -> None:
    path = campaign(tmp_path, example_file, {'route_policy = "first-success"': 'route_policy = "all-routes"'})
    name = schedule_campaign(factory, path)
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    result = states(factory)
    assert (result[XI_1], result[XI_2]) == ("delivered", "delivered")
    assert sorted(e.destination for e in sandbox.fax.oracle()) == sorted([XI_1, XI_2, WANG])
    assert sandbox.duplicates() == {}
