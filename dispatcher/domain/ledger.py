"""State changes on deliveries, always with their append-only event row."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from dispatcher.domain.models import Delivery, DeliveryEvent, utcnow
from dispatcher.domain.states import DeliveryKind, State, check_transition, sources_of


def transition(
    session: Session,
    delivery: Delivery,
    target: State,
    *,
    actor: str,
    reason: str = "",
    error_class: str | None = None,
    provider_id: str | None = None,
    provider_event_id: str | None = None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> DeliveryEvent:
    """Move ``delivery`` to ``target`` (checked against the state machine) and log the event."""
    check_transition(delivery.state, target)
    if delivery.kind == DeliveryKind.COPY:  # a supporter's address must not reach the log through a server's reply
        reason = redact_addresses(reason)
    event = DeliveryEvent(
        delivery_id=delivery.id,
        campaign_id=delivery.campaign_id,
        at=at or utcnow(),
        actor=actor,
        from_state=delivery.state,
        to_state=str(target),
        reason=reason,
        error_class=error_class,
        provider_id=provider_id,
        provider_event_id=provider_event_id,
        data=data,
    )
    delivery.state = str(target)
    if target in (State.FAILED, State.SKIPPED, State.RETRY_WAIT, State.UNKNOWN) and reason:
        delivery.last_error = reason
    session.add(event)
    return event


ADDRESS = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")


def redact_addresses(text: str) -> str:
    """Replace every email address in ``text`` (e.g. an SMTP reply echoing the recipient)."""
    return ADDRESS.sub("<address>", text)


def compare_and_set(
    session: Session,
    delivery_id: int,
    target: State,
    *,
    expected: set[State] | None = None,
    values: dict[str, Any] | None = None,
) -> bool:
    """Atomically move one delivery to ``target`` if it is still in an expected state.

    Returns False (and changes nothing) when another process got there first: no row, no send.
    The caller logs the event in the same transaction.
    """
    allowed = expected if expected is not None else set(sources_of(target))
    result = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state.in_([str(s) for s in allowed]))
        .values(state=str(target), updated_at=utcnow(), **(values or {}))
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
