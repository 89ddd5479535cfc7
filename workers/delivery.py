"""The worker path for one delivery: claim, render, send, record. Plain functions; tasks are thin.

1. Claim by compare-and-set ``queued -> sending`` with a lease, committed before anything leaves:
   no row, no send. A second copy of the message, or a second worker, finds nothing to claim.
2. Render from the per-campaign cache.
3. Call the gateway with the delivery's idempotency key.
4. Record the attempt and the new state in one transaction: ``submitted`` (receipt),
   ``retry_wait`` (Transient), ``failed`` (Permanent: the next route may go), or ``unknown``
   (the provider may have the message: reconciled later, never resent blindly).
A worker killed between 1 and 4 leaves a ``sending`` row whose lease expires into ``unknown``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.ledger import compare_and_set, transition
from dispatcher.domain.messages import Receipt
from dispatcher.domain.models import Attempt, Delivery, DeliveryEvent, utcnow
from dispatcher.domain.outcomes import RetryPolicy, fail, retry_or_fail, skip_other_routes
from dispatcher.domain.rendering.documents import DocumentCache, Rendered
from dispatcher.domain.states import CampaignStatus, Channel, DeliveryKind, State
from workers.gateways.base import Gateway
from workers.gateways.errors import DeliveryError, Permanent, Transient, Unknown
from workers.limits import Limiter, LimitTimeout, NoLimits

log = logging.getLogger(__name__)


def worker_actor() -> str:
    return f"worker:{socket.gethostname()}:{os.getpid()}"


@dataclass
class WorkerContext:
    """Everything the worker path needs, built once per worker process."""

    factory: sessionmaker[Session]
    gateways: dict[str, Gateway]  # by channel "fax", "email", and optionally "copies"
    documents: DocumentCache = field(default_factory=DocumentCache)
    limiter: Limiter = field(default_factory=NoLimits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease: timedelta = timedelta(minutes=10)
    fax_gap: timedelta = timedelta(seconds=0)  # minimum time between two faxes to one number
    reconcile_grace: timedelta = timedelta(seconds=60)  # before trusting a provider's "not found"
    media_url: Callable[[int, datetime], str] | None = None
    clock: Callable[[], datetime] = utcnow
    actor: str = field(default_factory=worker_actor)
    hooks: dict[str, Callable[[int], None]] = field(default_factory=dict)  # fault tests: "after_claim", ...


def gateway_for(worker: WorkerContext, delivery: Delivery) -> Gateway:
    """Supporter copies may have a gateway of their own; everything else goes by channel."""
    if delivery.kind == DeliveryKind.COPY and "copies" in worker.gateways:
        return worker.gateways["copies"]
    return worker.gateways[delivery.channel]


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    attempt: int
    gateway: Gateway


def deliver(worker: WorkerContext, delivery_id: int) -> str:
    """Run one delivery through claim, render, send and record; returns what happened, for logs."""
    claim = claim_delivery(worker, delivery_id)
    if isinstance(claim, str):
        return claim
    _hook(worker, "after_claim", delivery_id)
    try:
        rendered = _render(worker, claim)
    except SoftTimeLimitExceeded:
        raise  # the task ran out of time: not the document's fault; the lease settles this row
    except Exception as err:  # any rendering failure ends this delivery: nothing was sent
        return _record_render_failure(worker, claim, err)
    try:
        with worker.limiter.sending(claim.gateway.name, campaign=_campaign_key(worker, claim)):
            receipt: Receipt | DeliveryError = claim.gateway.send(rendered.message)
    except DeliveryError as err:
        receipt = err
    except LimitTimeout as err:  # raised before the send: nothing left
        receipt = Transient(f"local limit: {err}", code="local-limit")
    return _record_with_retries(worker, claim, rendered, receipt)


def deliver_many(worker: WorkerContext, ids: list[int], *, budget: float | None = None) -> dict[str, int]:
    """A batch from one broker message: each id goes through the full path on its own.

    With a ``budget`` (seconds), no new delivery is started once it is spent, so the task's time
    limit never cuts a send in half; the ids left stay ``queued`` and the sweeper publishes them again."""
    summary: dict[str, int] = {}
    started = time.monotonic()
    for delivery_id in ids:
        if budget is not None and time.monotonic() - started > budget:
            summary["left-for-republish"] = summary.get("left-for-republish", 0) + 1
            continue
        outcome = deliver(worker, delivery_id)
        summary[outcome] = summary.get(outcome, 0) + 1
    return summary


def claim_delivery(worker: WorkerContext, delivery_id: int) -> Claim | str:
    """The compare-and-set claim, committed before any send. Returns a reason string when not claimed."""
    now = worker.clock()
    with transaction(worker.factory) as session:
        # locked: a duplicate message's worker must not act on a state read before another claimed it
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None:
            return "missing"
        if delivery.state != State.QUEUED:
            return f"not-claimable:{delivery.state}"  # a duplicate message, or another worker's
        held = _hold_back(worker, session, delivery, now)
        if held:
            return held
        gateway = gateway_for(worker, delivery)
        attempt = delivery.attempt_count + 1
        claimed = compare_and_set(
            session,
            delivery_id,
            State.SENDING,
            expected={State.QUEUED},
            values={
                "lease_expires_at": now + worker.lease,
                "attempt_count": attempt,
                "gateway": gateway.name,
                "expects_report": gateway.reports_delivery,
                "provider_id": None,
            },
        )  # this attempt's id comes with its receipt; older ones stay on Attempt rows
        if not claimed:
            return "lost-race"
        session.add(
            DeliveryEvent(
                delivery_id=delivery_id,
                campaign_id=delivery.campaign_id,
                at=now,
                actor=worker.actor,
                from_state=State.QUEUED,
                to_state=State.SENDING,
                reason=f"attempt {attempt} via {gateway.name}",
            )
        )
        session.add(Attempt(delivery_id=delivery_id, number=attempt, gateway=gateway.name, started_at=now))
    return Claim(delivery_id, attempt, gateway)


def _hold_back(worker: WorkerContext, session: Session, delivery: Delivery, now: datetime) -> str | None:
    """Campaign paused or cancelled, or the fax line is busy with our own call: do not claim."""
    status = delivery.campaign.status
    deadline = delivery.campaign.deadline
    if deadline is not None and now >= deadline:
        transition(
            session,
            delivery,
            State.FAILED,
            actor=worker.actor,
            at=now,
            error_class="permanent",
            reason=f"campaign deadline {deadline.isoformat()} passed before it could be sent",
        )
        return "deadline"
    if status == CampaignStatus.CANCELLED:
        transition(session, delivery, State.CANCELLED, actor=worker.actor, at=now, reason="campaign cancelled")
        return "cancelled"
    if status != CampaignStatus.SCHEDULED:
        transition(session, delivery, State.PLANNED, actor=worker.actor, at=now, reason=f"campaign {status}")
        return f"held:{status}"
    if delivery.channel == Channel.FAX:
        wait = _fax_line_wait(worker, session, delivery, now)
        if wait is not None:
            transition(
                session,
                delivery,
                State.PLANNED,
                actor=worker.actor,
                at=now,
                reason="another fax to this number is in progress or just ended; waiting for the line",
            )
            delivery.not_before = now + wait
            return "line-busy"
    return None


def _fax_line_wait(worker: WorkerContext, session: Session, delivery: Delivery, now: datetime) -> timedelta | None:
    """One fax call at a time to a number, across campaigns and workers, and a gap between calls."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        # serialises claims to one number across workers until this transaction ends
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": delivery.destination})
    busy = session.scalar(
        select(Delivery.id)
        .where(
            Delivery.channel == Channel.FAX,
            Delivery.destination == delivery.destination,
            Delivery.id != delivery.id,
            Delivery.state.in_([State.SENDING, State.SUBMITTED, State.UNKNOWN]),
        )
        .limit(1)
    )
    if busy is not None:
        return max(worker.fax_gap, timedelta(seconds=5))
    if worker.fax_gap:
        last = session.scalar(
            select(Attempt.finished_at)
            .join(Delivery, Delivery.id == Attempt.delivery_id)
            .where(
                Delivery.destination == delivery.destination,
                Delivery.id != delivery.id,
                Attempt.finished_at.is_not(None),
            )
            .order_by(Attempt.finished_at.desc())
            .limit(1)
        )
        if last is not None and now - last < worker.fax_gap:
            return worker.fax_gap - (now - last)
    return None


def _render(worker: WorkerContext, claim: Claim) -> Rendered:
    with worker.factory() as session:
        delivery = session.get(Delivery, claim.delivery_id)
        assert delivery is not None
        url = (
            worker.media_url(delivery.id, worker.clock())
            if worker.media_url and delivery.channel == Channel.FAX
            else None
        )
        return worker.documents.render(delivery, media_url=url)


def _campaign_key(worker: WorkerContext, claim: Claim) -> str:
    with worker.factory() as session:
        delivery = session.get(Delivery, claim.delivery_id)
        return str(delivery.campaign_id if delivery else 0)


def _record_with_retries(
    worker: WorkerContext, claim: Claim, rendered: Rendered, outcome: Receipt | DeliveryError, *, tries: int = 5
) -> str:
    """The send happened: losing its record would turn a known outcome into an unknown one, so a
    database hiccup (connection dropped, serialisation failure) is retried before giving up."""
    for attempt in range(1, tries + 1):
        try:
            return record_outcome(worker, claim, rendered, outcome)
        except OperationalError:
            if attempt == tries:
                raise  # the lease will expire into `unknown` and reconciliation takes over
            log.warning("recording delivery %s failed (try %d); retrying", claim.delivery_id, attempt)
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def record_outcome(worker: WorkerContext, claim: Claim, rendered: Rendered, outcome: Receipt | DeliveryError) -> str:
    """Record the attempt and the new state in one transaction."""
    now = worker.clock()
    with transaction(worker.factory) as session:
        delivery = session.get(Delivery, claim.delivery_id, with_for_update=True)
        assert delivery is not None
        delivery.document_sha256 = rendered.sha256
        delivery.page_count = rendered.page_count
        attempt = _attempt(session, claim)
        attempt.finished_at = now
        attempt.document_sha256 = rendered.sha256
        if isinstance(outcome, Receipt):
            return _record_receipt(worker, session, delivery, attempt, outcome, now)
        return _record_error(worker, session, delivery, attempt, outcome, now)


def _attempt(session: Session, claim: Claim) -> Attempt:
    return session.scalars(
        select(Attempt).where(Attempt.delivery_id == claim.delivery_id, Attempt.number == claim.attempt)
    ).one()


def _record_receipt(
    worker: WorkerContext, session: Session, delivery: Delivery, attempt: Attempt, receipt: Receipt, now: datetime
) -> str:
    attempt.outcome, attempt.provider_id = "submitted", receipt.provider_id
    attempt.evidence = {"status": receipt.status, "accepted_at": receipt.accepted_at.isoformat()}
    if not _still_ours(delivery, attempt):
        return f"receipt-after-{delivery.state}"  # a status callback already moved it on: keep that
    delivery.provider_id = receipt.provider_id
    transition(
        session,
        delivery,
        State.SUBMITTED,
        actor=worker.actor,
        at=now,
        provider_id=receipt.provider_id,
        reason=f"accepted by {receipt.provider} as {receipt.provider_id} ({receipt.status})",
    )
    if not delivery.expects_report:
        skip_other_routes(session, delivery, actor=worker.actor, now=now)
    return "submitted"


def _still_ours(delivery: Delivery, attempt: Attempt) -> bool:
    """Whether this attempt's own outcome decides the state: still sending, or marked unknown by the
    sweeper because the lease ran out while this very attempt was still talking to the provider."""
    current = attempt.number == delivery.attempt_count
    return current and delivery.state in (State.SENDING, State.UNKNOWN)


def _record_error(
    worker: WorkerContext, session: Session, delivery: Delivery, attempt: Attempt, err: DeliveryError, now: datetime
) -> str:
    attempt.error_code, attempt.detail = err.code, str(err)
    if not _still_ours(delivery, attempt):
        attempt.outcome = "late"
        return f"error-after-{delivery.state}"
    if isinstance(err, Transient):
        attempt.outcome = "transient"
        if err.code == "local-limit":  # our own limiter, not the provider: not counted against the route
            attempt.outcome = "not-sent"
        retry_or_fail(
            session,
            delivery,
            actor=worker.actor,
            now=now,
            reason=str(err),
            policy=worker.retry,
            retry_after=err.retry_after,
            error_code=err.code,
        )
        return "transient"
    if isinstance(err, Permanent):
        attempt.outcome = "permanent"
        fail(session, delivery, actor=worker.actor, now=now, reason=str(err), error_code=err.code)
        return "permanent"
    attempt.outcome = "unknown"
    assert isinstance(err, Unknown)
    if delivery.state == State.SENDING:
        reason = f"{err}; the provider may have accepted it: reconcile before any resend"
        transition(session, delivery, State.UNKNOWN, actor=worker.actor, at=now, error_class="unknown", reason=reason)
        delivery.not_before = now + worker.reconcile_grace  # let the provider's listing catch up first
    return "unknown"


def _record_render_failure(worker: WorkerContext, claim: Claim, err: Exception) -> str:
    now = worker.clock()
    log.error("rendering failed for delivery %s: %s", claim.delivery_id, type(err).__name__)
    with transaction(worker.factory) as session:
        delivery = session.get(Delivery, claim.delivery_id)
        assert delivery is not None
        attempt = _attempt(session, claim)
        attempt.finished_at, attempt.outcome, attempt.detail = now, "permanent", f"rendering failed: {err}"
        fail(session, delivery, actor=worker.actor, now=now, reason=f"rendering failed, nothing sent: {err}")
    return "render-failed"


def _hook(worker: WorkerContext, name: str, delivery_id: int) -> None:
    hook = worker.hooks.get(name)
    if hook is not None:
        hook(delivery_id)
