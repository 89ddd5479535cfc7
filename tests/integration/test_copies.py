"""Supporter copies end to end: consent, suppression, when copies go, and what they say, through the worker
path to a real SMTP server (aiosmtpd), with the fax emulator's scripted outcomes; SQLite and PostgreSQL."""

from __future__ import annotations

import email.message
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.models import Attempt, Delivery, DeliveryEvent, Supporter
from dispatcher.domain.suppression import SuppressionReason, suppress
from workers.delivery import WorkerContext

from ..builders import build_campaign
from .conftest import Sandbox, campaign_status, drive, schedule_campaign, states

WANG = "+861065591516"
ADA, GRACE, ALAN = "ada.supporter@example.org", "grace.supporter@example.net", "alan.supporter@example.com"
SUPPORTERS = [(ADA, "Ada Lovelace", "yes"), (GRACE, "Grace Hopper", "yes"), (ALAN, "Alan Turing", "no")]


def copies_received(sandbox: Sandbox) -> dict[str, email.message.EmailMessage]:
    assert sandbox.sink is not None
    return {m.rcpt_tos[0]: m.message for m in sandbox.sink.messages() if m.rcpt_tos[0] in (ADA, GRACE, ALAN)}


def text_of(message: email.message.EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


def html_of(message: email.message.EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


def test_an_after_delivery_copy_waits_for_a_busy_fax_to_be_retried_and_reports_its_final_outcome(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.fax.script(WANG, ["busy"])
    name = schedule_campaign(factory, build_campaign(tmp_path, supporters=SUPPORTERS))
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert [e.outcome for e in sandbox.fax.oracle() if e.destination == WANG] == ["busy", "ok"]

    received = copies_received(sandbox)
    assert sorted(received) == [ADA, GRACE]  # Alan said no: nothing planned, nothing sent
    with factory() as session:
        assert session.scalars(select(Delivery.destination).where(Delivery.destination == ALAN)).all() == []
        wang = session.scalars(select(Delivery).where(Delivery.destination == WANG)).one()
        delivered_at = session.scalars(
            select(DeliveryEvent.at).where(DeliveryEvent.delivery_id == wang.id, DeliveryEvent.to_state == "delivered")
        ).one()
        first_copy_sent = min(
            session.scalars(select(Attempt.started_at).join(Delivery).where(Delivery.kind == "copy")).all()
        )
    # never sent while the outcome it reports was open: after Wang Yi's fax, retried, was delivered
    assert first_copy_sent > delivered_at

    ada = received[ADA]
    assert ada["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # <web>/unsubscribe/<copy id>.<signature>: tests/integration/test_unsubscribe.py follows it
    link = re.fullmatch(
        rf"<{re.escape(sandbox.web_url)}/unsubscribe/(\d+)\.[A-Za-z0-9_-]{{43}}>", ada["List-Unsubscribe"]
    )
    assert link is not None and int(link[1]) == _copy_id(factory, ADA)
    assert ada["List-Id"] == '"Detention of nine North Korean refugees" <north-korean-refugees-2015.example.org>'
    body = text_of(ada)
    assert body.startswith(
        "Dear Ada Lovelace,\n\nHere is the letter Human Rights Watch sent on your behalf to Xi Jinping"
    )
    assert f"CC: Wang Yi: delivered by fax to {WANG} on " in body
    assert f"confirmation {wang.provider_id}" in body
    assert "CC: Guo Shengkun: sent by email to gabzfwz@mps.gov.cn on " in body
    assert "accepted by the mail server (email gives no proof of delivery)" in body
    assert f"To receive no more copies, unsubscribe: {ada['List-Unsubscribe'][1:-1]}\n" in body
    assert sandbox.duplicates() == {}


def _copy_id(factory: sessionmaker[Session], address: str) -> int:
    with factory() as session:
        return session.scalars(select(Delivery.id).where(Delivery.destination == address)).one()


def test_at_dispatch_copies_go_with_the_letters_and_say_so(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    path = build_campaign(tmp_path, supporters=SUPPORTERS[:1], extra={"supporters": {"copies": "at-dispatch"}})
    sandbox.fax.script(WANG, ["busy"])
    name = schedule_campaign(factory, path)
    drive(worker, until=lambda: ADA in copies_received(sandbox))
    assert states(factory)[WANG] != "delivered"  # Wang Yi's fax, busy once, is still open: the copy went anyway
    body = text_of(copies_received(sandbox)[ADA])
    assert "Human Rights Watch is sending this letter on your behalf to Xi Jinping." in body
    assert "delivered by fax" not in body
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")


def test_copies_keep_no_office_hours_and_at_dispatch_ones_start_with_the_first_letter(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    hours = {"mode": "office-hours", "office_hours": {"start": time(9), "end": time(17), "days": ["mon"]}}
    monday_0300_utc = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)  # 11:00 in Beijing: open there
    after = build_campaign(tmp_path / "a", schedule=hours, supporters=SUPPORTERS[:1])
    dispatch = build_campaign(
        tmp_path / "b",
        name="at-dispatch-copy",
        schedule={"mode": "office-hours", "office_hours": {"start": time(14), "end": time(17), "days": ["mon"]}},
        supporters=SUPPORTERS[:1],
        extra={"supporters": {"copies": "at-dispatch", "list_name": "second-list"}},
    )
    for path in (after, dispatch):
        schedule_campaign(factory, path, at=monday_0300_utc)
    with factory() as session:
        rows = session.execute(
            select(Delivery.campaign_id, Delivery.kind, Delivery.not_before).order_by(Delivery.id)
        ).all()
    first, second = sorted({r.campaign_id for r in rows})
    # after delivery: due at once (it waits for the outcomes, not for a time)
    assert {r.not_before for r in rows if r.campaign_id == first and r.kind == "copy"} == {monday_0300_utc}
    # at dispatch: when the first letter may go, 14:00 in Beijing = 06:00 UTC, not 14:00 UTC
    six_utc = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    assert {r.not_before for r in rows if r.campaign_id == second and r.kind == "copy"} == {six_utc}


def test_a_suppressed_address_gets_no_copy_and_one_suppressed_after_planning_is_withheld_at_claim(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    with transaction(factory) as session:
        suppress(session, GRACE, reason=SuppressionReason.HARD_BOUNCE, source="test", at=now)
    name = schedule_campaign(factory, build_campaign(tmp_path, supporters=SUPPORTERS[:2]))
    with factory() as session:
        planned = session.scalars(select(Delivery.destination).where(Delivery.kind == "copy")).all()
    assert planned == [ADA]
    with transaction(factory) as session:  # Ada unsubscribes while the letters are still going out
        suppress(session, ADA, reason=SuppressionReason.UNSUBSCRIBED, source="test", at=now)
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert copies_received(sandbox) == {}
    with factory() as session:
        ada = session.scalars(select(Delivery).where(Delivery.destination == ADA)).one()
        last = session.scalars(
            select(DeliveryEvent).where(DeliveryEvent.delivery_id == ada.id).order_by(DeliveryEvent.id.desc())
        ).first()
        assert last is not None
        assert (ada.state, last.from_state, last.reason) == (
            "cancelled",
            "queued",
            "the address is on the suppression list (unsubscribed, bounced or complained)",
        )


def test_consent_withdrawn_after_planning_withholds_the_copy(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    name = schedule_campaign(factory, build_campaign(tmp_path, supporters=SUPPORTERS[:2]))
    with transaction(factory) as session:
        session.execute(update(Supporter).where(Supporter.email == GRACE).values(consent=False))
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    assert sorted(copies_received(sandbox)) == [ADA]
    assert states(factory)[GRACE] == "cancelled"


def test_a_copy_greets_in_the_supporters_language_when_the_campaign_has_it_and_escapes_names_in_html(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    csv_text = f"email,name,consent,locale\n{ADA},<b>Ada</b> & co,yes,fr-CA\n{GRACE},Grace Hopper,yes,de\n"
    french = {"greeting_named": "Chère, cher {name},", "outcomes": "Remise :"}
    path = build_campaign(tmp_path, csv_text=csv_text, extra={"supporters": {"translations": {"fr": french}}})
    name = schedule_campaign(factory, path)
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    received = copies_received(sandbox)
    ada_text, ada_html = text_of(received[ADA]), html_of(received[ADA])
    assert ada_text.startswith("Chère, cher <b>Ada</b> & co,\n")
    assert "Remise :" in ada_text
    assert "<p>Chère, cher &lt;b&gt;Ada&lt;/b&gt; &amp; co,</p>" in ada_html
    assert "<b>Ada</b>" not in ada_html
    assert text_of(received[GRACE]).startswith("Dear Grace Hopper,\n")  # no German: English


def test_the_deadline_is_the_officials_copies_still_report_after_it(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    name = schedule_campaign(factory, build_campaign(tmp_path, deadline=past, supporters=SUPPORTERS[:1]))
    drive(worker, until=lambda: campaign_status(factory, name) == "completed")
    body = text_of(copies_received(sandbox)[ADA])
    assert f"CC: Wang Yi: could not be delivered: campaign deadline {past.isoformat()} passed" in body
