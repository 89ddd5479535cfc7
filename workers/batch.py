"""The batch path for supporter copies: a broker message's copies claimed, rendered, sent and recorded
together, with every guarantee of the per-delivery path (workers/delivery.py), in far fewer round trips.

1. Claim: one transaction locks the message's rows (``FOR UPDATE``, in id order), applies the holds of
   ``_hold_back`` in bulk (the campaign's gate; the copy's consent, membership and suppression, with one
   query each for all the rows), then claims every claimable row by compare-and-set
   (``SqlLedger.claim_many``: ``UPDATE ... WHERE id IN (...) AND state='queued' RETURNING``), with their
   events and attempts. Committed before anything leaves: no row, no send. Rows of another kind (letters)
   are handed back to the per-delivery path.
2. One heartbeat (workers/lease.py ``BatchLease``) renews the leases of every claim the batch still holds.
3. Render every claimed copy from what step 1 loaded (campaign, letter template, supporter: no lazy
   loads) and the per-campaign DocumentCache; the officials' outcomes once per campaign.
4. Send in chunks of at most ``SEND_CHUNK``: take the gateway's rate for the chunk in one Redis call
   (workers/limits.py ``Tokens.take``) under the batch's one in-flight slot; confirm the chunk's leases
   with one UPDATE immediately before sending it, and send only the rows confirmed; send them over the
   gateway's one connection (``Gateway.send_many``), each outcome mapped as a single send's.
5. Record the chunk's outcomes in one transaction: receipts in bulk (``SqlLedger.submit_many``), any other
   outcome through the per-delivery path's own rules (retry_or_fail, fail, unknown, a configuration fault
   pausing the gateway), row by row, in that same transaction.

A worker killed at any point leaves its claimed rows ``sending``: their leases run out and the sweeper
turns them ``unknown`` (reconciled, never resent blindly). A second message with the same ids finds no
``queued`` row and sends nothing. Once DISPATCH_BATCH_BUDGET_SECONDS is spent, the claims not yet sent are
recorded as not sent (code ``batch-budget``: not counted against the route) and retried after backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, joinedload, selectinload

from dispatcher.domain import rules
from dispatcher.domain.copies import official_outcomes
from dispatcher.domain.db import transaction
from dispatcher.domain.ledger import Due, Submitted
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.messages import Receipt
from dispatcher.domain.models import Campaign, Delivery, Supporter
from dispatcher.domain.rendering.copy import OfficialOutcome
from dispatcher.domain.rendering.documents import Rendered
from dispatcher.domain.states import CopiesWhen, DeliveryKind, State
from dispatcher.domain.suppression import suppressed_among
from workers.delivery import (
    LEASE_EXPIRED,
    LEASE_LOST,
    Claim,
    WorkerContext,
    _finished,
    _hook,
    _record_error,
    _record_receipt,
    _record_render_failure,
)
from workers.gateways.base import Gateway
from workers.gateways.errors import DeliveryError, Transient, Unknown
from workers.lease import BatchLease
from workers.limits import LimitTimeout

log = logging.getLogger(__name__)

SEND_CHUNK = 100  # sends per lease check and per record transaction
BATCH_BUDGET = "batch-budget"  # one of outcomes.NOT_SENT_CODES
RECORD_TRIES = 5
Outcome = Receipt | DeliveryError


@dataclass(frozen=True)
class _Copy:
    claim: Claim
    delivery: Delivery  # as loaded at the claim (campaign, template and supporter with it); not refreshed
    rendered: Rendered | None = None


def copies_gateway(worker: WorkerContext) -> Gateway:
    """The gateway supporter copies go through: their own, else email's (workers/delivery.gateway_for)."""
    return worker.gateways.get("copies") or worker.gateways["email"]


def deliver_copies(worker: WorkerContext, ids: Sequence[int]) -> tuple[dict[str, int], list[int]]:
    """The batch path for the copies among ``ids``; returns what happened to them (for logs) and the ids
    that are not copies, for the per-delivery path."""
    started = time.monotonic()
    summary: dict[str, int] = {}
    gateway = copies_gateway(worker)
    copies, others = _claim(worker, gateway, ids, summary)
    if not copies:
        return summary, others
    lease = BatchLease(
        factory=worker.factory,
        attempts={c.claim.delivery_id: c.claim.attempt for c in copies},
        length=worker.lease,
        clock=worker.clock,
    )
    with lease:
        for copy in copies:
            _hook(worker, "after_claim", copy.claim.delivery_id)
        rendered = _render(worker, copies, summary, lease)
        _send(worker, gateway, rendered, lease, summary, started)
    return summary, others


def _count(summary: dict[str, int], what: str, n: int = 1) -> None:
    if n:
        summary[what] = summary.get(what, 0) + n


# -- 1. the claim ------------------------------------------------------------------------------------------


def _claim(
    worker: WorkerContext, gateway: Gateway, ids: Sequence[int], summary: dict[str, int]
) -> tuple[list[_Copy], list[int]]:
    now = worker.clock()
    with transaction(worker.factory) as session:
        rows = list(
            session.scalars(
                select(Delivery)
                .where(Delivery.id.in_(list(ids)))
                .options(
                    # the campaign (its spec and template) once for the batch, not once per row of the join
                    selectinload(Delivery.campaign).joinedload(Campaign.letter),
                    joinedload(Delivery.supporter),
                    joinedload(Delivery.addressee),  # none for a copy: loaded so rendering asks nothing more
                )
                .order_by(Delivery.id)
                .with_for_update(of=Delivery)  # a duplicate message's worker waits here, then finds them claimed
            ).unique()
        )
        found = {d.id for d in rows}
        _count(summary, "missing", len([i for i in ids if i not in found]))
        others = [d.id for d in rows if d.kind != DeliveryKind.COPY]
        queued = []
        for delivery in rows:
            if delivery.kind != DeliveryKind.COPY:
                continue
            if delivery.state != State.QUEUED:
                _count(summary, f"not-claimable:{delivery.state}")  # a duplicate message, or another worker's
            else:
                queued.append(delivery)
        ledger = SqlLedger(session)
        # the other rows go one by one after this (workers/delivery.deliver): their message is taken, so
        # the sweeper must not take them for lost while they wait their turn (dispatcher/domain/scheduling.py)
        ledger.taken([d.id for d in rows if d.kind != DeliveryKind.COPY and d.state == State.QUEUED], at=now)
        claimable = _hold_back(worker, session, ledger, queued, now, summary)
        attempts = ledger.claim_many(
            [Due(d.id, d.campaign_id, d.kind, State.QUEUED, "") for d in claimable],
            actor=worker.actor,
            at=now,
            lease_until=now + worker.lease,
            gateway=gateway.name,
            reports=gateway.reports_delivery,
        )
    _count(summary, "lost-race", len(claimable) - len(attempts))
    copies = [_Copy(Claim(d.id, attempts[d.id], gateway), d) for d in claimable if d.id in attempts]
    return copies, others


def _hold_back(
    worker: WorkerContext,
    session: Session,
    ledger: SqlLedger,
    copies: list[Delivery],
    now: datetime,
    summary: dict[str, int],
) -> list[Delivery]:
    """The per-delivery path's holds for copies (workers/delivery._hold_back; a deadline binds letters
    only), each checked for all the rows at once; the rows held are moved as there, one by one."""
    members = {s.id: s for s in session.scalars(select(Supporter).where(Supporter.id.in_(_supporters(copies))))}
    suppressed = suppressed_among(session, {d.destination for d in copies})
    claimable = []
    for delivery in copies:
        gate = rules.campaign_gate(delivery.campaign.status)
        supporter = members.get(delivery.supporter_id) if delivery.supporter_id is not None else None
        if gate is rules.Gate.CANCEL:
            ledger.move(delivery, State.CANCELLED, actor=worker.actor, at=now, reason="campaign cancelled")
            _count(summary, "cancelled")
        elif gate is rules.Gate.HOLD:
            why = f"campaign {delivery.campaign.status}"
            ledger.move(delivery, State.PLANNED, actor=worker.actor, at=now, reason=why)
            _count(summary, f"held:{delivery.campaign.status}")
        elif (withheld := _withheld(supporter, delivery.destination in suppressed)) is not None:
            ledger.move(delivery, State.CANCELLED, actor=worker.actor, at=now, reason=withheld)
            _count(summary, "copy-withheld")
        else:
            claimable.append(delivery)
    return claimable


def _supporters(copies: list[Delivery]) -> list[int]:
    return [d.supporter_id for d in copies if d.supporter_id is not None]


def _withheld(supporter: Supporter | None, suppressed: bool) -> str | None:
    """copies.copy_blocker's answer, from facts read in bulk; names no address or name (it is logged)."""
    if supporter is None:
        return "the supporter is no longer on the list (removed or erased)"
    if not supporter.consent:
        return "the supporter withdrew consent"
    if suppressed:
        return "the address is on the suppression list (unsubscribed, bounced or complained)"
    return None


# -- 3. rendering ------------------------------------------------------------------------------------------


def _render(worker: WorkerContext, copies: list[_Copy], summary: dict[str, int], lease: BatchLease) -> list[_Copy]:
    outcomes: dict[int, list[OfficialOutcome] | None] = {}
    done = []
    for copy in copies:
        delivery = copy.delivery
        try:
            if delivery.campaign_id not in outcomes:
                outcomes[delivery.campaign_id] = _outcomes(worker, delivery.campaign)
            rendered = worker.documents.render(
                delivery,
                unsubscribe_url=worker.unsubscribe_url(delivery.id) if worker.unsubscribe_url else None,
                outcomes=outcomes[delivery.campaign_id],
            )
        except SoftTimeLimitExceeded:
            raise  # not the document's fault; the leases settle these rows
        except Exception as err:  # this copy's rendering failed: nothing was sent for it
            _count(summary, _record_render_failure(worker, copy.claim, err))
            lease.release([delivery.id])
            continue
        done.append(_Copy(copy.claim, delivery, rendered))
    return done


def _outcomes(worker: WorkerContext, campaign: Campaign) -> list[OfficialOutcome] | None:
    if campaign.copies != CopiesWhen.AFTER_DELIVERY:
        return None
    with worker.factory() as session:
        return official_outcomes(session, campaign.id)


# -- 4. sending --------------------------------------------------------------------------------------------


def _send(
    worker: WorkerContext,
    gateway: Gateway,
    copies: list[_Copy],
    lease: BatchLease,
    summary: dict[str, int],
    started: float,
) -> None:
    pending = list(copies)
    budget = worker.batch_budget.total_seconds()
    limiter = True  # whether an exception now comes from the limiter (taking or giving back)
    try:
        with worker.limiter.batch(gateway.name) as tokens:
            lease.hold(tokens)
            while pending:
                if time.monotonic() - started > budget:
                    why = Transient("the worker's batch budget was spent before this send", code=BATCH_BUDGET)
                    limiter = False
                    _record(worker, lease, [(c, why) for c in pending], summary)
                    pending = []
                    break
                limiter = True
                granted = tokens.take(min(SEND_CHUNK, len(pending)))
                chunk, pending = pending[:granted], pending[granted:]
                limiter = False
                _send_chunk(worker, gateway, chunk, lease, summary)
            limiter = True
    except LimitTimeout as err:  # raised before those sends: nothing left
        _record(worker, lease, [(c, Transient(f"local limit: {err}", code="local-limit")) for c in pending], summary)
    except SoftTimeLimitExceeded:
        raise
    except Exception as err:
        if not limiter:
            raise
        # the limiter failed (Redis): our side, not the route's; the sends not started are retried
        log.error("taking the limits for a batch of copies failed: %s", type(err).__name__)
        why = Transient(f"local limit unavailable ({type(err).__name__})", code="local-limit")
        _record(worker, lease, [(c, why) for c in pending], summary)
    finally:
        lease.hold(None)


def _send_chunk(
    worker: WorkerContext, gateway: Gateway, chunk: list[_Copy], lease: BatchLease, summary: dict[str, int]
) -> None:
    try:
        confirmed = lease.confirm([c.claim.delivery_id for c in chunk])  # immediately before the sends
    except SoftTimeLimitExceeded:
        raise
    except Exception as err:  # the ledger cannot confirm the claims: send none of them
        log.error("checking the leases of a chunk of copies failed: %s", type(err).__name__)
        confirmed = set()
    lost = Transient(LEASE_LOST, code=LEASE_EXPIRED)
    go = [c for c in chunk if c.claim.delivery_id in confirmed]
    done: list[tuple[_Copy, Outcome]] = [(c, lost) for c in chunk if c.claim.delivery_id not in confirmed]
    if len(go) < len(chunk):
        log.warning("%d copies lost their lease before the send; nothing sent for them", len(chunk) - len(go))
    outcomes: list[Outcome] = []
    try:
        gateway.send_many([c.rendered.message for c in go if c.rendered is not None], outcomes)
    except SoftTimeLimitExceeded:
        # the task's time limit cut the batch short: the send under way may have left (unknown), the
        # ones after it did not start; record all that, then let the task end. Through a batch endpoint
        # (max_batch > 1) the request under way carried every message not yet answered: all unknown
        in_flight = len(go) if gateway.max_batch > 1 else 1
        cut = Unknown("the task's time limit ended the send", code="timeout")
        rest = Transient("the task's time limit came before this send: nothing sent", code=BATCH_BUDGET)
        sent = list(zip(go, outcomes, strict=False))
        after = [(c, cut if i < in_flight else rest) for i, c in enumerate(go[len(outcomes) :])]
        _record(worker, lease, [*done, *sent, *after], summary)
        raise
    _record(worker, lease, [*done, *zip(go, outcomes, strict=True)], summary)


# -- 5. recording ------------------------------------------------------------------------------------------


def _record(
    worker: WorkerContext, lease: BatchLease, outcomes: list[tuple[_Copy, Outcome]], summary: dict[str, int]
) -> None:
    """The chunk's outcomes in one transaction; a database hiccup is retried, as a single send's record is:
    losing it would turn known outcomes into unknown ones."""
    if not outcomes:
        return
    for attempt in range(1, RECORD_TRIES + 1):
        try:
            results = record_outcomes(worker, outcomes)
            break
        except OperationalError:
            if attempt == RECORD_TRIES:
                raise  # the leases will expire into `unknown` and reconciliation takes over
            log.warning("recording a chunk of %d copies failed (try %d); retrying", len(outcomes), attempt)
            time.sleep(0.2 * 2**attempt)
    lease.release([c.claim.delivery_id for c, _ in outcomes])
    for result in results:
        _count(summary, result)


def record_outcomes(worker: WorkerContext, outcomes: list[tuple[_Copy, Outcome]]) -> list[str]:
    """Every outcome of a chunk in one transaction: a receipt for a claim still ``sending`` for its attempt
    in bulk, anything else by the per-delivery path's rules (workers/delivery.record_outcome), row by row."""
    now = worker.clock()
    results: list[str] = []
    with transaction(worker.factory) as session:
        ids = sorted(c.claim.delivery_id for c, _ in outcomes)
        current = {
            r.id: r
            for r in session.execute(
                select(Delivery.id, Delivery.state, Delivery.attempt_count)
                .where(Delivery.id.in_(ids))
                .order_by(Delivery.id)
                .with_for_update()
            )
        }
        ledger = SqlLedger(session)
        receipts: list[Submitted] = []
        one_by_one: list[tuple[_Copy, Outcome]] = []
        for copy, outcome in outcomes:
            row = current[copy.claim.delivery_id]
            ours = row.state == State.SENDING and row.attempt_count == copy.claim.attempt
            if isinstance(outcome, Receipt) and ours and copy.rendered is not None:
                receipts.append(_submitted(copy, outcome))
            else:
                one_by_one.append((copy, outcome))
        ledger.submit_many(receipts, actor=worker.actor, at=now)
        results.extend("submitted" for _ in receipts)
        for copy, outcome in one_by_one:
            results.append(_record_one(worker, session, ledger, copy, outcome, now))
    return results


def _submitted(copy: _Copy, receipt: Receipt) -> Submitted:
    assert copy.rendered is not None
    return Submitted(
        delivery_id=copy.claim.delivery_id,
        campaign_id=copy.delivery.campaign_id,
        kind=copy.delivery.kind,
        attempt=copy.claim.attempt,
        provider_id=receipt.provider_id,
        reason=f"accepted by {receipt.provider} as {receipt.provider_id} ({receipt.status})",
        document_sha256=copy.rendered.sha256,
        page_count=copy.rendered.page_count,
        evidence={"status": receipt.status, "accepted_at": receipt.accepted_at.isoformat()},
    )


def _record_one(
    worker: WorkerContext, session: Session, ledger: SqlLedger, copy: _Copy, outcome: Outcome, now: datetime
) -> str:
    """workers/delivery.record_outcome's body, in the chunk's transaction."""
    delivery = session.get(Delivery, copy.claim.delivery_id, with_for_update=True)
    assert delivery is not None and copy.rendered is not None
    finished = _finished(delivery, copy.claim, copy.rendered, outcome)
    ledger.finish_attempt(delivery, copy.claim.attempt, at=now, finished=finished)
    if isinstance(outcome, Receipt):
        return _record_receipt(worker, session, ledger, delivery, copy.claim, outcome, now)
    return _record_error(worker, session, ledger, delivery, copy.claim, outcome, now)
