"""What a person does from the console or the API (dispatcher/processes/operations.py), on SQLite and
PostgreSQL: each action changes the ledger, names the person and the reason, or is refused whole."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.accounts import Identity, Role
from dispatcher.domain.db import transaction
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Campaign, Delivery, DeliveryEvent, OperatorAction
from dispatcher.domain.states import DeliveryKind, State
from dispatcher.processes import operations
from dispatcher.processes.operations import Refused

from .builders import NAME, build_campaign
from .test_planning import load

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
OLGA = Identity(user_id=1, name="olga", roles=frozenset({Role.OPERATOR}), via="session")
MINA = Identity(user_id=2, name="mina", roles=frozenset({Role.MANAGER}), via="token", token_label="ci")


@pytest.fixture
def letters(factory: sessionmaker[Session], tmp_path: Path) -> list[int]:
    """The example campaign, loaded and scheduled: its letters' ids, To first, routes in order."""
    load(factory, build_campaign(tmp_path))
    operations.campaign_action(factory, "schedule", NAME, by=MINA, reason="", now=NOW)
    with factory() as session:
        return list(
            session.scalars(select(Delivery.id).where(Delivery.kind == DeliveryKind.LETTER).order_by(Delivery.id))
        )


def move(factory: sessionmaker[Session], delivery_id: int, *states: State) -> None:
    with transaction(factory) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        for state in states:
            SqlLedger(session).move(delivery, state, actor="test", at=NOW, reason="test")


def state_of(factory: sessionmaker[Session], delivery_id: int) -> str:
    with factory() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        return delivery.state


def actions(factory: sessionmaker[Session]) -> list[tuple[str, str, int | None, str]]:
    with factory() as session:
        return [
            (a.actor, a.action, a.delivery_id, a.reason)
            for a in session.scalars(select(OperatorAction).order_by(OperatorAction.id))
        ]


def test_campaign_actions_are_logged_with_the_person(factory: sessionmaker[Session], letters: list[int]) -> None:
    done = operations.campaign_action(factory, "pause", NAME, by=MINA, reason="the ministry asked for a day", now=NOW)
    assert done.state == "paused"
    operations.campaign_action(factory, "resume", NAME, by=MINA, reason=None, now=NOW)
    assert actions(factory) == [
        ("token:mina/ci", "campaign.schedule", None, ""),
        ("token:mina/ci", "campaign.pause", None, "the ministry asked for a day"),
        ("token:mina/ci", "campaign.resume", None, ""),
    ]


def test_a_refused_campaign_action_keeps_nothing(factory: sessionmaker[Session], letters: list[int]) -> None:
    with pytest.raises(Refused, match=r"cannot resume campaign .*: it is scheduled") as refused:
        operations.campaign_action(factory, "resume", NAME, by=MINA, reason=None, now=NOW)
    assert refused.value.status == 409
    with pytest.raises(Refused, match="no campaign") as missing:
        operations.campaign_action(factory, "pause", "no-such-campaign", by=MINA, reason=None, now=NOW)
    assert missing.value.status == 404
    assert [a[1] for a in actions(factory)] == ["campaign.schedule"]


def test_an_unknown_delivery_is_resolved_sent_with_the_persons_reason(
    factory: sessionmaker[Session], letters: list[int]
) -> None:
    first = letters[0]
    move(factory, first, State.QUEUED, State.SENDING, State.UNKNOWN)
    done = operations.resolve_delivery(
        factory, first, sent=True, by=OLGA, reason="Telnyx portal: fax delivered at 09:14", now=NOW
    )
    assert done.state == State.DELIVERED
    assert state_of(factory, first) == State.DELIVERED
    assert actions(factory)[-1] == (
        "user:olga",
        "delivery.resolve-sent",
        first,
        "Telnyx portal: fax delivered at 09:14",
    )
    with factory() as session:
        last = session.scalars(
            select(DeliveryEvent).where(DeliveryEvent.delivery_id == first).order_by(DeliveryEvent.id.desc())
        ).first()
    assert last is not None and last.actor == "operator:olga"


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_resolve_retry_and_cancel_need_a_reason(
    factory: sessionmaker[Session], letters: list[int], reason: str | None
) -> None:
    first = letters[0]
    move(factory, first, State.QUEUED, State.SENDING, State.UNKNOWN)
    for act in (
        lambda: operations.resolve_delivery(factory, first, sent=True, by=OLGA, reason=reason, now=NOW),
        lambda: operations.retry_delivery(factory, first, by=OLGA, reason=reason, now=NOW, force=False),
        lambda: operations.cancel_delivery(factory, first, by=OLGA, reason=reason, now=NOW),
    ):
        with pytest.raises(Refused, match="a reason is required") as refused:
            act()
        assert refused.value.status == 422
    assert state_of(factory, first) == State.UNKNOWN


def test_retrying_a_held_delivery_sends_it_again_on_its_route(
    factory: sessionmaker[Session], letters: list[int]
) -> None:
    first = letters[0]
    move(factory, first, State.QUEUED, State.SENDING, State.UNKNOWN)
    done = operations.retry_delivery(factory, first, by=OLGA, reason="not in the portal", now=NOW, force=False)
    assert (done.state, state_of(factory, first)) == (State.RETRY_WAIT, State.RETRY_WAIT)


def test_retrying_a_failed_delivery_plans_it_again(factory: sessionmaker[Session], letters: list[int]) -> None:
    first = letters[0]
    move(factory, first, State.FAILED)
    done = operations.retry_delivery(factory, first, by=OLGA, reason="the number works again", now=NOW, force=False)
    assert (done.state, state_of(factory, first)) == (State.PLANNED, State.PLANNED)


def test_cancelling_a_held_delivery_lets_the_next_route_go(factory: sessionmaker[Session], letters: list[int]) -> None:
    first = letters[0]
    move(factory, first, State.QUEUED, State.SENDING, State.UNKNOWN)
    done = operations.cancel_delivery(factory, first, by=OLGA, reason="the portal shows no such fax", now=NOW)
    assert (done.state, state_of(factory, first)) == (State.CANCELLED, State.CANCELLED)
    with factory() as session:
        path = [
            (e.from_state, e.to_state)
            for e in session.scalars(
                select(DeliveryEvent).where(DeliveryEvent.delivery_id == first).order_by(DeliveryEvent.id)
            )
        ][-2:]
    assert path == [("unknown", "retry_wait"), ("retry_wait", "cancelled")]


def test_a_delivered_delivery_cannot_be_cancelled_or_retried(
    factory: sessionmaker[Session], letters: list[int]
) -> None:
    first = letters[0]
    move(factory, first, State.QUEUED, State.SENDING, State.DELIVERED)
    with pytest.raises(Refused, match=f"delivery #{first} is delivered; only a waiting delivery"):
        operations.cancel_delivery(factory, first, by=OLGA, reason="x", now=NOW)
    with pytest.raises(Refused, match=f"delivery #{first} is delivered; only a failed delivery can be retried"):
        operations.retry_delivery(factory, first, by=OLGA, reason="x", now=NOW, force=False)
    with pytest.raises(Refused, match="no delivery #999999") as missing:
        operations.cancel_delivery(factory, 999999, by=OLGA, reason="x", now=NOW)
    assert missing.value.status == 404
    assert state_of(factory, first) == State.DELIVERED
    with factory() as session:
        assert session.scalars(select(Campaign.status)).one() == "scheduled"
