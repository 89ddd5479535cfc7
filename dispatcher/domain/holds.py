"""Deliveries held for an operator: what reconciliation or the status poll cannot settle on its own.

A hold is an event (a note: the state does not change) whose reason starts with ``HOLD_REASON`` and
says why and which command settles it. It is logged once each time the delivery enters the state it
is held in; ``dispatch campaign show`` shows it until an operator acts (``control.resolve``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.domain.ledger import Ledger
from dispatcher.domain.models import Delivery, DeliveryEvent

HOLD_REASON = "held for an operator"


def settle_command(delivery_id: int) -> str:
    return f"dispatch delivery resolve {delivery_id} --sent|--not-sent --reason ..."


def entered_state_at(session: Session, delivery: Delivery) -> datetime:
    """When ``delivery`` last entered its current state (notes, which keep the state, do not count)."""
    at = session.scalar(
        select(DeliveryEvent.at)
        .where(
            DeliveryEvent.delivery_id == delivery.id,
            DeliveryEvent.to_state == delivery.state,
            DeliveryEvent.from_state != delivery.state,
        )
        .order_by(DeliveryEvent.id.desc())
        .limit(1)
    )
    return at or delivery.updated_at


def held_because(session: Session, delivery: Delivery) -> str | None:
    """The reason of the hold on ``delivery`` since it entered its current state, or None."""
    return session.scalar(
        select(DeliveryEvent.reason)
        .where(
            DeliveryEvent.delivery_id == delivery.id,
            DeliveryEvent.reason.like(f"{HOLD_REASON}%"),
            DeliveryEvent.at >= entered_state_at(session, delivery),
        )
        .order_by(DeliveryEvent.id.desc())
        .limit(1)
    )


def hold(session: Session, ledger: Ledger, delivery: Delivery, *, actor: str, at: datetime, why: str) -> bool:
    """Hold ``delivery`` for an operator, logged once while it stays in its state; True when logged now."""
    if held_because(session, delivery) is not None:
        return False
    ledger.note(
        delivery,
        actor=actor,
        at=at,
        error_class="unknown",
        reason=f"{HOLD_REASON}: {why}; check with the provider, then settle it: `{settle_command(delivery.id)}`",
    )
    return True
