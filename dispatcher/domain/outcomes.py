"""Turning what a provider said into ledger transitions: receipts, errors and status events.

One rule set for the worker, the webhooks and reconciliation: a state never moves backwards
(a late ``sending`` never downgrades ``delivered``), duplicates change nothing, transient
failures wait and retry the same route, permanent ones let the next route go, and under
``first-success`` the remaining routes of an addressee are skipped once one succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from dispatcher.domain import gateway_pauses
from dispatcher.domain.ledger import Ledger
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.messages import EventKind, StatusEvent
from dispatcher.domain.models import Attempt, Delivery, DeliveryEvent
from dispatcher.domain.settings import Settings
from dispatcher.domain.states import DeliveryKind, RoutePolicy, State
from dispatcher.domain.suppression import suppress_reported
from dispatcher.domain.timing import backoff

Applied = Literal["applied", "duplicate", "stale", "noted"]
# Transient.code of a send our own side held back (a shared limit, a lost lease, a batch stopped after a send
# got no answer or out of time): nothing reached the provider, so the attempt is "not-sent", not counted
# against the route, and it is no answer from the number
NOT_SENT_CODES = frozenset({"local-limit", "lease-expired", "batch-stopped", "batch-budget"})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    base_seconds: float
    cap_seconds: float  # below the broker's visibility timeout (see workers/celery_app.py)
    max_attempts: int  # per route; then the route is given up and the next one goes
    no_fax_tone_limit: int  # "no fax tone" answers in a row from a number; then its route is given up

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RetryPolicy:
        """DISPATCH_RETRY_BASE_SECONDS, _RETRY_CAP_SECONDS, _MAX_ATTEMPTS and _NO_FAX_TONE_LIMIT, unless
        overridden."""
        policy = cls(
            base_seconds=settings.retry_base_seconds,
            cap_seconds=settings.retry_cap_seconds,
            max_attempts=settings.max_attempts,
            no_fax_tone_limit=settings.no_fax_tone_limit,
        )
        return replace(policy, **overrides)


def succeeded(delivery: Delivery) -> bool:
    return delivery.state == State.DELIVERED or (delivery.state == State.SUBMITTED and not delivery.expects_report)


def skip_other_routes(session: Session, ledger: Ledger, delivery: Delivery, *, actor: str, now: datetime) -> int:
    """Under first-success, the addressee's routes still waiting are skipped: this one succeeded."""
    if delivery.kind != DeliveryKind.LETTER or delivery.campaign.route_policy != RoutePolicy.FIRST_SUCCESS:
        return 0
    waiting = session.scalars(
        select(Delivery)
        .where(
            Delivery.addressee_id == delivery.addressee_id,
            Delivery.id != delivery.id,
            Delivery.state.in_([State.PLANNED, State.QUEUED, State.RETRY_WAIT]),
        )
        .with_for_update()
    ).all()
    for other in waiting:
        ledger.move(
            other,
            State.SKIPPED,
            actor=actor,
            at=now,
            reason=f"route {delivery.route_position + 1} ({delivery.channel}) already succeeded",
        )
    return len(waiting)


def retry_or_fail(
    session: Session,
    ledger: Ledger,
    delivery: Delivery,
    *,
    actor: str,
    now: datetime,
    reason: str,
    policy: RetryPolicy,
    retry_after: float | None = None,
    error_code: str | None = None,
    provider_event_id: str | None = None,
    no_fax_tone: bool = False,
) -> State:
    """A transient failure: wait and retry the same route, unless the number answered "no fax tone" too
    often in a row, or attempts or the deadline ran out."""
    attempts = attempts_on_route(session, delivery)
    delay = timedelta(
        seconds=backoff(attempts, base=policy.base_seconds, cap=policy.cap_seconds, retry_after=retry_after)
    )
    deadline = delivery.campaign.deadline
    why = None
    answers = no_fax_tone_streak(session, delivery) + 1 if no_fax_tone else 0
    if answers >= policy.no_fax_tone_limit:
        why = f"{reason}; no fax tone {answers} times in a row: not a fax line, so this route is given up"
    elif attempts >= policy.max_attempts:
        why = f"{reason}; gave up after {attempts} attempts on this route"
    elif deadline is not None and now + delay > deadline:
        why = f"{reason}; the next attempt would fall after the deadline {deadline.isoformat()}"
    if why is not None:
        return fail(
            ledger,
            delivery,
            actor=actor,
            now=now,
            reason=why,
            error_code=error_code,
            provider_event_id=provider_event_id,
        )
    ledger.move(
        delivery,
        State.RETRY_WAIT,
        actor=actor,
        at=now,
        error_class="transient",
        reason=f"{reason}; retry in {delay.total_seconds():.0f}s",
        provider_event_id=provider_event_id,
        data=_failure_data(error_code, no_fax_tone=no_fax_tone),
        not_before=now + delay,
    )
    return State.RETRY_WAIT


def _failure_data(error_code: str | None, *, no_fax_tone: bool) -> dict[str, Any] | None:
    data: dict[str, Any] = {"error_code": error_code} if error_code else {}
    if no_fax_tone:
        data["no_fax_tone"] = True
    return data or None


def no_fax_tone_streak(session: Session, delivery: Delivery) -> int:
    """How many of the route's latest answers in a row were "no fax tone", since an operator last
    planned it. Waits that were no answer from the number (our own limits, an unknown send found never
    sent) neither count nor break the streak; any other failure breaks it."""
    query = select(DeliveryEvent.data).where(
        DeliveryEvent.delivery_id == delivery.id,
        DeliveryEvent.to_state == State.RETRY_WAIT,
        DeliveryEvent.from_state != State.RETRY_WAIT,
    )
    since = _replanned_at(session, delivery)
    if since is not None:
        query = query.where(DeliveryEvent.at >= since)
    streak = 0
    for data in session.scalars(query.order_by(DeliveryEvent.id.desc())):
        if data and data.get("no_fax_tone"):
            streak += 1
        elif data and data.get("error_code") and data["error_code"] not in NOT_SENT_CODES:
            break
    return streak


def _replanned_at(session: Session, delivery: Delivery) -> datetime | None:
    """When an operator last planned the route again (``delivery retry``), if ever."""
    return session.scalar(
        select(DeliveryEvent.at)
        .where(
            DeliveryEvent.delivery_id == delivery.id,
            DeliveryEvent.actor == "operator",
            DeliveryEvent.to_state == State.PLANNED,
        )
        .order_by(DeliveryEvent.id.desc())
        .limit(1)
    )


def attempts_on_route(session: Session, delivery: Delivery) -> int:
    """Attempts that reached the provider since the route was last (re)planned by an operator;
    a wait on our own limiter ("not-sent") does not count."""
    since = _replanned_at(session, delivery)
    query = (
        select(func.count())
        .select_from(Attempt)
        .where(Attempt.delivery_id == delivery.id, or_(Attempt.outcome.is_(None), Attempt.outcome != "not-sent"))
    )
    if since is not None:
        query = query.where(Attempt.started_at >= since)
    return int(session.scalar(query) or 0)


def fail(
    ledger: Ledger,
    delivery: Delivery,
    *,
    actor: str,
    now: datetime,
    reason: str,
    error_code: str | None = None,
    provider_event_id: str | None = None,
) -> State:
    ledger.move(
        delivery,
        State.FAILED,
        actor=actor,
        at=now,
        error_class="permanent",
        reason=reason,
        provider_event_id=provider_event_id,
        data={"error_code": error_code} if error_code else None,
    )
    return State.FAILED


RANK = {State.SENDING: 1, State.UNKNOWN: 1, State.SUBMITTED: 2, State.DELIVERED: 3, State.FAILED: 3}


def apply_status(
    session: Session, delivery: Delivery, event: StatusEvent, *, actor: str, now: datetime, policy: RetryPolicy
) -> Applied:
    """Apply one provider status event (webhook, poll or reconciliation) to its delivery."""
    if event.event_id and session.scalar(
        select(DeliveryEvent.id).where(
            DeliveryEvent.delivery_id == delivery.id, DeliveryEvent.provider_event_id == event.event_id
        )
    ):
        return "duplicate"
    # before any state rule: a complaint arrives after the copy was delivered, and the address is the point
    suppress_reported(session, delivery, event, actor=actor, at=now)
    if delivery.state in (
        State.DELIVERED,
        State.FAILED,
        State.CANCELLED,
        State.SKIPPED,
        State.RETRY_WAIT,
        State.QUEUED,
        State.PLANNED,
    ):
        return "stale"  # the outcome is already known, or a newer attempt is under way
    if _from_earlier_attempt(session, delivery, event):
        return "stale"
    ledger = SqlLedger(session)
    ledger.identify(delivery, event.provider_id)  # the delivery has no id yet, or this very one
    if event.kind == EventKind.DELIVERED:
        ledger.move(
            delivery,
            State.DELIVERED,
            actor=actor,
            at=now,
            provider_id=event.provider_id,
            provider_event_id=event.event_id,
            reason=_delivered_reason(event),
            data=_evidence(event),
        )
        skip_other_routes(session, ledger, delivery, actor=actor, now=now)
        return "applied"
    if event.kind in (EventKind.FAILED, EventKind.BOUNCED, EventKind.COMPLAINED):
        return _apply_failure(session, ledger, delivery, event, actor=actor, now=now, policy=policy)
    return _note_progress(ledger, delivery, event, actor=actor, now=now)


def _from_earlier_attempt(session: Session, delivery: Delivery, event: StatusEvent) -> bool:
    """A late report about a previous attempt (say, its busy signal) must not touch the current one.

    Known ids decide. While the current attempt has no id yet (its receipt is still on the way), an
    id that an earlier attempt holds, or an event older than the current attempt, is not about it:
    if that ever drops a real report, the worker's receipt and the status poll still settle the row."""
    if delivery.provider_id is not None:
        return event.provider_id != delivery.provider_id
    earlier = session.scalar(
        select(Attempt.id).where(
            Attempt.delivery_id == delivery.id,
            Attempt.provider_id == event.provider_id,
            Attempt.number < delivery.attempt_count,
        )
    )
    if earlier is not None:
        return True
    started = session.scalar(
        select(Attempt.started_at).where(Attempt.delivery_id == delivery.id, Attempt.number == delivery.attempt_count)
    )
    return started is not None and event.occurred_at < started


def _apply_failure(
    session: Session,
    ledger: Ledger,
    delivery: Delivery,
    event: StatusEvent,
    *,
    actor: str,
    now: datetime,
    policy: RetryPolicy,
) -> Applied:
    if event.error_class == "configuration":  # ours to fix, not the route's: the gateway pauses, it waits
        return _hold_for_configuration(ledger, delivery, event, actor=actor, now=now)
    if delivery.state == State.SENDING:
        # the worker has not recorded its receipt yet; record the provider's id and let it finish
        ledger.move(
            delivery,
            State.SUBMITTED,
            actor=actor,
            at=now,
            provider_id=event.provider_id,
            reason="accepted by the provider (reported by its status callback)",
        )
    reason = f"{event.provider}: {event.kind}" + (f" ({event.error_code})" if event.error_code else "")
    if event.detail:
        reason += f": {event.detail}"
    code, event_id = event.error_code, event.event_id
    if event.error_class == "transient":
        retry_or_fail(
            session,
            ledger,
            delivery,
            actor=actor,
            now=now,
            reason=reason,
            policy=policy,
            error_code=code,
            provider_event_id=event_id,
            no_fax_tone=event.no_fax_tone,
        )
    else:
        fail(ledger, delivery, actor=actor, now=now, reason=reason, error_code=code, provider_event_id=event_id)
    return "applied"


def _hold_for_configuration(
    ledger: Ledger, delivery: Delivery, event: StatusEvent, *, actor: str, now: datetime
) -> Applied:
    """The provider failed the send for our configuration (it could not fetch our document): see
    dispatcher/domain/gateway_pauses.py."""
    reason = f"{event.provider}: {event.kind}" + (f" ({event.error_code})" if event.error_code else "")
    reason += f": our configuration, not this route: check {event.setting or 'the gateway settings'}"
    gateway_pauses.hold_reported_fault(
        ledger,
        delivery,
        actor=actor,
        now=now,
        reason=reason,
        setting=event.setting,
        error_code=event.error_code,
        provider_event_id=event.event_id,
    )
    return "applied"


def _note_progress(ledger: Ledger, delivery: Delivery, event: StatusEvent, *, actor: str, now: datetime) -> Applied:
    """queued / sending / deferred: move sending or unknown up to submitted, otherwise just log it
    (an informational event, kept for evidence and de-duplication)."""
    if delivery.state in (State.SENDING, State.UNKNOWN):
        ledger.move(
            delivery,
            State.SUBMITTED,
            actor=actor,
            at=now,
            provider_id=event.provider_id,
            provider_event_id=event.event_id,
            reason=f"{event.provider}: {event.kind}",
            data=_evidence(event),
        )
        return "applied"
    ledger.note(
        delivery,
        actor=actor,
        at=now,
        reason=f"{event.provider}: {event.kind}",
        provider_id=event.provider_id,
        provider_event_id=event.event_id,
        error_class=event.error_class,
        data=_evidence(event),
    )
    return "noted"


def _delivered_reason(event: StatusEvent) -> str:
    parts = [f"{event.provider}: delivered"]
    if event.pages is not None:
        parts.append(f"{event.pages} pages")
    if event.duration_secs is not None:
        parts.append(f"{event.duration_secs:.0f}s call")
    if event.remote_station_id:
        parts.append(f"remote station {event.remote_station_id}")
    return ", ".join(parts)


def _evidence(event: StatusEvent) -> dict[str, object]:
    values = {
        "kind": str(event.kind),
        "occurred_at": event.occurred_at.isoformat(),
        "pages": event.pages,
        "duration_secs": event.duration_secs,
        "remote_station_id": event.remote_station_id,
        "error_code": event.error_code,
        "detail": event.detail,
    }
    return {k: v for k, v in values.items() if v is not None}
