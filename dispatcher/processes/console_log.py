"""The console's delivery pages: the live delivery log, a delivery's timeline, the deliveries held for an
operator (see console.py for what every console page shares).

The live log is server-rendered: the page shows the last ``LOG_ROWS`` events that match its filters (older
ones a page at a time, by ``before``), and templates/web/static/live-log.js asks ``/log/rows?after=<last id>``
every second for the rows of newer events, an HTML fragment rendered by the same template. A supporter is
only ever "supporter copy #id" (views.describe_target): the log is shared and shows no personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, joinedload

from dispatcher.domain.accounts import Identity, Permission
from dispatcher.domain.control import resolvable
from dispatcher.domain.db import reading
from dispatcher.domain.holds import HOLD_REASON, held_because
from dispatcher.domain.models import Campaign, Delivery, DeliveryEvent
from dispatcher.domain.rendering.templates import render
from dispatcher.domain.states import State
from dispatcher.processes import operations
from dispatcher.processes.access import PAGE_HEADERS, Access
from dispatcher.processes.console import Notice, page
from dispatcher.processes.views import describe_target
from dispatcher.processes.web_context import WebContext

LOG_ROWS = 200  # events on one page of the log
NEW_ROWS = 500  # at most this many new events in one refresh (the script asks again at once for more)
HELD_ROWS = 500
DELIVERY_ACTIONS = ("retry", "resolve-sent", "resolve-not-sent", "cancel")
CHANNELS = ("fax", "email")
MAX_ID = 2**31 - 1  # ids are INTEGER columns: a larger number names nothing (and PostgreSQL refuses it)
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ID, description="a delivery's id")]


@dataclass(frozen=True)
class LogFilter:
    campaign: str = ""
    state: str = ""
    channel: str = ""

    def problems(self) -> list[str]:
        found = []
        if self.state and self.state not in {s.value for s in State}:
            found.append(f"no delivery state named {self.state!r}: one of {', '.join(s.value for s in State)}")
        if self.channel and self.channel not in CHANNELS:
            found.append(f"no channel named {self.channel!r}: fax or email")
        return found

    def query(self, session: Session) -> Any:
        query = select(DeliveryEvent, Delivery).join(Delivery, Delivery.id == DeliveryEvent.delivery_id)
        if self.campaign:
            campaign_id = session.scalar(select(Campaign.id).where(Campaign.name == self.campaign))
            query = query.where(DeliveryEvent.campaign_id == (campaign_id if campaign_id is not None else -1))
        if self.state:
            query = query.where(DeliveryEvent.to_state == self.state)
        if self.channel:
            query = query.where(Delivery.channel == self.channel)
        return query.options(joinedload(Delivery.addressee), joinedload(Delivery.campaign))


def event_rows(
    session: Session, found: LogFilter, *, after: int = 0, before: int | None = None
) -> list[dict[str, Any]]:
    """The events matching ``found``, newest first: the last LOG_ROWS before ``before``, or (``after``) the
    oldest NEW_ROWS after that id."""
    query = found.query(session)
    if after:
        query = query.where(DeliveryEvent.id > after).order_by(DeliveryEvent.id).limit(NEW_ROWS)
    else:
        if before is not None:
            query = query.where(DeliveryEvent.id < before)
        query = query.order_by(DeliveryEvent.id.desc()).limit(LOG_ROWS)
    rows = [
        {
            "id": event.id,
            "at": event.at,
            "delivery": delivery.id,
            "campaign": delivery.campaign.name,
            "target": describe_target(delivery),
            "channel": delivery.channel,
            "from_state": event.from_state,
            "to_state": event.to_state,
            "actor": event.actor,
            "reason": event.reason,
            "error_class": event.error_class,
        }
        for event, delivery in session.execute(query).unique()
    ]
    return sorted(rows, key=lambda r: -int(r["id"]))


def timeline(session: Session, delivery_id: int) -> dict[str, Any] | None:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        return None
    events = list(
        session.scalars(
            select(DeliveryEvent).where(DeliveryEvent.delivery_id == delivery_id).order_by(DeliveryEvent.id)
        )
    )
    attempts = []
    for attempt in delivery.attempts:
        seconds = (
            (attempt.finished_at - attempt.started_at).total_seconds()
            if attempt.finished_at is not None and attempt.started_at is not None
            else None
        )
        evidence = attempt.evidence or {}
        attempts.append(
            {
                "attempt": attempt,
                "seconds": seconds,
                "pages": evidence.get("pages", evidence.get("page_count", delivery.page_count)),
            }
        )
    held = held_because(session, delivery) if resolvable(delivery) else None
    return {
        "delivery": delivery,
        "campaign": delivery.campaign,
        "target": describe_target(delivery),
        "events": events,
        "attempts": attempts,
        "held": held,
        "actions": actions_for(delivery),
    }


def actions_for(delivery: Delivery) -> list[str]:
    """The operator actions that apply to ``delivery`` in its state."""
    if resolvable(delivery):
        return ["resolve-sent", "resolve-not-sent", "cancel"]
    if delivery.state == State.FAILED:
        return ["retry"]
    if delivery.state in (State.PLANNED, State.QUEUED, State.RETRY_WAIT):
        return ["cancel"]
    return []


def held_rows(session: Session) -> dict[str, list[dict[str, Any]]]:
    """Deliveries held for an operator (unknown, or submitted with a hold logged: its report is overdue),
    and failed ones, oldest first, at most HELD_ROWS of each. A submitted delivery waiting for its report
    in the ordinary way is not held: only those with a hold event are read."""
    options = (joinedload(Delivery.addressee), joinedload(Delivery.campaign))
    with_hold = (
        select(DeliveryEvent.delivery_id)
        .where(DeliveryEvent.delivery_id == Delivery.id, DeliveryEvent.reason.like(f"{HOLD_REASON}%"))
        .exists()
    )
    candidates = session.scalars(
        select(Delivery)
        .where(or_(Delivery.state == State.UNKNOWN, and_(Delivery.state == State.SUBMITTED, with_hold)))
        .options(*options)
        .order_by(Delivery.id)
        .limit(HELD_ROWS)
    ).unique()
    held = []
    for delivery in candidates:
        if not resolvable(delivery):
            continue
        why = held_because(session, delivery)
        if why is None and delivery.state != State.UNKNOWN:
            continue  # held once, then a report came and a new submission is waiting in the ordinary way
        held.append(_held_row(delivery, why or "outcome unknown: check the provider's records"))
    failed = [
        _held_row(d, d.last_error or "")
        for d in session.scalars(
            select(Delivery)
            .where(Delivery.state == State.FAILED)
            .options(*options)
            .order_by(Delivery.id)
            .limit(HELD_ROWS)
        ).unique()
    ]
    return {"held": held, "failed": failed}


def _held_row(delivery: Delivery, why: str) -> dict[str, Any]:
    return {
        "delivery": delivery,
        "campaign": delivery.campaign.name,
        "target": describe_target(delivery),
        "why": why,
        "actions": actions_for(delivery),
    }


def log_router(ctx: WebContext, access: Access) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/log", response_class=HTMLResponse)
    def delivery_log(
        request: Request,
        campaign: str = "",
        state: str = "",
        channel: str = "",
        before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        identity: Identity = access.require(Permission.READ),
    ) -> HTMLResponse:
        found = LogFilter(campaign.strip(), state.strip(), channel.strip())
        problems = found.problems()
        rows: list[dict[str, Any]] = []
        with reading(ctx.factory) as session:
            if not problems:
                rows = event_rows(session, found, before=before)
            campaigns = list(session.scalars(select(Campaign.name).order_by(Campaign.name)))
        if found.campaign and found.campaign not in campaigns:
            problems.append(f"no campaign named {found.campaign!r}")
        return page(
            request,
            "web/log.html.j2",
            {
                "rows": rows,
                "filter": found,
                "problems": problems,
                "campaigns": campaigns,
                "states": [s.value for s in State],
                "channels": CHANNELS,
                "before": before,
                "last_id": max((r["id"] for r in rows), default=0) if before is None else None,
                "older": rows[-1]["id"] if len(rows) == LOG_ROWS else None,
                "page_size": LOG_ROWS,
            },
            status=422 if problems else 200,
        )

    @router.get("/log/rows", response_class=HTMLResponse)
    def new_rows(
        after: Annotated[int, Query(ge=0, le=MAX_ID)],
        campaign: str = "",
        state: str = "",
        channel: str = "",
        identity: Identity = access.require(Permission.READ),
    ) -> HTMLResponse:
        """The rows of the events after ``after`` (an HTML fragment for the live log's script)."""
        found = LogFilter(campaign.strip(), state.strip(), channel.strip())
        problems = found.problems()
        if problems:
            return HTMLResponse("; ".join(problems), status_code=422, headers=PAGE_HEADERS)
        with reading(ctx.factory) as session:
            rows = event_rows(session, found, after=max(0, after))
        html = render("web/log_rows.html.j2", {"rows": rows})
        last = max((r["id"] for r in rows), default=max(0, after))
        return HTMLResponse(html, headers={**PAGE_HEADERS, "X-Last-Event": str(last)})

    def show(request: Request, delivery_id: int, notice: Notice | None = None, status: int = 200) -> HTMLResponse:
        with reading(ctx.factory) as session:
            context = timeline(session, delivery_id)
            if context is None:
                return page(
                    request,
                    "web/message.html.j2",
                    {"title": "No such delivery", "message": f"There is no delivery #{delivery_id}."},
                    status=404,
                )
            return page(request, "web/delivery.html.j2", {**context, "notice": notice}, status=status)

    @router.get("/deliveries/{delivery_id}", response_class=HTMLResponse)
    def delivery(
        request: Request, delivery_id: DeliveryId, identity: Identity = access.require(Permission.READ)
    ) -> HTMLResponse:
        return show(request, delivery_id)

    @router.post("/deliveries/{delivery_id}/{action}", response_class=HTMLResponse)
    def act(
        request: Request,
        delivery_id: DeliveryId,
        action: str,
        reason: str = Form(""),
        back: str = Form(""),
        identity: Identity = access.require(Permission.DELIVERIES),
    ) -> HTMLResponse:
        notice, status = _act(ctx, delivery_id, action, identity, reason)
        if back == "held":
            with reading(ctx.factory) as session:
                rows = held_rows(session)
            return page(request, "web/held.html.j2", {**rows, "notice": notice}, status=status)
        return show(request, delivery_id, notice, status)

    @router.get("/held", response_class=HTMLResponse)
    def held(request: Request, identity: Identity = access.require(Permission.READ)) -> HTMLResponse:
        with reading(ctx.factory) as session:
            rows = held_rows(session)
            return page(request, "web/held.html.j2", {**rows, "notice": None})

    return router


def _act(ctx: WebContext, delivery_id: int, action: str, by: Identity, reason: str) -> tuple[Notice, int]:
    now = ctx.clock()
    try:
        if action == "retry":
            done = operations.retry_delivery(ctx.factory, delivery_id, by=by, reason=reason, now=now, force=False)
        elif action in ("resolve-sent", "resolve-not-sent"):
            sent = action == "resolve-sent"
            done = operations.resolve_delivery(ctx.factory, delivery_id, sent=sent, by=by, reason=reason, now=now)
        elif action == "cancel":
            done = operations.cancel_delivery(ctx.factory, delivery_id, by=by, reason=reason, now=now)
        else:
            return Notice(f"Refused: no delivery action named {action!r}", ok=False), 404
    except operations.Refused as err:
        return Notice(f"Refused: {err.message}", ok=False), err.status
    return Notice(done.message, ok=True), 200
