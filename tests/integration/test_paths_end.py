"""Every path ends: an operator's word settles a delivery for good, and the attempt records are
completed when reconciliation, a poll, a webhook or an operator settles the delivery.

The operator acts through the real command line (`dispatch delivery resolve`), on the same ledger the
in-process worker and scheduler drive against the sandbox.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from dispatcher.domain import control
from dispatcher.domain.db import transaction
from dispatcher.domain.errors import CampaignConflict
from dispatcher.domain.models import Attempt, Delivery, DeliveryEvent, utcnow
from dispatcher.domain.scheduling import SchedulerConfig, claim_due
from dispatcher.domain.settings import get_settings
from dispatcher.processes.cli import app
from workers.delivery import WorkerContext, deliver

from ..builders import NAME, build_campaign, guo_shengkun, wang_yi, xi_jinping
from ..signed_webhooks import AT_DISPATCH
from .conftest import SETTINGS, Sandbox, campaign_status, drive, history, schedule_campaign, states
from .test_review_fixes import unknown_without_a_send

pytestmark = pytest.mark.timeout(120)

WANG = "+861065591516"
WANG_EMAIL = "wang@example.gov.cn"
# unknown_without_a_send queues every due delivery and publishes none: the sweeper re-publishes them
QUICK_REPUBLISH = SchedulerConfig.from_settings(SETTINGS, republish_after=timedelta(seconds=0.5))


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """`dispatch` on the test's ledger."""
    monkeypatch.setenv("DISPATCH_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def run(cli: CliRunner, *args: str) -> tuple[int, str]:
    result = cli.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def wide(cli: CliRunner, *args: str) -> tuple[int, str]:
    """A terminal wide enough that no table cell is folded onto a second line."""
    result = cli.invoke(app, list(args), env={"COLUMNS": "1000"})
    return result.exit_code, result.output


def fax_and_email_for_wang(tmp_path: Path) -> Path:
    """Wang Yi (CC) with a fax, then an email as his second route; first-success."""
    return build_campaign(tmp_path, cc=[guo_shengkun(), wang_yi(email=[WANG_EMAIL])])


def attempt_records(factory: sessionmaker[Session], destination: str) -> list[tuple[int, str | None, bool]]:
    """(number, outcome, finished) of every attempt to ``destination``."""
    with factory() as session:
        rows = session.execute(
            select(Attempt.number, Attempt.outcome, Attempt.finished_at)
            .join(Delivery, Delivery.id == Attempt.delivery_id)
            .where(Delivery.destination == destination)
            .order_by(Attempt.number)
        ).all()
        return [(r.number, r.outcome, r.finished_at is not None) for r in rows]


def test_resolve_sent_ends_the_delivery_skips_the_later_routes_and_completes_the_campaign(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, cli: CliRunner, tmp_path: Path
) -> None:
    name = schedule_campaign(factory, fax_and_email_for_wang(tmp_path))
    wang = unknown_without_a_send(worker, factory, WANG)
    code, output = run(
        cli, "delivery", "resolve", str(wang), "--sent", "--reason", "Telnyx portal: delivered 14:02", "--by", "alice"
    )
    assert code == 0, output
    assert f"delivery #{wang}: delivered" in output
    drive(worker, until=lambda: campaign_status(factory, name) == "completed", config=QUICK_REPUBLISH)
    assert (states(factory)[WANG], states(factory)[WANG_EMAIL]) == ("delivered", "skipped")
    with factory() as session:
        event = session.scalars(
            select(DeliveryEvent).where(DeliveryEvent.delivery_id == wang, DeliveryEvent.to_state == "delivered")
        ).one()
    assert event.actor == "operator:alice"
    assert "Telnyx portal: delivered 14:02" in event.reason and "operator" in event.reason
    assert event.data == {"resolved": "sent", "by": "alice", "reason": "Telnyx portal: delivered 14:02"}
    assert attempt_records(factory, WANG) == [(1, "delivered", True)]
    assert WANG not in [e.destination for e in sandbox.fax.oracle()]  # nothing sent again
    assert [m.destination for m in sandbox.mail.oracle()].count(WANG_EMAIL) == 0


def test_resolve_not_sent_sends_it_once_more_and_the_campaign_completes(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, cli: CliRunner, tmp_path: Path
) -> None:
    name = schedule_campaign(factory, fax_and_email_for_wang(tmp_path))
    wang = unknown_without_a_send(worker, factory, WANG)
    code, output = run(cli, "delivery", "resolve", str(wang), "--not-sent", "--reason", "not in Telnyx's list")
    assert code == 0, output
    drive(worker, until=lambda: campaign_status(factory, name) == "completed", config=QUICK_REPUBLISH)
    assert (states(factory)[WANG], states(factory)[WANG_EMAIL]) == ("delivered", "skipped"), history(factory, WANG)
    assert [e.destination for e in sandbox.fax.oracle()].count(WANG) == 1
    assert attempt_records(factory, WANG) == [(1, "transient", True), (2, "delivered", True)]
    with factory() as session:
        actors = session.scalars(
            select(DeliveryEvent.actor).where(DeliveryEvent.delivery_id == wang, DeliveryEvent.to_state == "retry_wait")
        ).all()
    assert len(actors) == 1 and actors[0].startswith("operator:")  # --by defaults to the OS user


def test_resolve_requires_a_reason(
    factory: sessionmaker[Session], worker: WorkerContext, cli: CliRunner, tmp_path: Path
) -> None:
    schedule_campaign(factory, fax_and_email_for_wang(tmp_path))
    wang = unknown_without_a_send(worker, factory, WANG)
    code, output = run(cli, "delivery", "resolve", str(wang), "--sent")
    assert code == 2 and "--reason" in output
    with pytest.raises(CampaignConflict, match="reason"), transaction(factory) as session:
        control.resolve(session, wang, sent=True, now=utcnow(), reason="  ", by="alice")
    assert states(factory)[WANG] == "unknown"


def test_every_attempt_record_is_complete_once_the_campaign_is(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A dropped connection after the provider took the fax (reconciled: found), a busy line (retried),
    and plain sends (the worker's receipt, then the delivery webhook): no attempt stays without an
    outcome, a finish time, or with a provisional "unknown"."""
    sandbox.fax.script(WANG, ["drop"])
    sandbox.fax.script("+861063070900", ["busy"])
    name = schedule_campaign(factory, build_campaign(tmp_path))
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert attempt_records(factory, WANG) == [(1, "delivered", True)], history(factory, WANG)
    assert attempt_records(factory, "+861063070900") == [(1, "transient", True), (2, "delivered", True)]
    with factory() as session:
        incomplete = session.execute(
            select(Attempt.delivery_id, Attempt.number, Attempt.outcome).where(
                (Attempt.finished_at.is_(None)) | (Attempt.outcome.is_(None)) | (Attempt.outcome == "unknown")
            )
        ).all()
    assert incomplete == []


def test_resolve_not_sent_in_a_cancelled_campaign_cancels_the_delivery(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, cli: CliRunner, tmp_path: Path
) -> None:
    """Cancelling left the unknown fax alone (it may have gone out); once an operator says it did not,
    it is cancelled like every other waiting delivery of the campaign, not left waiting for a resend."""
    name = schedule_campaign(factory, fax_and_email_for_wang(tmp_path))
    wang = unknown_without_a_send(worker, factory, WANG)
    with transaction(factory) as session:
        control.cancel(session, name)
    assert states(factory)[WANG] == "unknown"
    code, output = run(cli, "delivery", "resolve", str(wang), "--not-sent", "--reason", "not listed", "--by", "bob")
    assert code == 0 and f"delivery #{wang}: cancelled" in output, output
    assert states(factory)[WANG] == "cancelled"
    assert attempt_records(factory, WANG) == [(1, "transient", True)]


def test_a_submitted_fax_with_no_final_report_is_held_after_the_report_wait(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, cli: CliRunner, tmp_path: Path
) -> None:
    """The provider accepts the faxes and then never gets further (its status stays "queued", no
    webhook): the status poll keeps looking, and once DISPATCH_REPORT_WAIT_SECONDS (1 s here) has passed
    since the provider accepted it, the fax is held for an operator, once, with the reason; the
    operator's resolve then ends it."""
    sandbox.fax.webhook_delay = 3600.0  # the provider's lifecycle never moves past "queued" in this test
    patient = WorkerContext.from_settings(
        SETTINGS,
        factory=factory,
        gateways=worker.gateways,
        retry=worker.retry,
        media_url=worker.media_url,
        report_wait=timedelta(seconds=1),
    )
    config = SchedulerConfig.from_settings(
        SETTINGS, poll_after=timedelta(seconds=0.2), reconcile_every=timedelta(seconds=0.2)
    )
    schedule_campaign(factory, build_campaign(tmp_path))
    drive(patient, until=lambda: bool(holds(factory, WANG)), config=config)
    drive(patient, until=lambda: polls(factory, WANG) >= 3, config=config)  # polled on, held only once
    assert states(factory)[WANG] == "submitted"
    [hold] = holds(factory, WANG)
    assert "no final status" in hold and "dispatch delivery resolve" in hold
    with factory() as session:
        wang = session.scalars(select(Delivery.id).where(Delivery.destination == WANG)).one()
    code, output = wide(cli, "campaign", "show", NAME)
    assert code == 0, output
    [line] = [line for line in output.splitlines() if f"│ {wang} " in line]  # Wang's row of the letters table
    assert "held for an operator: no final status" in line
    assert f"dispatch delivery resolve {wang} --sent|--not-sent --reason ..." in line
    code, output = run(cli, "delivery", "resolve", str(wang), "--sent", "--reason", "Telnyx support: delivered")
    assert code == 0, output
    assert states(factory)[WANG] == "delivered"
    assert [e.destination for e in sandbox.fax.oracle()].count(WANG) == 1


def holds(factory: sessionmaker[Session], destination: str) -> list[str]:
    return [reason for _, _, reason in history(factory, destination) if reason.startswith("held for an operator")]


def polls(factory: sessionmaker[Session], destination: str) -> int:
    with factory() as session:
        return len(
            session.scalars(
                select(DeliveryEvent.id)
                .join(Delivery, Delivery.id == DeliveryEvent.delivery_id)
                .where(Delivery.destination == destination, DeliveryEvent.actor.startswith("poll:"))
            ).all()
        )


def test_campaign_show_lists_a_held_supporter_copy_without_the_supporters_address(
    factory: sessionmaker[Session], worker: WorkerContext, cli: CliRunner, tmp_path: Path
) -> None:
    """SMTP cannot be asked whether it took a message: an unknown copy is held at once."""
    from workers.reconcile import reconcile

    schedule_campaign(factory, build_campaign(tmp_path, extra=AT_DISPATCH))
    copy = unknown_without_a_send(worker, factory, "ada.supporter@example.org")
    assert reconcile(worker, copy) == "held"
    code, output = wide(cli, "campaign", "show", NAME)
    assert code == 0, output
    [line] = [line for line in output.splitlines() if f"│ {copy} " in line]
    assert "supporter copy #" in line and "held for an operator" in line
    assert f"dispatch delivery resolve {copy} --sent|--not-sent --reason ..." in line
    assert "ada.supporter@example.org" not in output


XI_FAX, XI_EMAIL = "+861063070900", "president@example.gov.cn"


def xi_by_fax_then_email(tmp_path: Path) -> Path:
    return build_campaign(tmp_path, to=[xi_jinping(fax=["+86 10 6307 0900"], email=[XI_EMAIL])], cc=[])


def test_no_fax_tone_twice_gives_the_route_up_and_the_email_goes(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The number answers, but never as a fax machine: after DISPATCH_NO_FAX_TONE_LIMIT (2) such answers
    in a row the fax route fails as permanent, well before its attempts (4 here) run out."""
    sandbox.fax.script(XI_FAX, ["no_fax_tone"] * 10)
    name = schedule_campaign(factory, xi_by_fax_then_email(tmp_path))
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert [e.outcome for e in sandbox.fax.oracle() if e.destination == XI_FAX] == ["no_fax_tone", "no_fax_tone"]
    assert (states(factory)[XI_FAX], states(factory)[XI_EMAIL]) == ("failed", "submitted")
    with factory() as session:
        error = session.scalars(select(Delivery.last_error).where(Delivery.destination == XI_FAX)).one()
    assert error is not None and "no fax tone 2 times in a row" in error
    assert [m.destination for m in sandbox.mail.oracle()].count(XI_EMAIL) == 1


def test_a_busy_line_between_two_no_fax_tones_breaks_the_streak(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A busy signal is another kind of answer: the two "no fax tone" answers were not consecutive."""
    sandbox.fax.script(XI_FAX, ["no_fax_tone", "busy", "no_fax_tone", "ok"])
    name = schedule_campaign(factory, xi_by_fax_then_email(tmp_path))
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert [e.outcome for e in sandbox.fax.oracle() if e.destination == XI_FAX] == [
        "no_fax_tone",
        "busy",
        "no_fax_tone",
        "ok",
    ]
    assert (states(factory)[XI_FAX], states(factory)[XI_EMAIL]) == ("delivered", "skipped")


def test_a_delivery_back_to_waiting_after_its_campaign_was_cancelled_is_cancelled(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Cancelling leaves a fax already with the provider alone. When the provider later reports a busy
    line, the delivery goes back to wait for a retry that a cancelled campaign never makes: the
    scheduler cancels it like the campaign's other waiting deliveries."""
    sandbox.fax.script(WANG, ["busy"])
    name = schedule_campaign(factory, build_campaign(tmp_path))

    def cancel_mid_send(_delivery_id: int) -> None:
        with transaction(factory) as session:
            control.cancel(session, name)

    worker.hooks["after_claim"] = cancel_mid_send
    with transaction(factory) as session:
        wang = {c.destination: c.id for c in claim_due(session, now=utcnow(), limit=100)}[WANG]
    deliver(worker, wang)
    worker.hooks.clear()
    drive(worker, until=lambda: states(factory)[WANG] not in ("sending", "submitted"))
    assert states(factory)[WANG] == "retry_wait"  # the busy report came after the cancel
    drive(worker, until=lambda: states(factory)[WANG] == "cancelled", timeout=10)
    assert [e.destination for e in sandbox.fax.oracle()].count(WANG) == 1
    with factory() as session:
        path = session.scalars(
            select(DeliveryEvent.to_state).where(DeliveryEvent.delivery_id == wang).order_by(DeliveryEvent.id)
        ).all()
    assert path[-2:] == ["retry_wait", "cancelled"], path
