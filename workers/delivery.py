"""The worker path for one delivery: claim, render, send, record. Plain functions; tasks are thin.
Supporter copies take the batch path (workers/batch.py), built on these same steps and rules.

1. Claim by compare-and-set ``queued -> sending`` with a lease, committed before anything leaves:
   no row, no send. A second copy of the message, or a second worker, finds nothing to claim.
   From here until 5, a heartbeat renews the lease every third of its length (workers/lease.py).
2. Render from the per-campaign cache.
3. Take the shared limits (an in-flight slot, renewed with the lease, and the rates).
4. Check the lease once more, by compare-and-set, immediately before the gateway call: if the row is no
   longer ``sending`` for this attempt, or the lease ran out, nothing is sent (recorded as not sent).
   Then call the gateway with the delivery's idempotency key.
5. Record the attempt and the new state in one transaction: ``submitted`` (receipt),
   ``retry_wait`` (Transient), ``failed`` (Permanent: the next route may go), or ``unknown``
   (the provider may have the message: reconciled later, never resent blindly). Any other
   exception from a gateway's send, or the task's time limit mid-send, is recorded as ``unknown`` too.
   A ConfigurationFault pauses the gateway (dispatcher/domain/gateway_pauses.py); with it, and with
   GatewayPaused (no call made), the delivery waits on its route, the attempt not counted.
A worker killed between 1 and 5 stops renewing: about one lease later its ``sending`` row is swept into
``unknown``, and its in-flight slot has expired.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Select, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import gateway_pauses, rules
from dispatcher.domain.copies import copy_blocker, official_outcomes
from dispatcher.domain.db import transaction
from dispatcher.domain.ledger import Finished, Ledger
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.messages import Message, Receipt
from dispatcher.domain.models import Attempt, Delivery, utcnow
from dispatcher.domain.outcomes import NOT_SENT_CODES, RetryPolicy, fail, retry_or_fail, skip_other_routes
from dispatcher.domain.rendering.documents import DocumentCache, Rendered
from dispatcher.domain.settings import Settings
from dispatcher.domain.states import Channel, CopiesWhen, DeliveryKind, State
from workers.gateways.base import Gateway
from workers.gateways.errors import (
    BATCH_STOPPED,
    ConfigurationFault,
    DeliveryError,
    GatewayPaused,
    Permanent,
    Transient,
    Unknown,
)
from workers.lease import Lease
from workers.limits import Limiter, LimitTimeout, NoLimits

log = logging.getLogger(__name__)

LEFT_FOR_REPUBLISH = "left-for-republish"  # past the batch budget: stays queued, published again

LEASE_EXPIRED = "lease-expired"  # one of outcomes.NOT_SENT_CODES
LEASE_LOST = (
    "the claim's lease had run out, or the row had moved on, right before the send: nothing was sent; "
    "it will be sent again"
)


def worker_actor() -> str:
    return f"worker:{socket.gethostname()}:{os.getpid()}"


@dataclass(kw_only=True)
class WorkerContext:
    """Everything the worker path needs, built once per worker process; intervals and limits come
    from Settings (``from_settings``), never from defaults of their own."""

    factory: sessionmaker[Session]
    gateways: dict[str, Gateway]  # by channel "fax", "email", and optionally "copies"
    retry: RetryPolicy
    lease: timedelta  # renewed every third of it while the worker lives; else the sweeper turns the row unknown
    fax_gap: timedelta  # minimum time between two faxes to one number
    reconcile_grace: timedelta  # before trusting a provider's "not found"
    report_wait: timedelta  # a submitted send with no final status this long after its acceptance is held
    batch_budget: timedelta  # no new send starts in a batch after this long
    documents: DocumentCache = field(default_factory=DocumentCache)
    limiter: Limiter = field(default_factory=NoLimits)
    media_url: Callable[[int, datetime], str] | None = None
    unsubscribe_url: Callable[[int], str] | None = None  # a supporter copy's signed link, by delivery id
    clock: Callable[[], datetime] = utcnow
    actor: str = field(default_factory=worker_actor)
    hooks: dict[str, Callable[[int], None]] = field(default_factory=dict)  # fault tests: "after_claim", ...

    @classmethod
    def from_settings(
        cls, settings: Settings, *, factory: sessionmaker[Session], gateways: dict[str, Gateway], **overrides: Any
    ) -> WorkerContext:
        """DISPATCH_LEASE_SECONDS, _FAX_GAP_SECONDS, _RECONCILE_GRACE_SECONDS, _REPORT_WAIT_SECONDS,
        _BATCH_BUDGET_SECONDS and the retry policy's settings, unless overridden."""
        context = cls(
            factory=factory,
            gateways=gateways,
            retry=RetryPolicy.from_settings(settings),
            lease=timedelta(seconds=settings.lease_seconds),
            fax_gap=timedelta(seconds=settings.fax_gap_seconds),
            reconcile_grace=timedelta(seconds=settings.reconcile_grace_seconds),
            report_wait=timedelta(seconds=settings.report_wait_seconds),
            batch_budget=timedelta(seconds=settings.batch_budget_seconds),
        )
        return replace(context, **overrides)


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
    # the campaign whose rate a letter counts against (DISPATCH_CAMPAIGN_PER_MINUTE), read at the claim;
    # None for a supporter copy, held by its gateway's limits alone
    rate_key: str | None = None


def deliver(worker: WorkerContext, delivery_id: int) -> str:
    """Run one delivery through claim, render, send and record; returns what happened, for logs."""
    prepared = prepare(worker, delivery_id)
    return prepared if isinstance(prepared, str) else finish(worker, prepared)


@dataclass
class Prepared:
    """A delivery claimed and rendered, its lease beating, not yet sent: :func:`finish` sends and records it
    (and ends the lease), or :func:`release` records it not sent."""

    claim: Claim
    lease: Lease
    rendered: Rendered


def prepare(worker: WorkerContext, delivery_id: int) -> Prepared | str:
    """Claim and render one delivery; a string says why there is nothing to send (not claimed, or its
    rendering failed and was recorded)."""
    claim = claim_delivery(worker, delivery_id)
    if isinstance(claim, str):
        return claim
    lease = Lease(
        factory=worker.factory, delivery_id=delivery_id, attempt=claim.attempt, length=worker.lease, clock=worker.clock
    )
    lease.__enter__()  # the heartbeat renews the claim until its outcome is recorded (finish or release)
    try:
        _hook(worker, "after_claim", delivery_id)
        rendered = _render(worker, claim)
    except SoftTimeLimitExceeded:
        lease.__exit__(None, None, None)
        raise  # the task ran out of time: not the document's fault; the lease settles this row
    except Exception as err:  # any rendering failure ends this delivery: nothing was sent
        try:
            return _record_render_failure(worker, claim, err)
        finally:
            lease.__exit__(None, None, None)
    except BaseException:
        lease.__exit__(None, None, None)
        raise
    return Prepared(claim, lease, rendered)


def finish(worker: WorkerContext, prepared: Prepared) -> str:
    """Send a prepared delivery and record its outcome; its lease ends with the record."""
    return record_sent(worker, prepared, send_prepared(worker, prepared))


def send_prepared(worker: WorkerContext, prepared: Prepared) -> Receipt | DeliveryError:
    """The provider's call for a prepared delivery: its outcome, to be given to :func:`record_sent`. When the task's
    time limit cuts the call, that is recorded (the lease ends) and the limit goes on."""
    try:
        return _send(worker, prepared.claim, prepared.rendered, prepared.lease)
    except SoftTimeLimitExceeded:
        # the task's time limit cut the call short: whether the provider has it is unknown; record
        # that now (reconciled by reference), then let the task end
        timeout = Unknown("the task's time limit ended the send", code="timeout")
        record_sent(worker, prepared, timeout)
        raise
    except BaseException:
        prepared.lease.__exit__(None, None, None)
        raise


def record_sent(worker: WorkerContext, prepared: Prepared, outcome: Receipt | DeliveryError) -> str:
    """Record a sent delivery's outcome; its lease (entered by :func:`prepare`) ends with the record."""
    try:
        _hook(worker, "before_record", prepared.claim.delivery_id)
        return _record_with_retries(worker, prepared.claim, prepared.rendered, outcome)
    finally:
        prepared.lease.__exit__(None, None, None)  # the heartbeat stops once recorded


def release(worker: WorkerContext, prepared: Prepared, why: str) -> str:
    """Record a prepared delivery as not sent (``batch-stopped``: retried after backoff, not counted
    against its route); its lease ends with the record."""
    try:
        stopped = Transient(f"not sent: {why}", code=BATCH_STOPPED)
        return _record_with_retries(worker, prepared.claim, prepared.rendered, stopped)
    finally:
        prepared.lease.__exit__(None, None, None)


def _send(worker: WorkerContext, claim: Claim, rendered: Rendered, lease: Lease) -> Receipt | DeliveryError:
    """Take the shared limits, check the lease, then call the gateway; every outcome comes back as a value."""
    outcome: Receipt | DeliveryError | None = None
    try:
        with worker.limiter.sending(claim.gateway.name, campaign=claim.rate_key) as slot:
            lease.hold(slot)
            if not _lease_confirmed(lease, claim):  # immediately before the call: no send on a lost claim
                return Transient(LEASE_LOST, code=LEASE_EXPIRED)
            outcome = _call_gateway(claim.gateway, rendered.message, claim.delivery_id)
    except LimitTimeout as err:  # raised before the send: nothing left
        return Transient(f"local limit: {err}", code="local-limit")
    except SoftTimeLimitExceeded:
        raise
    except Exception as err:
        if outcome is not None:  # the limiter failed while releasing, after the call: keep its outcome
            log.error("releasing the limits after delivery %s failed: %s", claim.delivery_id, type(err).__name__)
            return outcome
        # the limiter failed before the call: nothing left, and it is our side, not the route's
        log.error("taking the limits for delivery %s failed: %s", claim.delivery_id, type(err).__name__)
        return Transient(f"local limit unavailable ({type(err).__name__})", code="local-limit")
    finally:
        lease.hold(None)
    assert outcome is not None
    return outcome


def _lease_confirmed(lease: Lease, claim: Claim) -> bool:
    """The check before the send: the claim's lease renewed by compare-and-set, or no send."""
    try:
        confirmed = lease.renew()
    except SoftTimeLimitExceeded:
        raise
    except Exception as err:  # the ledger cannot confirm the claim: do not send on it
        log.error("checking the lease of delivery %s before its send failed: %s", claim.delivery_id, type(err).__name__)
        return False
    if not confirmed:
        log.warning("delivery %s: the lease was lost before the send; nothing sent", claim.delivery_id)
    return confirmed


def _call_gateway(gateway: Gateway, message: Message, delivery_id: int) -> Receipt | DeliveryError:
    """A gateway raises only DeliveryError by contract; anything else (a bug, an odd input) may have
    struck before or after the provider took the request, so it is Unknown: reconciled by our
    reference, never resent blindly. Only the exception's class is kept: its text may hold personal data."""
    try:
        return gateway.send(message)
    except DeliveryError as err:
        return err
    except SoftTimeLimitExceeded:
        raise
    except Exception as err:
        name = type(err).__name__
        log.error(
            "gateway %s raised %s for delivery %s; outcome unknown, to be reconciled", gateway.name, name, delivery_id
        )
        return Unknown(f"{gateway.name} raised {name}", code="unexpected-error")


def deliver_many(worker: WorkerContext, ids: list[int]) -> dict[str, int]:
    """A batch from one broker message: its supporter copies together (workers/batch.py), every other id
    through the full path on its own, the next one claimed and rendered while the current one is sent
    (:func:`_pipelined`).

    Once the worker's ``batch_budget`` is spent, no new delivery is started, so the task's time limit
    never cuts a send in half; the ids left stay ``queued`` and the sweeper publishes them again (copies
    already claimed are recorded as not sent and retried after backoff)."""
    from workers.batch import deliver_copies  # the batch path builds on this module

    started = time.monotonic()
    summary, others = deliver_copies(worker, ids)
    budget = worker.batch_budget.total_seconds()

    def in_budget() -> bool:
        return time.monotonic() - started <= budget

    for outcome in _pipelined(worker, others, in_budget):
        summary[outcome] = summary.get(outcome, 0) + 1
    return summary


def _pipelined(worker: WorkerContext, ids: list[int], in_budget: Callable[[], bool]) -> Iterator[str]:
    """Each id's outcome. While one delivery is with the provider (its latency), one thread records the outcome
    of the one before and claims and renders the next, so a worker process keeps its line to the provider
    busy. At most one delivery is prepared ahead and one sent and not yet recorded. When anything interrupts
    the loop (the task's soft time limit, an error), the outcomes already had are recorded, and a delivery
    prepared and not yet sent is recorded not sent, before the error goes on: no claim is left with its
    lease beating in a process that has moved on."""
    if len(ids) <= 1:
        for only in ids:
            yield deliver(worker, only) if in_budget() else LEFT_FOR_REPUBLISH
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as ahead:
        pending: Future[Prepared | str] | None = None
        current: Prepared | str | None = None
        recording: deque[Future[str]] = deque()  # in order; the thread runs them between the preparations
        try:
            for delivery_id in [*ids, None]:
                if pending is not None:
                    current, pending = pending.result(), None
                if delivery_id is not None:
                    if in_budget():
                        pending = ahead.submit(prepare, worker, delivery_id)
                    else:
                        yield LEFT_FOR_REPUBLISH
                if current is not None:
                    todo, current = current, None
                    if isinstance(todo, str):
                        yield todo
                    else:
                        recording.append(ahead.submit(record_sent, worker, todo, send_prepared(worker, todo)))
                while recording and recording[0].done():
                    yield recording.popleft().result()
            while recording:
                yield recording.popleft().result()
        except BaseException:
            for outcome in recording:  # sent: their outcomes are recorded before anything else
                with contextlib.suppress(Exception):  # its own failure was logged where it happened
                    outcome.result()
            for left in (current, pending):
                _release(worker, left)
            raise


def _release(worker: WorkerContext, left: Prepared | str | Future[Prepared | str] | None) -> None:
    """Record a delivery prepared ahead, and left unsent by an interrupted loop, as not sent."""
    if isinstance(left, Future):
        try:
            left = left.result()
        except Exception:  # its own failure was raised or logged where it happened; the first error goes on
            return
    if isinstance(left, Prepared):
        release(worker, left, "the task stopped before its turn")


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
        ledger = SqlLedger(session)
        held = _hold_back(worker, session, ledger, delivery, now)
        if held:
            return held
        gateway = gateway_for(worker, delivery)
        attempt = ledger.claim(
            delivery,
            actor=worker.actor,
            at=now,
            lease_until=now + worker.lease,
            gateway=gateway.name,
            reports=gateway.reports_delivery,
        )
        if attempt is None:
            return "lost-race"
        rate_key = None if delivery.kind == DeliveryKind.COPY else str(delivery.campaign_id)
    return Claim(delivery_id, attempt, gateway, rate_key)


def _hold_back(
    worker: WorkerContext, session: Session, ledger: Ledger, delivery: Delivery, now: datetime
) -> str | None:
    """Deadline passed, campaign paused or cancelled, or the fax line busy with our own call: do not claim.
    The same rules (dispatcher.domain.rules) as the scheduler's, checked again under the claim's lock."""
    campaign = delivery.campaign
    if delivery.kind == DeliveryKind.LETTER and rules.deadline_passed(campaign.deadline, now=now):
        assert campaign.deadline is not None
        ledger.move(
            delivery,
            State.FAILED,
            actor=worker.actor,
            at=now,
            error_class="permanent",
            reason=f"campaign deadline {campaign.deadline.isoformat()} passed before it could be sent",
        )
        return "deadline"
    gate = rules.campaign_gate(campaign.status)
    if gate is rules.Gate.CANCEL:
        ledger.move(delivery, State.CANCELLED, actor=worker.actor, at=now, reason="campaign cancelled")
        return "cancelled"
    if gate is rules.Gate.HOLD:
        ledger.move(delivery, State.PLANNED, actor=worker.actor, at=now, reason=f"campaign {campaign.status}")
        return f"held:{campaign.status}"
    if delivery.kind == DeliveryKind.COPY:
        withheld = copy_blocker(session, delivery)  # unsubscribed, consent withdrawn or erased since planning
        if withheld:
            ledger.move(delivery, State.CANCELLED, actor=worker.actor, at=now, reason=withheld)
            return "copy-withheld"
    if delivery.channel == Channel.FAX:
        wait = _fax_line_wait(worker, session, delivery, now)
        if wait is not None:
            ledger.move(
                delivery,
                State.PLANNED,
                actor=worker.actor,
                at=now,
                reason="another fax to this number is in progress or just ended; waiting for the line",
                not_before=now + wait,
            )
            return "line-busy"
    return None


def line_queries(destination: str, delivery_id: int) -> tuple[Select[int], Select[datetime | None]]:
    """The two facts of a fax line, each read through the index on the destination (a claim does not scan
    the ledger, however many deliveries it holds): another fax to the number in progress, and when the last
    call to it ended."""
    busy = (
        select(Delivery.id)
        .where(
            Delivery.channel == Channel.FAX,
            Delivery.destination == destination,
            Delivery.id != delivery_id,
            Delivery.state.in_([State.SENDING, State.SUBMITTED, State.UNKNOWN]),
        )
        .limit(1)
    )
    last = (
        select(Attempt.finished_at)
        .join(Delivery, Delivery.id == Attempt.delivery_id)
        .where(
            Delivery.destination == destination,
            Delivery.id != delivery_id,
            Attempt.finished_at.is_not(None),
        )
        .order_by(Attempt.finished_at.desc())
        .limit(1)
    )
    return busy, last


def _fax_line_wait(worker: WorkerContext, session: Session, delivery: Delivery, now: datetime) -> timedelta | None:
    """One fax call at a time to a number, across campaigns and workers, and a gap between calls:
    the facts from the ledger, the rule from rules.fax_line_wait."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        # serialises claims to one number across workers until this transaction ends
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": delivery.destination})
    busy_query, last_query = line_queries(delivery.destination, delivery.id)
    busy = session.scalar(busy_query)
    last = session.scalar(last_query)
    return rules.fax_line_wait(busy=busy is not None, last_call_ended=last, gap=worker.fax_gap, now=now)


def _render(worker: WorkerContext, claim: Claim) -> Rendered:
    with worker.factory() as session:
        delivery = session.get(Delivery, claim.delivery_id)
        assert delivery is not None
        if delivery.kind == DeliveryKind.COPY:
            return worker.documents.render(
                delivery,
                unsubscribe_url=worker.unsubscribe_url(delivery.id) if worker.unsubscribe_url else None,
                outcomes=official_outcomes(session, delivery.campaign_id)
                if delivery.campaign.copies == CopiesWhen.AFTER_DELIVERY
                else None,
            )
        url = (
            worker.media_url(delivery.id, worker.clock())
            if worker.media_url and delivery.channel == Channel.FAX
            else None
        )
        return worker.documents.render(delivery, media_url=url)


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
        ledger = SqlLedger(session)
        ledger.finish_attempt(delivery, claim.attempt, at=now, finished=_finished(delivery, claim, rendered, outcome))
        if isinstance(outcome, Receipt):
            return _record_receipt(worker, session, ledger, delivery, claim, outcome, now)
        return _record_error(worker, session, ledger, delivery, claim, outcome, now)


def _finished(delivery: Delivery, claim: Claim, rendered: Rendered, outcome: Receipt | DeliveryError) -> Finished:
    """The attempt's record: the document sent, and the provider's receipt or the error."""
    if isinstance(outcome, Receipt):
        evidence = {"status": outcome.status, "accepted_at": outcome.accepted_at.isoformat()}
        return Finished(
            "submitted",
            document_sha256=rendered.sha256,
            page_count=rendered.page_count,
            provider_id=outcome.provider_id,
            evidence=evidence,
        )
    return Finished(
        _error_outcome(delivery, claim, outcome),
        document_sha256=rendered.sha256,
        page_count=rendered.page_count,
        error_code=outcome.code,
        detail=str(outcome),
    )


def _still_ours(delivery: Delivery, claim: Claim) -> bool:
    """Whether this attempt's own outcome decides the state: still sending, or marked unknown by the
    sweeper because the lease ran out while this very attempt was still talking to the provider."""
    current = claim.attempt == delivery.attempt_count
    return current and delivery.state in (State.SENDING, State.UNKNOWN)


def _error_outcome(delivery: Delivery, claim: Claim, err: DeliveryError) -> str:
    """What the attempt row says of an error: ``late`` when the delivery has moved on without it."""
    if not _still_ours(delivery, claim):
        return "late"
    if isinstance(err, ConfigurationFault | GatewayPaused):
        return "not-sent"  # our configuration or a paused gateway: not counted against the route
    if isinstance(err, Transient):
        # our own limiter, not the provider: not counted against the route
        return "not-sent" if err.code in NOT_SENT_CODES else "transient"
    return "permanent" if isinstance(err, Permanent) else "unknown"


def _record_receipt(
    worker: WorkerContext,
    session: Session,
    ledger: Ledger,
    delivery: Delivery,
    claim: Claim,
    receipt: Receipt,
    now: datetime,
) -> str:
    if not _still_ours(delivery, claim):
        return f"receipt-after-{delivery.state}"  # a status callback already moved it on: keep that
    ledger.identify(delivery, receipt.provider_id)
    ledger.move(
        delivery,
        State.SUBMITTED,
        actor=worker.actor,
        at=now,
        provider_id=receipt.provider_id,
        reason=f"accepted by {receipt.provider} as {receipt.provider_id} ({receipt.status})",
    )
    if not delivery.expects_report:
        skip_other_routes(session, ledger, delivery, actor=worker.actor, now=now)
    return "submitted"


def _record_error(
    worker: WorkerContext,
    session: Session,
    ledger: Ledger,
    delivery: Delivery,
    claim: Claim,
    err: DeliveryError,
    now: datetime,
) -> str:
    if not _still_ours(delivery, claim):
        return f"error-after-{delivery.state}"
    if isinstance(err, ConfigurationFault | GatewayPaused):
        return _wait_for_gateway(worker, ledger, delivery, claim, err, now)
    if isinstance(err, Transient):
        retry_or_fail(
            session,
            ledger,
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
        fail(ledger, delivery, actor=worker.actor, now=now, reason=str(err), error_code=err.code)
        return "permanent"
    assert isinstance(err, Unknown)
    if delivery.state == State.SENDING:
        ledger.move(
            delivery,
            State.UNKNOWN,
            actor=worker.actor,
            at=now,
            error_class="unknown",
            reason=f"{err}; the provider may have accepted it: reconcile before any resend",
            not_before=now + worker.reconcile_grace,  # let the provider's listing catch up first
        )
    return "unknown"


def _wait_for_gateway(
    worker: WorkerContext,
    ledger: Ledger,
    delivery: Delivery,
    claim: Claim,
    err: ConfigurationFault | GatewayPaused,
    now: datetime,
) -> str:
    """Nothing was sent and the route is not at fault: a configuration fault pauses the gateway for every
    process (in this transaction), and the delivery waits on its route until the gateway sends again."""
    if isinstance(err, ConfigurationFault):
        gateway_pauses.pause_for_configuration(ledger, claim.gateway.name, at=now, reason=str(err), setting=err.setting)
    gateway_pauses.wait_on_route(ledger, delivery, actor=worker.actor, now=now, reason=str(err), error_code=err.code)
    return "gateway-paused"


def _record_render_failure(worker: WorkerContext, claim: Claim, err: Exception) -> str:
    now = worker.clock()
    log.error("rendering failed for delivery %s: %s", claim.delivery_id, type(err).__name__)
    with transaction(worker.factory) as session:
        delivery = session.get(Delivery, claim.delivery_id)
        assert delivery is not None
        ledger = SqlLedger(session)
        finished = Finished("permanent", detail=f"rendering failed: {err}")
        ledger.finish_attempt(delivery, claim.attempt, at=now, finished=finished)
        fail(ledger, delivery, actor=worker.actor, now=now, reason=f"rendering failed, nothing sent: {err}")
    return "render-failed"


def _hook(worker: WorkerContext, name: str, delivery_id: int) -> None:
    hook = worker.hooks.get(name)
    if hook is not None:
        hook(delivery_id)
