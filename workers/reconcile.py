"""Reconciling ``unknown`` deliveries: ask the provider by our reference, never resend blindly.

- The provider knows the message: apply its status (submitted, delivered or failed).
- The provider says it never saw the reference: nothing was sent, so the route may be tried again.
- The provider cannot tell (no lookup for this gateway, or the lookup failed): the delivery stays
  ``unknown``, held for an operator, and the log says so once.
"""

from __future__ import annotations

from sqlalchemy import select

from dispatcher.db import transaction
from dispatcher.ledger import transition
from dispatcher.models import Delivery, DeliveryEvent
from dispatcher.outcomes import apply_status
from dispatcher.states import State

from .delivery import Engine, gateway_for
from .gateways.base import Gateway, StatusEvent
from .gateways.errors import GatewayError

HOLD_REASON = "held for an operator"


def reconcile(engine: Engine, delivery_id: int) -> str:
    """Settle an ``unknown`` delivery, or poll a ``submitted`` one whose status report never came."""
    with engine.factory() as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.state not in (State.UNKNOWN, State.SUBMITTED):
            return "nothing-to-do"
        gateway = gateway_for(engine, delivery)
        key, provider_id, state = delivery.idempotency_key, delivery.provider_id, delivery.state
    if state == State.SUBMITTED:
        return _poll(engine, delivery_id, gateway, provider_id)
    try:
        found: StatusEvent | None = gateway.find_by_reference(key)
    except (GatewayError, NotImplementedError) as err:
        return _hold(engine, delivery_id, f"{gateway.name} cannot tell whether it has this message ({err})")
    return _apply(engine, delivery_id, found)


def _poll(engine: Engine, delivery_id: int, gateway: Gateway, provider_id: str | None) -> str:
    if provider_id is None:
        return "no-provider-id"
    try:
        event = gateway.fetch_status(provider_id)
    except (GatewayError, NotImplementedError):
        return "poll-failed"  # the webhook may still come; the next poll is scheduled already
    now = engine.clock()
    with transaction(engine.factory) as session:
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.state != State.SUBMITTED:
            return "nothing-to-do"
        applied = apply_status(session, delivery, event, actor=f"poll:{engine.actor}", now=now, policy=engine.retry)
        return f"polled:{applied}"


def _apply(engine: Engine, delivery_id: int, found: StatusEvent | None) -> str:
    now = engine.clock()
    actor = f"reconcile:{engine.actor}"
    with transaction(engine.factory) as session:
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.state != State.UNKNOWN:
            return "not-unknown"
        if found is None:
            transition(session, delivery, State.RETRY_WAIT, actor=actor, at=now,
                       reason="reconciled: the provider has no message with this reference, so nothing was "
                              "sent; the route will be tried again")
            delivery.not_before = now
            return "not-sent"
        result = apply_status(session, delivery, found, actor=actor, now=now, policy=engine.retry)
        if delivery.state == State.UNKNOWN:  # a status that does not settle it: at least it was accepted
            transition(session, delivery, State.SUBMITTED, actor=actor, at=now, provider_id=found.provider_id,
                       reason=f"reconciled: the provider has it as {found.provider_id} ({found.kind})")
        if delivery.provider_id is None:
            delivery.provider_id = found.provider_id
        return f"found:{result}"


def _hold(engine: Engine, delivery_id: int, why: str) -> str:
    """Log the hold once; later passes stay quiet until an operator acts."""
    with transaction(engine.factory) as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:
            return "missing"
        already = session.scalar(select(DeliveryEvent.id).where(
            DeliveryEvent.delivery_id == delivery_id, DeliveryEvent.reason.like(f"{HOLD_REASON}%")))
        if already is None:
            session.add(DeliveryEvent(
                delivery_id=delivery_id, campaign_id=delivery.campaign_id, at=engine.clock(),
                actor=f"reconcile:{engine.actor}", from_state=delivery.state, to_state=delivery.state,
                error_class="unknown", reason=f"{HOLD_REASON}: {why}; check with the provider, then retry or "
                                             "mark it with `dispatch delivery resolve`"))
    return "held"
