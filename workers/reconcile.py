"""Reconciling ``unknown`` deliveries: ask the provider by our reference, never resend blindly.

- The provider knows the message: apply its status (submitted, delivered or failed).
- The provider says it never saw the reference: only believed when it says so twice, at least
  ``reconcile_grace`` apart, the first time no sooner than ``reconcile_grace`` after the send (a
  provider's listing can lag behind a send that was still being accepted when we gave up on it).
  Then nothing was sent, and the route may be tried again.
- The provider lists only an earlier attempt's message, or cannot tell (no lookup for this gateway,
  the lookup failed, the listing is too long to read): the delivery stays ``unknown``, held for an
  operator, and the log says so once per attempt.

Polling a ``submitted`` send whose status report never came: the provider's status is applied; when it
still has no final status (delivered or failed) ``report_wait`` after the provider accepted it, or the
poll cannot tell, the send is held for an operator (once), and polled on meanwhile.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.domain.db import transaction
from dispatcher.domain.holds import entered_state_at, hold
from dispatcher.domain.ledger import Ledger
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.messages import StatusEvent
from dispatcher.domain.models import Attempt, Delivery, DeliveryEvent
from dispatcher.domain.outcomes import apply_status
from dispatcher.domain.states import State
from workers.delivery import WorkerContext, gateway_for
from workers.gateways.base import Gateway
from workers.gateways.errors import GatewayError


def reconcile(worker: WorkerContext, delivery_id: int) -> str:
    """Settle an ``unknown`` delivery, or poll a ``submitted`` one whose status report never came."""
    with worker.factory() as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.state not in (State.UNKNOWN, State.SUBMITTED):
            return "nothing-to-do"
        gateway = gateway_for(worker, delivery)
        key, provider_id, state = delivery.idempotency_key, delivery.provider_id, delivery.state
        destination, started_at = delivery.destination, _current_attempt_start(session, delivery)
    if state == State.SUBMITTED:
        return _poll(worker, delivery_id, gateway, provider_id, key=key, destination=destination, started_at=started_at)
    try:
        found: StatusEvent | None = _find(gateway, key, destination, started_at)
    except GatewayError as err:
        return _hold(worker, delivery_id, f"{gateway.name} cannot tell whether it has this message ({err})")
    return _apply(worker, delivery_id, found)


def _find(gateway: Gateway, key: str, destination: str, started_at: datetime | None) -> StatusEvent | None:
    """Look the reference up, narrowed to this destination and attempt where the gateway can."""
    sent_after = started_at - timedelta(minutes=5) if started_at is not None else None  # clocks differ a little
    return gateway.find_by_reference(key, to=destination, sent_after=sent_after)


def _poll(
    worker: WorkerContext,
    delivery_id: int,
    gateway: Gateway,
    provider_id: str | None,
    *,
    key: str,
    destination: str,
    started_at: datetime | None,
) -> str:
    event: StatusEvent | None = None
    try:
        event = (
            gateway.fetch_status(provider_id)
            if provider_id is not None
            else _find(gateway, key, destination, started_at)
        )
        found = f"the provider does not list it ({gateway.name})" if event is None else f"last status {event.kind}"
        result = "poll-not-listed" if event is None else ""
    except GatewayError as err:  # the webhook may still come; the next poll is scheduled already
        found, result = f"the status lookup failed ({err})", "poll-failed"
    now = worker.clock()
    with transaction(worker.factory) as session:
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.state != State.SUBMITTED:
            return "nothing-to-do"
        if event is not None:
            applied = apply_status(session, delivery, event, actor=f"poll:{worker.actor}", now=now, policy=worker.retry)
            result = f"polled:{applied}"
        if delivery.state == State.SUBMITTED and _report_overdue(worker, session, delivery, now):
            waited = worker.report_wait.total_seconds()
            why = f"no final status from the provider {waited:.0f}s after it accepted the send ({found})"
            if hold(session, SqlLedger(session), delivery, actor=f"poll:{worker.actor}", at=now, why=why):
                result += ", held"
        return result


def _report_overdue(worker: WorkerContext, session: Session, delivery: Delivery, now: datetime) -> bool:
    return now - entered_state_at(session, delivery) >= worker.report_wait


def _apply(worker: WorkerContext, delivery_id: int, found: StatusEvent | None) -> str:
    now = worker.clock()
    actor = f"reconcile:{worker.actor}"
    with transaction(worker.factory) as session:
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.state != State.UNKNOWN:
            return "not-unknown"
        ledger = SqlLedger(session)
        if found is None:
            return _not_found(worker, session, ledger, delivery, actor=actor, now=now)
        earlier = session.scalar(
            select(Attempt.number).where(
                Attempt.delivery_id == delivery.id,
                Attempt.provider_id == found.provider_id,
                Attempt.number < delivery.attempt_count,
            )
        )
        if earlier is not None:
            why = (
                f"the provider lists only attempt {earlier}'s message ({found.provider_id}) for this "
                f"reference, so it cannot tell whether attempt {delivery.attempt_count} went out"
            )
            return _hold_in(session, ledger, worker, delivery, why)
        ledger.attach(delivery, found.provider_id)
        result = apply_status(session, delivery, found, actor=actor, now=now, policy=worker.retry)
        if delivery.state == State.UNKNOWN:  # a status that does not settle it: at least it was accepted
            ledger.move(
                delivery,
                State.SUBMITTED,
                actor=actor,
                at=now,
                provider_id=found.provider_id,
                reason=f"reconciled: the provider has it as {found.provider_id} ({found.kind})",
            )
        ledger.identify(delivery, found.provider_id)
        return f"found:{result}"


NOT_FOUND = "reconcile: the provider does not list this reference"


def _not_found(
    worker: WorkerContext, session: Session, ledger: Ledger, delivery: Delivery, *, actor: str, now: datetime
) -> str:
    """Believe "never sent" only the second time, at least ``reconcile_grace`` after the first."""
    since = entered_state_at(session, delivery)
    first = session.scalar(
        select(DeliveryEvent.at)
        .where(
            DeliveryEvent.delivery_id == delivery.id,
            DeliveryEvent.reason.like(f"{NOT_FOUND}%"),
            DeliveryEvent.at >= since,
        )
        .order_by(DeliveryEvent.at)
        .limit(1)
    )
    if first is None or now - first < worker.reconcile_grace:
        if first is None:
            ledger.note(
                delivery,
                actor=actor,
                at=now,
                error_class="unknown",
                reason=f"{NOT_FOUND} yet; asking again in {worker.reconcile_grace.total_seconds():.0f}s before "
                "concluding that nothing was sent",
            )
        ledger.wait(delivery, until=now + worker.reconcile_grace)
        return "not-found-yet"
    ledger.move(
        delivery,
        State.RETRY_WAIT,
        actor=actor,
        at=now,
        reason="reconciled: the provider twice listed no message with this reference, so nothing was "
        "sent; the route will be tried again",
        not_before=now,
    )
    return "not-sent"


def _current_attempt_start(session: Session, delivery: Delivery) -> datetime | None:
    return session.scalar(
        select(Attempt.started_at).where(Attempt.delivery_id == delivery.id, Attempt.number == delivery.attempt_count)
    )


def _hold(worker: WorkerContext, delivery_id: int, why: str) -> str:
    with transaction(worker.factory) as session:
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.state != State.UNKNOWN:
            return "nothing-to-do"
        return _hold_in(session, SqlLedger(session), worker, delivery, why)


def _hold_in(session: Session, ledger: Ledger, worker: WorkerContext, delivery: Delivery, why: str) -> str:
    """Log the hold once per attempt; later passes stay quiet until an operator acts."""
    hold(session, ledger, delivery, actor=f"reconcile:{worker.actor}", at=worker.clock(), why=why)
    return "held"
