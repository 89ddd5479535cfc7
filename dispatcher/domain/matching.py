"""Which delivery a provider's status event is about: only one that went through the reporting gateway.

A webhook is authenticated per gateway (each provider signs its own), so an authentic report of one
provider says nothing about a message handed to another: Postmark cannot settle a Telnyx fax. A
delivery is found by the provider's id for it, or by our reference (its idempotency key, random and
stored at planning) when the provider echoes it, and in both cases only among the deliveries whose
current attempt went through that gateway.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from dispatcher.domain.messages import StatusEvent
from dispatcher.domain.models import Delivery


def find_delivery(session: Session, *, gateway: str, event: StatusEvent) -> Delivery | None:
    """The delivery sent through ``gateway`` that ``event`` names, locked for update; None if none."""
    names: list[ColumnElement[bool]] = [Delivery.provider_id == event.provider_id]
    if event.reference:
        names.append(Delivery.idempotency_key == event.reference)
    query = select(Delivery).where(Delivery.gateway == gateway, or_(*names)).with_for_update().limit(1)
    return session.scalars(query).first()
