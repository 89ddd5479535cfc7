"""Supporter copies: who receives one, when it may go, and the officials' outcomes it reports.

A campaign copies the supporter lists it names (``campaign_lists``). A copy is planned for each address
on those lists whose member gave consent and that is not suppressed, once per address however many lists
hold it (the first list named, then the earliest member, wins); planning runs when the campaign is loaded
and again when it is scheduled (members added since are planned then). The same two checks run once more
when a worker claims the copy: a supporter who unsubscribed, withdrew consent or was erased after planning
receives nothing (``copy_blocker``).

When a copy may go (``Campaign.copies``):
- ``at-dispatch``: with the letters, from the moment the first of them may go (never office hours: those are
  the addressees');
- ``after-delivery`` (the default): once no letter of the campaign is still open (``letters_open``), so the
  copy reports each official's final outcome (``official_outcomes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlalchemy.orm import Session, aliased

from dispatcher.domain.ledger import Planned, new_idempotency_key
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Addressee, Campaign, CampaignList, Delivery, Supporter, SupporterList
from dispatcher.domain.rendering.copy import OfficialOutcome
from dispatcher.domain.states import TERMINAL, DeliveryKind, State
from dispatcher.domain.suppression import is_suppressed, suppressed_among

ACTOR = "planner"


@dataclass(frozen=True)
class CopyPlan:
    """What planning found on the campaign's lists: copies planned now, and addresses left out."""

    planned: int
    without_consent: int  # members on the lists who gave no consent (or withdrew it)
    suppressed: int  # addresses on the suppression list
    already: int  # addresses that already have their copy in this campaign


def link_lists(session: Session, campaign: Campaign, names: Sequence[str]) -> list[str]:
    """Record the lists the campaign copies, in order; returns the names of those that do not exist."""
    found = {
        n: i
        for n, i in session.execute(select(SupporterList.name, SupporterList.id).where(SupporterList.name.in_(names)))
    }
    missing = [n for n in names if n not in found]
    for position, name in enumerate(n for n in names if n in found):
        session.merge(CampaignList(campaign_id=campaign.id, list_id=found[name], position=position))
    session.flush()
    return missing


def plan_copies(session: Session, campaign: Campaign) -> CopyPlan:
    """Plan one copy per consenting, unsuppressed address on the campaign's lists that has none yet."""
    rows = session.execute(
        select(Supporter.id, Supporter.email, Supporter.consent)
        .join(CampaignList, CampaignList.list_id == Supporter.list_id)
        .where(CampaignList.campaign_id == campaign.id)
        .order_by(CampaignList.position, Supporter.id)
    ).all()
    first: dict[str, int] = {}
    consenting: set[str] = set()
    for supporter_id, email, consent in rows:
        if consent and email not in consenting:
            consenting.add(email)
            first[email] = supporter_id
    without_consent = len({email for _, email, _ in rows} - consenting)
    have = set(
        session.scalars(
            select(Delivery.destination).where(Delivery.campaign_id == campaign.id, Delivery.kind == DeliveryKind.COPY)
        )
    )
    already = len(consenting & have)
    candidates = [email for email in first if email not in have]
    suppressed = suppressed_among(session, candidates)
    planned = [_copy(campaign, first[email], email) for email in candidates if email not in suppressed]
    SqlLedger(session).plan(campaign.id, planned, actor=ACTOR)
    return CopyPlan(len(planned), without_consent, len(suppressed), already)


def _copy(campaign: Campaign, supporter_id: int, email: str) -> Planned:
    values = {
        "campaign_id": campaign.id,
        "kind": DeliveryKind.COPY,
        "addressee_id": None,
        "route_id": None,
        "supporter_id": supporter_id,
        "channel": "email",
        "destination": email,
        "route_position": 0,
        "idempotency_key": new_idempotency_key(),
    }
    return Planned(values, State.PLANNED, "planned")


def copy_blocker(session: Session, delivery: Delivery) -> str | None:
    """Why this copy must not go now, or None: checked under the worker's claim, right before it is sent.

    The reason names no address or name: it goes into the delivery log."""
    supporter = session.get(Supporter, delivery.supporter_id) if delivery.supporter_id is not None else None
    if supporter is None:
        return "the supporter is no longer on the list (removed or erased)"
    if not supporter.consent:
        return "the supporter withdrew consent"
    if is_suppressed(session, delivery.destination):
        return "the address is on the suppression list (unsubscribed, bounced or complained)"
    return None


def letter_is_open(letter: Any = Delivery) -> ColumnElement[bool]:
    """A letter whose outcome is not final yet: not in a terminal state, and not an SMTP send (final once
    the server accepted it)."""
    return and_(
        letter.kind == DeliveryKind.LETTER,
        letter.state.not_in([str(s) for s in TERMINAL]),
        ~and_(letter.state == State.SUBMITTED, letter.expects_report.is_(False)),
    )


def letters_open(campaign_id: Any) -> ColumnElement[bool]:
    """SQL: the campaign still has a letter whose outcome is open (an after-delivery copy waits)."""
    letter = aliased(Delivery)
    return exists().where(letter.campaign_id == campaign_id, letter_is_open(letter))


def official_outcomes(session: Session, campaign_id: int) -> list[OfficialOutcome]:
    """Each official's outcome, To then CC in file order: the routes delivered (or, for SMTP, accepted), else
    why none was; for an after-delivery copy, once no letter is open."""
    addressees = session.scalars(
        select(Addressee)
        .where(Addressee.campaign_id == campaign_id)
        .order_by(Addressee.role.desc(), Addressee.position)
    ).all()
    letters = session.scalars(
        select(Delivery)
        .where(Delivery.campaign_id == campaign_id, Delivery.kind == DeliveryKind.LETTER)
        .order_by(Delivery.addressee_id, Delivery.route_position)
    ).all()
    by_addressee: dict[int, list[Delivery]] = {}
    for letter in letters:
        by_addressee.setdefault(letter.addressee_id or 0, []).append(letter)
    outcomes: list[OfficialOutcome] = []
    for person in addressees:
        role: Literal["To", "CC"] = "To" if person.role == "to" else "CC"
        routes = by_addressee.get(person.id, [])
        reached = [d for d in routes if d.state == State.DELIVERED or d.state == State.SUBMITTED]
        for d in reached:
            outcomes.append(
                OfficialOutcome(
                    role=role,
                    name=person.name,
                    status="delivered" if d.state == State.DELIVERED else "accepted",
                    channel=d.channel,
                    destination=d.destination,
                    at=d.updated_at,
                    pages=d.page_count,
                    confirmation=d.provider_id,
                    reason=None,
                )
            )
        if not reached:
            outcomes.append(
                OfficialOutcome(role=role, name=person.name, status="not-delivered", reason=_why_not(routes))
            )
    return outcomes


def _why_not(routes: Sequence[Delivery]) -> str:
    """The last route's reason, or what ended it."""
    tried = [d for d in routes if d.state != State.SKIPPED] or list(routes)
    if not tried:
        return "no usable route"
    last = tried[-1]
    return last.last_error or str(last.state)


def copies_count(session: Session, campaign_id: int) -> int:
    return int(
        session.scalar(
            select(func.count()).where(Delivery.campaign_id == campaign_id, Delivery.kind == DeliveryKind.COPY)
        )
        or 0
    )
