"""Campaign control: schedule, pause, resume, cancel, and an operator's retry of one delivery.

Cancel never interrupts a send already handed to a provider (``sending``/``submitted``); it stops
every later one. ``unknown`` deliveries stay for reconciliation: they may have been sent.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.copies import plan_copies
from dispatcher.domain.errors import CampaignConflict, NotFound
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Campaign, Delivery, utcnow
from dispatcher.domain.outcomes import skip_other_routes
from dispatcher.domain.queries import get_campaign
from dispatcher.domain.states import CampaignStatus, CopiesWhen, DeliveryKind, RoutePolicy, State
from dispatcher.domain.timing import first_send_time

WAITING = (State.PLANNED, State.QUEUED, State.RETRY_WAIT)


def schedule(session: Session, name: str, *, now: datetime, actor: str = "operator") -> Campaign:
    """Mark a draft campaign scheduled and give each delivery its earliest send time."""
    campaign = get_campaign(session, name)
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.PAUSED):
        raise CampaignConflict(f"campaign {name!r} is {campaign.status}; only a draft can be scheduled")
    spec = CampaignSpec.model_validate(campaign.spec)
    zones = {a.id: a.timezone for a in campaign.addressees}
    ledger = SqlLedger(session)
    if campaign.status == CampaignStatus.DRAFT:
        plan_copies(session, campaign)  # members who joined the lists, or consented, since the campaign was loaded
    letters = _deliveries(session, campaign, (State.PLANNED,), kind=DeliveryKind.LETTER)
    for delivery in letters:
        zone = zones.get(delivery.addressee_id or -1, "UTC")
        ledger.wait(delivery, until=first_send_time(spec.campaign.schedule, timezone=zone, now=now))
    # copies keep no office hours: at dispatch they go with the first letter that may go; after delivery, they
    # wait for the letters' outcomes (copies.letters_open), not for a time. One statement for all of them: a
    # campaign may copy hundreds of thousands of supporters
    first_letter = min((d.not_before for d in letters if d.not_before is not None), default=now)
    at_dispatch = campaign.copies == CopiesWhen.AT_DISPATCH
    until = max(first_letter, now) if at_dispatch else now
    ledger.wait_all(campaign.id, kind=DeliveryKind.COPY, state=State.PLANNED, until=until)
    campaign.status = CampaignStatus.SCHEDULED
    campaign.scheduled_at = now
    campaign.letter_date = campaign.letter_date or now.date()
    return campaign


def pause(session: Session, name: str, *, actor: str = "operator") -> int:
    """Stop claiming; queued deliveries go back to planned. Returns how many were handed back."""
    campaign = _in_status(session, name, (CampaignStatus.SCHEDULED,), "pause")
    campaign.status = CampaignStatus.PAUSED
    queued = _deliveries(session, campaign, (State.QUEUED,))
    ledger, now = SqlLedger(session), utcnow()
    for delivery in queued:
        ledger.move(delivery, State.PLANNED, actor=actor, at=now, reason="campaign paused")
    return len(queued)


def resume(session: Session, name: str, *, actor: str = "operator") -> Campaign:
    campaign = _in_status(session, name, (CampaignStatus.PAUSED,), "resume")
    campaign.status = CampaignStatus.SCHEDULED
    return campaign


def cancel(session: Session, name: str, *, actor: str = "operator") -> int:
    """Cancel every delivery not yet handed to a provider; returns how many were cancelled."""
    campaign = _in_status(
        session, name, (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.PAUSED), "cancel"
    )
    campaign.status = CampaignStatus.CANCELLED
    waiting = _deliveries(session, campaign, WAITING)
    ledger, now = SqlLedger(session), utcnow()
    for delivery in waiting:
        ledger.move(delivery, State.CANCELLED, actor=actor, at=now, reason="campaign cancelled")
    return len(waiting)


def retry(
    session: Session,
    delivery_id: int,
    *,
    now: datetime,
    actor: str = "operator",
    force: bool = False,
    reason: str = "",
) -> Delivery:
    """An operator sends a failed delivery again (same route, same idempotency key, attempts counted
    afresh). Refused when another route of the same addressee is under way or succeeded, unless forced:
    under first-success the official would get the letter twice."""
    delivery = _locked(session, delivery_id)
    if delivery.state != State.FAILED:
        raise CampaignConflict(f"delivery #{delivery_id} is {delivery.state}; only a failed delivery can be retried")
    other = _live_or_succeeded_route(session, delivery)
    if other is not None and not force:
        raise CampaignConflict(
            f"delivery #{delivery_id}: route {other.route_position + 1} ({other.channel}) of the same addressee is "
            f"{other.state}; retrying would send the letter a second time (use --force if that is intended)"
        )
    # attempts are counted afresh from this event (outcomes.attempts_on_route)
    why = "retry requested by an operator" + (f": {reason.strip()}" if reason.strip() else "")
    SqlLedger(session).move(delivery, State.PLANNED, actor=actor, at=now, reason=why, not_before=now)
    if delivery.campaign.status == CampaignStatus.COMPLETED:
        delivery.campaign.status = CampaignStatus.SCHEDULED  # the scheduler only claims for scheduled campaigns
    return delivery


def _locked(session: Session, delivery_id: int) -> Delivery:
    delivery = session.get(Delivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise NotFound(f"no delivery #{delivery_id}")
    return delivery


def _live_or_succeeded_route(session: Session, delivery: Delivery) -> Delivery | None:
    if delivery.kind != DeliveryKind.LETTER or delivery.campaign.route_policy != RoutePolicy.FIRST_SUCCESS:
        return None
    return session.scalars(
        select(Delivery).where(
            Delivery.addressee_id == delivery.addressee_id,
            Delivery.id != delivery.id,
            Delivery.state.in_(
                [State.QUEUED, State.SENDING, State.SUBMITTED, State.UNKNOWN, State.RETRY_WAIT, State.DELIVERED]
            ),
        )
    ).first()


def _in_status(session: Session, name: str, allowed: tuple[str, ...], verb: str) -> Campaign:
    campaign = get_campaign(session, name)
    if campaign.status not in allowed:
        raise CampaignConflict(f"cannot {verb} campaign {name!r}: it is {campaign.status}")
    return campaign


def _deliveries(
    session: Session, campaign: Campaign, states: tuple[State, ...], *, kind: DeliveryKind | None = None
) -> list[Delivery]:
    query = (
        select(Delivery)
        .where(Delivery.campaign_id == campaign.id, Delivery.state.in_([str(s) for s in states]))
        .order_by(Delivery.id)
        .with_for_update()
    )
    if kind is not None:
        query = query.where(Delivery.kind == kind)
    return list(session.scalars(query))


__all__ = ["cancel", "cancel_delivery", "pause", "resolvable", "resolve", "resume", "retry", "schedule"]


def resolve(session: Session, delivery_id: int, *, sent: bool, now: datetime, reason: str, by: str) -> State:
    """An operator settles a delivery whose outcome the system cannot establish, from the provider's own
    records: an ``unknown`` one, or a ``submitted`` one still waiting for its provider's report.

    "Sent" makes it ``delivered``: final, so the state machine lets nothing move it again (no poll, no
    late or missing report, no resend), and the routes after it are settled by the campaign's policy
    (first-success: skipped), so the campaign can complete. ``submitted`` would not end it: a send that
    expects a report stays open to polls, and a late failure report could still turn it into a resend
    after its other routes were skipped. The event says that an operator confirmed it, who, and why.
    "Not sent" puts it back to ``retry_wait`` for a resend on the same route, with the same key; in a
    cancelled campaign it is cancelled instead, as every waiting delivery of it was."""
    reason, by = reason.strip(), by.strip()
    if not reason or not by:
        raise CampaignConflict("resolving a delivery needs a reason (what the provider's records show) and who")
    delivery = _locked(session, delivery_id)
    if not resolvable(delivery):
        raise CampaignConflict(
            f"delivery #{delivery_id} is {delivery.state}; only an unknown delivery, or a submitted one still "
            "waiting for its provider's report, is resolved"
        )
    ledger, actor = SqlLedger(session), f"operator:{by}"[:100]
    data = {"resolved": "sent" if sent else "not-sent", "by": by, "reason": reason}
    if sent:
        why = f"confirmed sent by an operator ({by}) from the provider's records: {reason}"
        ledger.move(delivery, State.DELIVERED, actor=actor, at=now, reason=why, data=data)
        skip_other_routes(session, ledger, delivery, actor=actor, now=now)
        return State.DELIVERED
    why = f"confirmed not sent by an operator ({by}) from the provider's records: {reason}; it will be sent again"
    ledger.move(delivery, State.RETRY_WAIT, actor=actor, at=now, reason=why, data=data, not_before=now)
    if delivery.campaign.status == CampaignStatus.CANCELLED:
        ledger.move(delivery, State.CANCELLED, actor=actor, at=now, reason="campaign cancelled")
        return State.CANCELLED
    return State.RETRY_WAIT


def resolvable(delivery: Delivery) -> bool:
    """Whether an operator may settle ``delivery`` (``resolve``): its outcome is not known otherwise."""
    return delivery.state == State.UNKNOWN or (delivery.state == State.SUBMITTED and delivery.expects_report)


def cancel_delivery(session: Session, delivery_id: int, *, now: datetime, reason: str, by: str) -> State:
    """An operator stops one delivery: a waiting one (planned, queued, retry_wait) is cancelled; one held for
    an operator (``resolvable``) is first confirmed not sent, from the provider's records, then cancelled.
    Under first-success the addressee's next route may then go (a cancelled route blocks none)."""
    reason, by = reason.strip(), by.strip()
    if not reason or not by:
        raise CampaignConflict("cancelling a delivery needs a reason and who")
    delivery = _locked(session, delivery_id)
    ledger, actor = SqlLedger(session), f"operator:{by}"[:100]
    data = {"cancelled": True, "by": by, "reason": reason}
    if resolvable(delivery):
        why = f"confirmed not sent by an operator ({by}) from the provider's records: {reason}"
        ledger.move(delivery, State.RETRY_WAIT, actor=actor, at=now, reason=why, data=data, not_before=now)
    elif delivery.state not in WAITING:
        raise CampaignConflict(
            f"delivery #{delivery_id} is {delivery.state}; only a waiting delivery (planned, queued, retry_wait) "
            "or one held for an operator can be cancelled"
        )
    ledger.move(delivery, State.CANCELLED, actor=actor, at=now, reason=f"cancelled by an operator ({by}): {reason}")
    return State.CANCELLED
