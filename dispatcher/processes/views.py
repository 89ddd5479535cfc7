"""Read-side views of the ledger as rich renderables (CLI and live log)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.domain import gateway_pauses
from dispatcher.domain.control import resolvable
from dispatcher.domain.holds import held_because
from dispatcher.domain.models import Campaign, Delivery, DeliveryEvent, GatewayState
from dispatcher.domain.queries import get_campaign, state_counts
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


# What a terminal would obey rather than show: C0 and C1 controls (ESC starts a terminal command),
# bidirectional controls and line separators (they make text read differently from what it holds),
# and unpaired surrogates (no encoding can write them). User data never reaches the terminal raw.
_UNSEEN = "\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSEEN_IN_CELL = re.compile(f"[{_UNSEEN}\t\n]")
_UNSEEN_IN_MESSAGE = re.compile(f"[{_UNSEEN}\t]")  # a message may span lines


def visible(value: object, *, lines: bool = False) -> str:
    """``value`` as text with each character a terminal would act on written as an escape ("\\x1b",
    "\\u202e"); line breaks are kept only when ``lines``."""
    pattern = _UNSEEN_IN_MESSAGE if lines else _UNSEEN_IN_CELL
    return pattern.sub(_escaped, str(value))


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def text(value: object, *, style: str = "", lines: bool = False) -> Text:
    """User data as a rich Text: never parsed as markup, control characters made visible."""
    return Text(visible(value, lines=lines), style=style)


def styled(state: str) -> Text:
    return text(state, style=STATE_STYLE.get(state, "white"))


def campaign_table(session: Session) -> Table:
    table = Table(title="Campaigns")
    for column in ("name", "title", "status", "deliveries"):
        table.add_column(column)
    counts = state_counts(session)
    for campaign in session.scalars(select(Campaign).order_by(Campaign.id)):
        summary = Text(", ").join(
            Text.assemble(styled(s), f" {n}") for s, n in sorted(counts.get(campaign.id, Counter()).items())
        )
        table.add_row(text(campaign.name), text(campaign.title), text(campaign.status), summary)
    return table


def gateway_alerts(session: Session) -> list[str]:
    """One line per paused gateway, for the top of `dispatch campaign show`: what, since when, why, what to do."""
    return [pause.alert() for pause in gateway_pauses.pauses(session).values()]


def gateway_table(session: Session, configured: Sequence[tuple[str, str, str]], *, now: datetime) -> Table:
    """Each gateway (name, slots, provider) configured here, and any other the ledger knows, with its state."""
    table = Table(title="Gateways")
    for column in ("gateway", "slots", "provider", "state", "since", "reason"):
        table.add_column(column, overflow="fold")
    known = gateway_pauses.states(session)
    rows = [*configured, *((name, "", "") for name in known if name not in {c[0] for c in configured})]
    for name, slots, provider in rows:
        table.add_row(name, slots, provider, *_gateway_state(known.get(name), now=now))
    return table


def _gateway_state(row: GatewayState | None, *, now: datetime) -> tuple[str, str, str]:
    """(state, since, reason) of one gateway."""
    if row is None or row.paused_at is None:
        failures = f"{row.failures} transport failure(s) in a row" if row is not None and row.failures else ""
        return "[green]sending[/green]", "", failures
    since = f"{row.paused_at:%Y-%m-%d %H:%M:%S} UTC"
    reason = row.reason + (f" (check {row.setting})" if row.setting else "")
    if row.cause == gateway_pauses.BREAKER:
        half_open = row.trial_after is not None and now >= row.trial_after
        trial = "trial send due" if half_open else f"trial send at {row.trial_after:%H:%M:%S} UTC"
        return f"[yellow]paused: circuit breaker, {trial}[/yellow]", since, reason
    return "[red]paused: configuration[/red]", since, reason


def campaign_detail(session: Session, name: str) -> list[RenderableType]:
    campaign = get_campaign(session, name)
    head = Table.grid(padding=(0, 2))
    head.add_row("campaign", text(f"{campaign.name}: {campaign.title}"))
    head.add_row("status", text(campaign.status))
    head.add_row("policy", text(campaign.route_policy))
    head.add_row("deadline", text(campaign.deadline.isoformat() if campaign.deadline else "none"))
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
            text(delivery.id),
            text(person.role if person else ""),
            text(f"{person.name}, {person.title}" if person else ""),
            text(f"{delivery.channel} {delivery.route_position + 1}"),
            text(route.raw_value if route and not route.valid else delivery.destination),
            styled(delivery.state),
            text(delivery.attempt_count),
            text(_note(delivery, held.get(delivery.id))),
        )
    return table


def _note(delivery: Delivery, held: str | None) -> str:
    """Why a delivery is where it is: first a hold for an operator, with the command that settles it
    (in its reason); a success needs no note (its earlier failures are in the log)."""
    if held is not None:
        return held
    if delivery.state in ("delivered", "submitted"):
        return ""
    return delivery.last_error or ""


def _held_copies(copies: list[Delivery], held: dict[int, str]) -> Table:
    table = Table(title="Supporter copies held for an operator")
    for column in ("#", "copy", "state", "note"):
        table.add_column(column, overflow="fold")
    for delivery in copies:
        table.add_row(
            text(delivery.id), text(describe_target(delivery)), styled(delivery.state), text(held[delivery.id])
        )
    return table


def _copies_summary(campaign: Campaign) -> Table:
    table = Table(title="Supporter copies")
    table.add_column("state")
    table.add_column("count", justify="right")
    for state, n in sorted(Counter(d.state for d in campaign.deliveries if d.kind == DeliveryKind.COPY).items()):
        table.add_row(styled(state), text(n))
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
    table = Table(title=text(f"Delivery log: {campaign.name}"))
    for column in ("at (UTC)", "delivery", "target", "change", "actor", "reason"):
        table.add_column(column, overflow="fold")
    for event, delivery in session.execute(query):
        change = (
            styled(event.to_state)
            if event.from_state is None
            else Text.assemble(styled(event.from_state), " -> ", styled(event.to_state))
        )
        table.add_row(
            text(event.at.strftime("%Y-%m-%d %H:%M:%S")),
            text(delivery.id),
            text(describe_target(delivery)),
            change,
            text(event.actor),
            text(event.reason),
        )
    return table


def describe_target(delivery: Delivery) -> str:
    """Who a delivery is for, without personal data of supporters (logs and live views are shared)."""
    if delivery.kind == DeliveryKind.COPY:
        return f"supporter copy #{delivery.supporter_id}"
    person = delivery.addressee.name if delivery.addressee else "?"
    return f"{person} / {delivery.channel} {delivery.destination}"
