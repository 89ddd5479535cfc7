"""The ledger writer (dispatcher/domain/ledger_sql.py) on SQLite and PostgreSQL: its rules hold on every
path, single and bulk: the state machine, the compare-and-set claim, and no supporter address stored."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.errors import TransitionError
from dispatcher.domain.ledger import Due, Finished, Planned
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Attempt, Delivery, DeliveryEvent

from .builders import build_campaign
from .test_planning import load

AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SMTP_REPLY = "550 5.1.1 <ada.supporter@example.org>: recipient unknown"


@pytest.fixture
def loaded(factory: sessionmaker[Session], tmp_path: Path) -> dict[str, int]:
    """The fixed example campaign, loaded: delivery ids by destination."""
    load(factory, build_campaign(tmp_path))
    with factory() as session:
        return dict(session.execute(select(Delivery.destination, Delivery.id)).all())  # type: ignore[arg-type]


def events(factory: sessionmaker[Session], delivery_id: int) -> list[tuple[str | None, str, str]]:
    with factory() as session:
        rows = session.execute(
            select(DeliveryEvent.from_state, DeliveryEvent.to_state, DeliveryEvent.reason)
            .where(DeliveryEvent.delivery_id == delivery_id)
            .order_by(DeliveryEvent.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_a_copys_reason_and_last_error_are_stored_without_the_address(
    factory: sessionmaker[Session], loaded: dict[str, int]
) -> None:
    copy = loaded["ada.supporter@example.org"]
    with transaction(factory) as session:
        delivery = session.get(Delivery, copy)
        assert delivery is not None
        SqlLedger(session).move(delivery, "failed", actor="test", at=AT, reason=SMTP_REPLY)  # type: ignore[arg-type]
    with factory() as session:
        assert session.get(Delivery, copy).last_error == "550 5.1.1 <<address>>: recipient unknown"  # type: ignore[union-attr]
    assert events(factory, copy)[-1] == ("planned", "failed", "550 5.1.1 <<address>>: recipient unknown")


def test_a_letters_reason_keeps_the_officials_published_address(
    factory: sessionmaker[Session], loaded: dict[str, int]
) -> None:
    letter = loaded["gabzfwz@mps.gov.cn"]
    with transaction(factory) as session:
        delivery = session.get(Delivery, letter)
        assert delivery is not None
        reason = "550 5.1.1 <gabzfwz@mps.gov.cn>: mailbox full"
        SqlLedger(session).move(delivery, "failed", actor="test", at=AT, reason=reason)  # type: ignore[arg-type]
    with factory() as session:
        assert session.get(Delivery, letter).last_error == "550 5.1.1 <gabzfwz@mps.gov.cn>: mailbox full"  # type: ignore[union-attr]


def test_a_note_changes_no_state_and_redacts_a_copys_reason(
    factory: sessionmaker[Session], loaded: dict[str, int]
) -> None:
    copy = loaded["grace.supporter@example.net"]
    with transaction(factory) as session:
        delivery = session.get(Delivery, copy)
        assert delivery is not None
        SqlLedger(session).note(delivery, actor="test", at=AT, reason="deferred for grace.supporter@example.net")
    assert events(factory, copy)[-1] == ("planned", "planned", "deferred for <address>")
    with factory() as session:
        assert session.get(Delivery, copy).last_error is None  # type: ignore[union-attr]


def test_bulk_queueing_checks_the_state_machine(factory: sessionmaker[Session], loaded: dict[str, int]) -> None:
    wang = loaded["+861065591516"]
    with pytest.raises(TransitionError), transaction(factory) as session:
        SqlLedger(session).queue([Due(wang, 1, "letter", "delivered", "due")], actor="test", at=AT)
    assert events(factory, wang) == [(None, "planned", "planned")]


def test_planning_starts_a_delivery_planned_or_skipped_only(
    factory: sessionmaker[Session], loaded: dict[str, int]
) -> None:
    with pytest.raises(TransitionError, match="starts planned or skipped"), transaction(factory) as session:
        SqlLedger(session).plan(1, [Planned({"kind": "letter"}, "queued", "planned")], actor="test")  # type: ignore[arg-type]


def test_the_claim_is_a_compare_and_set_and_the_attempt_detail_of_a_copy_is_redacted(
    factory: sessionmaker[Session], loaded: dict[str, int]
) -> None:
    copy = loaded["ada.supporter@example.org"]
    with transaction(factory) as session:
        campaign_id = session.scalars(select(Delivery.campaign_id).where(Delivery.id == copy)).one()
        SqlLedger(session).queue([Due(copy, campaign_id, "copy", "planned", "due")], actor="test", at=AT)
    with transaction(factory) as session:
        ledger = SqlLedger(session)
        delivery = session.get(Delivery, copy)
        assert delivery is not None
        first = ledger.claim(delivery, actor="w1", at=AT, lease_until=AT, gateway="smtp", reports=False)
        second = ledger.claim(delivery, actor="w2", at=AT, lease_until=AT, gateway="smtp", reports=False)
        assert (first, second) == (1, None)  # the second found the row no longer queued: no row, no send
        ledger.finish_attempt(delivery, 1, at=AT, finished=Finished("permanent", error_code="550", detail=SMTP_REPLY))
    with factory() as session:
        attempt = session.scalars(select(Attempt).where(Attempt.delivery_id == copy)).one()
        assert (attempt.number, attempt.gateway, attempt.outcome, attempt.detail) == (
            1,
            "smtp",
            "permanent",
            "550 5.1.1 <<address>>: recipient unknown",
        )
    assert events(factory, copy)[-2:] == [("planned", "queued", "due"), ("queued", "sending", "attempt 1 via smtp")]
