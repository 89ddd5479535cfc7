"""Read-side views of the ledger as rich renderables (CLI and live log)."""

from __future__ import annotations

from collections import Counter

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.domain.control import resolvable
from dispatcher.domain.holds import held_because
from dispatcher.domain.models import Campaign, Delivery, DeliveryEvent
from dispatcher.domain.queries import get_campaign
from dispatcher.domain.states import DeliveryKind, State

STATE_STYLE: dict[str, str] = {
    State.DELIVERED: "green",
    State.SUBMITTED: "cyan",
    State.SENDING: "blue",
    State.QUEUED: "blue",
    State.PLANNED: "white",
    State.RETRY_WAIT: "yellow",
    State.UNKNOWN: "magenta",
    State.FAILED: "red",
    State.CANCELLED: "dim",
    State.SKIPPED: "dim yellow",
}


def styled(state: str) -> str:
    style = STATE_STYLE.get(state, "white")
    return f"[{style}]{state}[/{style}]"


def campaign_table(session: Session) -> Table:
    table = Table(title="Campaigns")
    for column in ("name", "title", "status", "deliveries"):
        table.add_column(column)
    counts: dict[int, Counter[str]] = {}
    for campaign_id, state, n in session.execute(
        select(Delivery.campaign_id, Delivery.state, func.count()).group_by(Delivery.campaign_id, Delivery.state)
    ):
        counts.setdefault(campaign_id, Counter())[state] = n
    for campaign in session.scalars(select(Campaign).order_by(Campaign.id)):
        summary = ", ".join(f"{styled(s)} {n}" for s, n in sorted(counts.get(campaign.id, Counter()).items()))
        table.add_row(campaign.name, campaign.title, campaign.status, summary)
    return table


def campaign_detail(session: Session, name: str) -> list[RenderableType]:
    campaign = get_campaign(session, name)
    head = Table.grid(padding=(0, 2))
    head.add_row("campaign", f"{campaign.name}: {campaign.title}")
    head.add_row("status", campaign.status)
    head.add_row("policy", campaign.route_policy)
    head.add_row("deadline", campaign.deadline.isoformat() if campaign.deadline else "none")
    held = {d.id: why for d in campaign.deliveries if resolvable(d) and (why := held_because(session, d))}
    shown: list[RenderableType] = [head, _letters_table(campaign, held), _copies_summary(campaign)]
    copies = [d for d in campaign.deliveries if d.kind == DeliveryKind.COPY and d.id in held]
    if copies:
        shown.append(_held_copies(copies, held))
    return shown


def _letters_table(campaign: Campaign, held: dict[int, str]) -> Table:
    table = Table(title="Letters: addressees and routes")
    for column in ("#", "role", "addressee", "route", "destination", "state", "attempts", "note"):
        table.add_column(column, overflow="fold")
    letters = sorted(
        (d for d in campaign.deliveries if d.kind == DeliveryKind.LETTER),
        key=lambda d: (
            d.addressee.role != "to" if d.addressee else True,
            d.addressee.position if d.addressee else 0,
            d.route_position,
        ),
    )
    for delivery in letters:
        person = delivery.addressee
        route = delivery.route
        table.add_row(
            str(delivery.id),
            person.role if person else "",
            f"{person.name}, {person.title}" if person else "",
            f"{delivery.channel} {delivery.route_position + 1}",
            route.raw_value if route and not route.valid else delivery.destination,
            styled(delivery.state),
            str(delivery.attempt_count),
            _note(delivery, held.get(delivery.id)),
        )
    return table


def _note(delivery: Delivery, held: str | None) -> str:
    """Why a delivery is where it is: first a hold for an operator, with the command that settles it
    (in its reason); a success needs no note (its earlier failures are in the log)."""
    if held is not None:
        return escape(held)
    if delivery.state in ("delivered", "submitted"):
        return ""
    return escape(delivery.last_error or "")


def _held_copies(copies: list[Delivery], held: dict[int, str]) -> Table:
    table = Table(title="Supporter copies held for an operator")
    for column in ("#", "copy", "state", "note"):
        table.add_column(column, overflow="fold")
    for delivery in copies:
        table.add_row(str(delivery.id), describe_target(delivery), styled(delivery.state), escape(held[delivery.id]))
    return table


def _copies_summary(campaign: Campaign) -> Table:
    table = Table(title="Supporter copies")
    table.add_column("state")
    table.add_column("count", justify="right")
    for state, n in sorted(Counter(d.state for d in campaign.deliveries if d.kind == DeliveryKind.COPY).items()):
        table.add_row(styled(state), str(n))
    return table


def event_table(session: Session, name: str, *, after_id: int = 0, limit: int | None = None) -> Table:
    campaign = get_campaign(session, name)
    query = (
        select(DeliveryEvent, Delivery)
        .join(Delivery, Delivery.id == DeliveryEvent.delivery_id)
        .where(DeliveryEvent.campaign_id == campaign.id, DeliveryEvent.id > after_id)
        .order_by(DeliveryEvent.id)
    )
    if limit is not None:
        query = query.limit(limit)
    table = Table(title=f"Delivery log: {campaign.name}")
    for column in ("at (UTC)", "delivery", "target", "change", "actor", "reason"):
        table.add_column(column, overflow="fold")
    for event, delivery in session.execute(query):
        change = (
            styled(event.to_state)
            if event.from_state is None
            else f"{styled(event.from_state)} -> {styled(event.to_state)}"
        )
        table.add_row(
            event.at.strftime("%Y-%m-%d %H:%M:%S"),
            str(delivery.id),
            describe_target(delivery),
            change,
            event.actor,
            event.reason,
        )
    return table


def describe_target(delivery: Delivery) -> str:
    """Who a delivery is for, without personal data of supporters (logs and live views are shared)."""
    if delivery.kind == DeliveryKind.COPY:
        return f"supporter copy #{delivery.supporter_id}"
    person = delivery.addressee.name if delivery.addressee else "?"
    return f"{person} / {delivery.channel} {delivery.destination}"
