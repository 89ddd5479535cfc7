"""Which delivery a provider's status event is about: only one that went through the reporting gateway.

A webhook is authenticated per gateway (each provider signs its own), so an authentic report of one
provider says nothing about a message handed to another: Postmark cannot settle a Telnyx fax. A
delivery is found by the provider's id for it, or by our reference (its idempotency key, random and
stored at planning) when the provider echoes it, and in both cases only among the deliveries whose
current attempt went through that gateway.

Before any look-up an event must be recordable: a signed report may still carry ids no provider
issues (NUL, control characters, lone surrogates, longer than the ledger's columns) or a page count no
fax has; :func:`recordable` refuses those ids and cleans the free text the ledger keeps as evidence.
"""

from __future__ import annotations

import dataclasses
import re

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from dispatcher.domain.characters import unsafe_in_line
from dispatcher.domain.errors import DispatchError
from dispatcher.domain.messages import StatusEvent
from dispatcher.domain.models import Delivery

ID_MAX_CHARS = 200  # deliveries.provider_id and delivery_events.provider_event_id
REFERENCE_MAX_CHARS = 64  # deliveries.idempotency_key
PAGES_MAX = 10_000  # more pages than any fax: evidence that is not believed is left out
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL text cannot hold NUL; UTF-8 no lone surrogate


class UnusableEvent(DispatchError):
    """A status event whose ids cannot name anything we sent; the webhook is refused (400)."""


def recordable(event: StatusEvent) -> StatusEvent:
    """``event`` with its free text made storable; UnusableEvent when one of its ids is not an id."""
    for field, value, limit in (
        ("provider id", event.provider_id, ID_MAX_CHARS),
        ("event id", event.event_id, ID_MAX_CHARS),
        ("reference", event.reference, REFERENCE_MAX_CHARS),
    ):
        problem = _id_problem(value, limit=limit)
        if problem:
            raise UnusableEvent(f"{event.provider}: the event's {field} {problem}")
    return dataclasses.replace(
        event,
        detail=_storable(event.detail),
        error_code=_storable(event.error_code),
        remote_station_id=_storable(event.remote_station_id),
        pages=event.pages if event.pages is not None and 0 <= event.pages <= PAGES_MAX else None,
    )


def _id_problem(value: str | None, *, limit: int) -> str | None:
    if value is None:
        return None
    if len(value) > limit:
        return f"is over {limit} characters"
    if _UNSTORABLE.search(value):
        return "holds a NUL or an unpaired surrogate"
    unsafe = unsafe_in_line(value)
    return f"holds {unsafe}" if unsafe else None


def _storable(text: str | None) -> str | None:
    """``text`` with what no ledger column can hold (NUL, lone surrogates) replaced by U+FFFD."""
    return None if text is None else _UNSTORABLE.sub("\ufffd", text)


def find_delivery(session: Session, *, gateway: str, event: StatusEvent) -> Delivery | None:
    """The delivery sent through ``gateway`` that ``event`` names, locked for update; None if none."""
    names: list[ColumnElement[bool]] = [Delivery.provider_id == event.provider_id]
    if event.reference:
        names.append(Delivery.idempotency_key == event.reference)
    query = select(Delivery).where(Delivery.gateway == gateway, or_(*names)).with_for_update().limit(1)
    return session.scalars(query).first()
