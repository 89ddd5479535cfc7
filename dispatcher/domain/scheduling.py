"""The scheduler: claims due deliveries, marks them queued and hands their ids to a publisher;
the sweeper repairs what a lost message or a dead worker left behind.

Claiming is safe with several schedulers: on PostgreSQL rows are taken with ``FOR UPDATE SKIP
LOCKED``, so two ticks never queue the same row; on SQLite every write transaction holds the
database lock from its start (``BEGIN IMMEDIATE``), so ticks run one after another. Either way a
delivery published twice is sent once: the worker's compare-and-set claim decides.

Deliveries whose gateway is paused (dispatcher/domain/gateway_pauses.py) are not claimed; when its
circuit breaker is due for a trial, one of them is.

Back-pressure: a tick queues no more on a queue than its workers can take. Each queue holds at most
``max_queued_per_queue`` (DISPATCH_MAX_QUEUED_PER_QUEUE) rows in ``queued``; a tick tops each queue up to
that, so the broker's lists stay short however many rows are due. The sweeper republishes only what is
really lost: a row still ``queued`` longer than ``republish_after`` whose queue holds no message in the
broker (``waiting``, the broker's count: a message still waiting is late, not lost; without a count, by
age alone, as before). A worker stamps ``queued_at`` on the rows of a message it takes (workers/batch.py),
so a row whose message is being worked on is not taken for lost either. A message a worker has reserved
but not started (prefetch: one per worker process) is neither counted nor stamped: its rows may be
republished once, and the compare-and-set claim sends them once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, literal, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from dispatcher.domain import gateway_pauses
from dispatcher.domain.copies import letters_open
from dispatcher.domain.db import transaction
from dispatcher.domain.ledger import Due, Ledger
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Campaign, Delivery
from dispatcher.domain.rules import SENDING_STATUSES, deadline_passed
from dispatcher.domain.settings import Settings
from dispatcher.domain.states import TERMINAL, CampaignStatus, CopiesWhen, DeliveryKind, RoutePolicy, State

ACTOR = "scheduler"
log = logging.getLogger(__name__)
Publisher = Callable[[str, Sequence[int]], None]  # (queue, delivery ids)
Waiting = Callable[[str], int | None]  # messages waiting in the broker on a queue; None when it cannot tell
QUEUES = ("fax", "email", "copies")


# the campaign statuses whose deadline still runs: later ones have nothing waiting to fail
DEADLINE_RUNS = (CampaignStatus.SCHEDULED, CampaignStatus.PAUSED)


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    batch_size: int  # ids per broker message
    batch_sizes: Mapping[str, int]  # ids per broker message for a queue that takes fewer (faxes), by queue
    claim_limit: int  # rows claimed per tick, bounded
    max_queued_per_queue: int  # rows `queued` on one queue at most: a tick tops each queue up to this
    republish_after: timedelta  # a queued row older than this lost its message
    reconcile_every: timedelta  # an unknown send is looked up at the provider this often
    poll_after: timedelta  # a submitted send with no status report by then is polled
    gateways: Mapping[str, str]  # queue ("fax", "email", "copies") -> the name of the gateway that sends it

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> SchedulerConfig:
        """DISPATCH_PUBLISH_BATCH_SIZE, _FAX_PUBLISH_BATCH_SIZE, _CLAIM_LIMIT, _MAX_QUEUED_PER_QUEUE,
        _REPUBLISH_AFTER_SECONDS,
        _RECONCILE_EVERY_SECONDS, _POLL_AFTER_SECONDS and the gateway slots (_FAX_GATEWAY, _EMAIL_GATEWAY,
        _COPIES_GATEWAY), unless overridden."""
        config = cls(
            batch_size=settings.publish_batch_size,
            batch_sizes={"fax": settings.fax_publish_batch_size},
            claim_limit=settings.claim_limit,
            max_queued_per_queue=settings.max_queued_per_queue,
            republish_after=timedelta(seconds=settings.republish_after_seconds),
            reconcile_every=timedelta(seconds=settings.reconcile_every_seconds),
            poll_after=timedelta(seconds=settings.poll_after_seconds),
            gateways={
                "fax": settings.fax_gateway,
                "email": settings.email_gateway,
                "copies": settings.copies_gateway or settings.email_gateway,  # copies go by email's unless set
            },
        )
        return replace(config, **overrides)


@dataclass
class TickResult:
    queued: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    republished: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    expired: list[int] = field(default_factory=list)
    deadline_failed: int = 0
    cancelled: int = 0
    completed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Claimed:
    """A delivery the scheduler just queued: what publishing needs, without loading the row."""

    id: int
    kind: str
    channel: str
    destination: str


def queue_for(delivery: Delivery | Claimed) -> str:
    return "copies" if delivery.kind == DeliveryKind.COPY else delivery.channel


def tick(session: Session, *, now: datetime, config: SchedulerConfig, waiting: Waiting | None = None) -> TickResult:
    """One scheduler pass in the caller's transaction; publish the result only after commit."""
    result = TickResult()
    ledger = SqlLedger(session)
    result.deadline_failed = fail_past_deadline(session, ledger, now=now)
    result.cancelled = cancel_left_waiting(session, ledger, now=now)
    gates = gateway_pauses.queue_gates(session, now=now, gateways=config.gateways)
    room = queue_room(session, config.max_queued_per_queue)
    left = config.claim_limit
    for queue in QUEUES:
        limit = min(left, room[queue])
        if queue in gates or limit <= 0:
            continue
        for delivery in claim_due(session, now=now, limit=limit, only=queue):
            result.queued[queue].append(delivery.id)
        left -= len(result.queued[queue])
    for queue in (q for q, gate in gates.items() if gate is gateway_pauses.Gate.TRIAL):
        for delivery in claim_due(session, now=now, limit=1, only=queue):  # the breaker's one trial send
            result.queued[queue].append(delivery.id)
    sweep(session, ledger, now=now, config=config, result=result, waiting=waiting)
    result.completed = complete_campaigns(session)
    return result


def queue_expression() -> Any:
    """SQL: the queue a delivery is published on (``queue_for``)."""
    return case((Delivery.kind == DeliveryKind.COPY, literal("copies")), else_=Delivery.channel)


def queue_room(session: Session, cap: int) -> dict[str, int]:
    """Per queue, how many more rows may be queued: the cap less the rows ``queued`` there now."""
    queue = queue_expression()
    query = select(queue, func.count()).where(Delivery.state == State.QUEUED).group_by(queue)
    counts = {queue_name: int(n) for queue_name, n in session.execute(query).all()}
    return {q: max(cap - int(counts.get(q, 0)), 0) for q in QUEUES}


def claim_due(
    session: Session, *, now: datetime, limit: int, held: Collection[str] = (), only: str | None = None
) -> list[Claimed]:
    """Mark due deliveries queued: planned or waiting to retry, campaign scheduled, turn reached; none of
    the ``held`` queues (their gateway is paused), or only those of queue ``only``.

    In bulk: the due rows are selected and locked (SKIP LOCKED), then the ledger moves them with one
    UPDATE and one multi-row INSERT of their events per chunk. The locked SELECT guarantees the states
    it read are still the rows' states, and the ledger checks each move against the state machine."""
    earlier = aliased(Delivery)
    blocked_by_earlier_route = exists().where(
        earlier.addressee_id == Delivery.addressee_id,
        earlier.kind == DeliveryKind.LETTER,
        earlier.route_position < Delivery.route_position,
        earlier.state.not_in([State.FAILED, State.SKIPPED, State.CANCELLED]),
    )
    query = (
        select(Delivery.id, Delivery.kind, Delivery.channel, Delivery.destination, Delivery.state, Delivery.campaign_id)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(
            Campaign.status.in_(SENDING_STATUSES),
            Delivery.state.in_([State.PLANNED, State.RETRY_WAIT]),
            or_(Delivery.not_before.is_(None), Delivery.not_before <= now),
            or_(
                and_(
                    Delivery.kind == DeliveryKind.COPY,
                    # an after-delivery copy reports the officials' outcomes: none may still be open
                    or_(Campaign.copies == CopiesWhen.AT_DISPATCH, ~letters_open(Delivery.campaign_id)),
                ),
                and_(
                    Delivery.kind == DeliveryKind.LETTER,
                    or_(Campaign.route_policy == RoutePolicy.ALL_ROUTES, ~blocked_by_earlier_route),
                ),
            ),
        )
        .order_by(Delivery.not_before, Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Delivery)
    )
    queue = queue_expression()
    if held:
        query = query.where(queue.not_in(list(held)))
    if only is not None:
        query = query.where(queue == only)
    due = session.execute(query).all()
    SqlLedger(session).queue(
        [
            Due(r.id, r.campaign_id, r.kind, r.state, "due" if r.state == State.PLANNED else "retrying after backoff")
            for r in due
        ],
        actor=ACTOR,
        at=now,
    )
    return [Claimed(r.id, r.kind, r.channel, r.destination) for r in due]


def fail_past_deadline(session: Session, ledger: Ledger, *, now: datetime) -> int:
    """Letters still waiting when their campaign's deadline passed fail, with that reason.

    Campaigns are few: the rule (rules.deadline_passed) is applied to each, then their waiting rows fail."""
    campaigns = session.execute(
        select(Campaign.id, Campaign.deadline).where(Campaign.status.in_(DEADLINE_RUNS), Campaign.deadline.is_not(None))
    ).all()
    over = {c.id: c.deadline for c in campaigns if deadline_passed(c.deadline, now=now)}
    if not over:
        return 0
    query = (
        select(Delivery)
        .where(
            Delivery.campaign_id.in_(over),
            Delivery.kind == DeliveryKind.LETTER,  # the deadline is the officials'; copies still go after it
            Delivery.state.in_([State.PLANNED, State.RETRY_WAIT]),
        )
        .with_for_update(skip_locked=True)
    )
    rows = list(session.scalars(query))
    for delivery in rows:
        ledger.move(
            delivery,
            State.FAILED,
            actor=ACTOR,
            at=now,
            reason=f"campaign deadline {over[delivery.campaign_id].isoformat()} passed before it could be sent",
        )
    return len(rows)


def cancel_left_waiting(session: Session, ledger: Ledger, *, now: datetime) -> int:
    """Deliveries of a cancelled campaign that went back to wait after the cancel (a failure the provider
    reported later, an unknown send found never sent) are cancelled too: nothing claims them any more."""
    query = (
        select(Delivery)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Campaign.status == CampaignStatus.CANCELLED, Delivery.state.in_([State.PLANNED, State.RETRY_WAIT]))
        .with_for_update(skip_locked=True, of=Delivery)
    )
    rows = list(session.scalars(query))
    for delivery in rows:
        ledger.move(delivery, State.CANCELLED, actor=ACTOR, at=now, reason="campaign cancelled")
    return len(rows)


def sweep(
    session: Session,
    ledger: Ledger,
    *,
    now: datetime,
    config: SchedulerConfig,
    result: TickResult,
    waiting: Waiting | None = None,
) -> None:
    """Re-publish queued rows whose message was lost; expire the leases of dead sends to unknown.

    A row is lost when it has been ``queued`` (or its message taken by a worker) longer than
    ``republish_after`` and, when ``waiting`` can tell, no message waits on its queue: a queue with
    messages waiting, or whose count cannot be read, republishes nothing this tick."""
    lost_queues = [q for q in QUEUES if waiting is None or waiting(q) == 0]
    stale = (
        list(
            session.scalars(
                select(Delivery)
                .where(
                    Delivery.state == State.QUEUED,
                    Delivery.queued_at < now - config.republish_after,
                    queue_expression().in_(lost_queues),
                )
                .with_for_update(skip_locked=True)
            )
        )
        if lost_queues
        else []
    )
    for delivery in stale:
        ledger.requeued(delivery, at=now)
        result.republished[queue_for(delivery)].append(delivery.id)
    expired = list(
        session.scalars(
            select(Delivery)
            .where(Delivery.state == State.SENDING, Delivery.lease_expires_at < now)
            .with_for_update(skip_locked=True)
        )
    )
    for delivery in expired:
        ledger.move(
            delivery,
            State.UNKNOWN,
            actor=ACTOR,
            at=now,
            error_class="unknown",
            reason="the sending worker's lease expired (worker died mid-send?): outcome unknown, "
            "to be reconciled with the provider, never resent blindly",
        )
        result.expired.append(delivery.id)


def to_look_up(session: Session, *, now: datetime, every: timedelta, poll_after: timedelta) -> dict[str, list[int]]:
    """Deliveries due for a look-up at the provider, by queue: ``unknown`` ones (reconcile), and
    ``submitted`` ones whose status webhook never came (poll, as a fallback). Next look-up ``every`` later."""
    stuck = and_(
        Delivery.state == State.SUBMITTED, Delivery.expects_report.is_(True), Delivery.updated_at < now - poll_after
    )
    rows = session.scalars(
        select(Delivery)
        .where(
            or_(Delivery.state == State.UNKNOWN, stuck), or_(Delivery.not_before.is_(None), Delivery.not_before <= now)
        )
        .limit(500)
        .with_for_update(skip_locked=True)
    )
    out: dict[str, list[int]] = defaultdict(list)
    ledger = SqlLedger(session)
    for delivery in rows:
        ledger.wait(delivery, until=now + (every if delivery.state == State.UNKNOWN else poll_after))
        out[queue_for(delivery)].append(delivery.id)
    return out


def complete_campaigns(session: Session) -> list[str]:
    """Scheduled campaigns whose deliveries all reached an end are marked completed."""
    open_rows = exists().where(
        Delivery.campaign_id == Campaign.id,
        Delivery.state.not_in([str(s) for s in TERMINAL]),
        ~and_(Delivery.state == State.SUBMITTED, Delivery.expects_report.is_(False)),
    )
    names = list(session.scalars(select(Campaign.name).where(Campaign.status == CampaignStatus.SCHEDULED, ~open_rows)))
    if names:
        session.execute(update(Campaign).where(Campaign.name.in_(names)).values(status=CampaignStatus.COMPLETED))
    return names


def publish(
    result: TickResult, publisher: Publisher, *, batch_size: int, batch_sizes: Mapping[str, int] | None = None
) -> int:
    """Hand ids to the broker in batches, one message per batch; returns messages sent.

    A queue named in ``batch_sizes`` gets batches of that size, any other ``batch_size``. A message's ids
    are sent one after another by the one worker process that takes it: faxes, which spend most of their
    time waiting on the provider, go in small messages so that every worker process takes some."""
    messages = 0
    for groups in (result.queued, result.republished):
        for queue, ids in groups.items():
            size = (batch_sizes or {}).get(queue, batch_size)
            for start in range(0, len(ids), size):
                publisher(queue, ids[start : start + size])
                messages += 1
    return messages


def run_once(
    factory: sessionmaker[Session],
    publisher: Publisher,
    reconciler: Publisher,
    *,
    now: datetime,
    config: SchedulerConfig,
    waiting: Waiting | None = None,
) -> TickResult:
    """One tick: claim and sweep in one transaction, then publish what was committed. ``waiting`` counts
    the messages on a broker queue (the sweeper's test of a lost message)."""
    with transaction(factory) as session:
        result = tick(session, now=now, config=config, waiting=waiting)
        to_reconcile = to_look_up(session, now=now, every=config.reconcile_every, poll_after=config.poll_after)
    publish(result, publisher, batch_size=config.batch_size, batch_sizes=config.batch_sizes)
    for queue, ids in to_reconcile.items():
        reconciler(queue, ids)
    return result
