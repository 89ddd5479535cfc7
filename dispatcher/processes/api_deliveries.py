"""The deliveries API: deliveries filtered and paginated by cursor, one delivery, its timeline (events and
attempts), retry / resolve / cancel (dispatcher/processes/operations.py), the live log's events, and the
old ``/api/campaigns/{name}/deliveries`` (paginated the same way).

A supporter copy is shown as "supporter copy #id": never a supporter's address or name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from dispatcher.domain.accounts import Identity, Permission
from dispatcher.domain.db import reading
from dispatcher.domain.models import Addressee, Attempt, Campaign, Delivery, DeliveryEvent
from dispatcher.domain.states import Channel, DeliveryKind, State
from dispatcher.processes import operations
from dispatcher.processes.access import Access
from dispatcher.processes.api_campaigns import NAME, _campaign
from dispatcher.processes.api_common import (
    ERRORS,
    MAX_ID,
    DoneOut,
    Page,
    after_query,
    decode_cursor,
    limit_query,
    next_cursor,
    refused,
)
from dispatcher.processes.operations import Refused
from dispatcher.processes.views import describe_target
from dispatcher.processes.web_context import WebContext

DELIVERY_ID = Path(ge=1, le=MAX_ID, description="the delivery's id")
GATEWAY = r"^[A-Za-z0-9_.:-]{1,50}$"


class DeliveryOut(BaseModel):
    id: int
    campaign: str
    kind: str  # letter | copy
    channel: str  # fax | email
    addressee_id: int | None
    addressee: str | None  # the official's name (letters), or "supporter copy #id"
    role: str | None  # to | cc (letters)
    destination: str | None  # the official's number or address; null for a supporter copy
    route_position: int
    state: str
    gateway: str | None
    provider_id: str | None
    attempts: int
    last_error: str | None
    not_before: datetime | None
    document_sha256: str | None
    pages: int | None
    updated_at: datetime


class EventOut(BaseModel):
    id: int
    at: datetime
    delivery: int
    campaign: str
    target: str  # "Xi Jinping / fax +86...", or "supporter copy #12"
    from_state: str | None
    to_state: str
    actor: str
    reason: str
    error_class: str | None
    provider_id: str | None


class AttemptOut(BaseModel):
    number: int
    gateway: str
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None  # from the call to its outcome here
    call_seconds: float | None  # the provider's report of the call, when it gives one
    outcome: str | None
    provider_id: str | None
    error_code: str | None
    detail: str | None
    document_sha256: str | None
    pages: int | None


class TimelineOut(BaseModel):
    delivery: DeliveryOut
    events: list[EventOut]
    attempts: list[AttemptOut]


class EventsPage(BaseModel):
    """Events after ``after`` in id order; ``last`` is the id to ask after next (the same if none came)."""

    items: list[EventOut]
    last: int


class RetryIn(BaseModel):
    reason: str
    force: bool = False


class ResolveIn(BaseModel):
    sent: bool
    reason: str


class CancelIn(BaseModel):
    reason: str


def delivery_router(ctx: WebContext, access: Access) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["deliveries"], responses=ERRORS)

    @router.get(
        "/deliveries",
        response_model=Page[DeliveryOut],
        responses={**refused(400, "a malformed cursor"), **refused(404, "no campaign of that name")},
    )
    def deliveries(
        campaign: str | None = Query(None, max_length=200, description="the campaign's name"),
        state: State | None = None,
        channel: Channel | None = None,
        gateway: str | None = Query(None, pattern=GATEWAY),
        kind: DeliveryKind | None = None,
        addressee: int | None = Query(None, ge=1, le=MAX_ID, description="the addressee's id"),
        after: str | None = after_query(),
        limit: int = limit_query(),
        identity: Identity = access.require(Permission.READ),
    ) -> Page[DeliveryOut]:
        start = decode_cursor(after)
        with reading(ctx.factory) as session:
            query = _deliveries()
            if campaign is not None:
                query = query.where(Delivery.campaign_id == _campaign(session, campaign).id)
            for column, value in (
                (Delivery.state, state),
                (Delivery.channel, channel),
                (Delivery.gateway, gateway),
                (Delivery.kind, kind),
                (Delivery.addressee_id, addressee),
            ):
                if value is not None:
                    query = query.where(column == value)
            return _page(session, query, start, limit)

    @router.get(
        "/campaigns/{name}/deliveries",
        response_model=Page[DeliveryOut],
        tags=["campaigns"],
        responses={**refused(400, "a malformed cursor"), **refused(404, "no campaign of that name")},
    )
    def campaign_deliveries(
        name: str = NAME,
        after: str | None = after_query(),
        limit: int = limit_query(),
        identity: Identity = access.require(Permission.READ),
    ) -> Page[DeliveryOut]:
        start = decode_cursor(after)
        with reading(ctx.factory) as session:
            campaign_id = _campaign(session, name).id
            return _page(session, _deliveries().where(Delivery.campaign_id == campaign_id), start, limit)

    @router.get("/deliveries/{delivery_id}", response_model=DeliveryOut, responses=refused(404, "no such delivery"))
    def delivery(delivery_id: int = DELIVERY_ID, identity: Identity = access.require(Permission.READ)) -> DeliveryOut:
        with reading(ctx.factory) as session:
            return _one(session, delivery_id)

    @router.get(
        "/deliveries/{delivery_id}/events", response_model=TimelineOut, responses=refused(404, "no such delivery")
    )
    def timeline(delivery_id: int = DELIVERY_ID, identity: Identity = access.require(Permission.READ)) -> TimelineOut:
        with reading(ctx.factory) as session:
            out = _one(session, delivery_id)
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            events = session.scalars(
                select(DeliveryEvent).where(DeliveryEvent.delivery_id == delivery_id).order_by(DeliveryEvent.id)
            )
            attempts = session.scalars(
                select(Attempt).where(Attempt.delivery_id == delivery_id).order_by(Attempt.number)
            )
            target = describe_target(delivery)
            return TimelineOut(
                delivery=out,
                events=[_event(e, out.campaign, target) for e in events],
                attempts=[_attempt(a, delivery) for a in attempts],
            )

    @router.get(
        "/events",
        response_model=EventsPage,
        tags=["events"],
        responses=refused(404, "no campaign of that name"),
    )
    def events(
        campaign: str | None = Query(None, max_length=200, description="the campaign's name"),
        after: int = Query(0, ge=0, le=MAX_ID, description="the last event id already seen (0: from the start)"),
        limit: int = limit_query(),
        identity: Identity = access.require(Permission.READ),
    ) -> EventsPage:
        with reading(ctx.factory) as session:
            query = (
                select(DeliveryEvent, Delivery, Campaign.name)
                .join(Delivery, Delivery.id == DeliveryEvent.delivery_id)
                .join(Campaign, Campaign.id == DeliveryEvent.campaign_id)
                .where(DeliveryEvent.id > after)
                .order_by(DeliveryEvent.id)
                .limit(limit)
            )
            if campaign is not None:
                query = query.where(DeliveryEvent.campaign_id == _campaign(session, campaign).id)
            items = [_event(e, name, describe_target(d)) for e, d, name in session.execute(query)]
        return EventsPage(items=items, last=items[-1].id if items else after)

    @router.post(
        "/deliveries/{delivery_id}/retry",
        response_model=DoneOut,
        responses={**refused(404, "no such delivery"), **refused(409, "not retryable"), **refused(422, "no reason")},
    )
    def retry(
        body: RetryIn, delivery_id: int = DELIVERY_ID, identity: Identity = access.require(Permission.DELIVERIES)
    ) -> DoneOut:
        try:
            done = operations.retry_delivery(
                ctx.factory, delivery_id, by=identity, reason=body.reason, now=ctx.clock(), force=body.force
            )
        except Refused as err:  # the ledger's words are the CLI's: say it as this API does
            err.message = err.message.replace("use --force", 'send "force": true')
            raise
        return DoneOut(message=done.message, state=done.state)

    @router.post(
        "/deliveries/{delivery_id}/resolve",
        response_model=DoneOut,
        responses={**refused(404, "no such delivery"), **refused(409, "not held"), **refused(422, "no reason")},
    )
    def resolve(
        body: ResolveIn, delivery_id: int = DELIVERY_ID, identity: Identity = access.require(Permission.DELIVERIES)
    ) -> DoneOut:
        done = operations.resolve_delivery(
            ctx.factory, delivery_id, sent=body.sent, by=identity, reason=body.reason, now=ctx.clock()
        )
        return DoneOut(message=done.message, state=done.state)

    @router.post(
        "/deliveries/{delivery_id}/cancel",
        response_model=DoneOut,
        responses={**refused(404, "no such delivery"), **refused(409, "not cancellable"), **refused(422, "no reason")},
    )
    def cancel(
        body: CancelIn, delivery_id: int = DELIVERY_ID, identity: Identity = access.require(Permission.DELIVERIES)
    ) -> DoneOut:
        done = operations.cancel_delivery(ctx.factory, delivery_id, by=identity, reason=body.reason, now=ctx.clock())
        return DoneOut(message=done.message, state=done.state)

    return router


def _deliveries() -> Any:
    return (
        select(Delivery, Campaign.name, Addressee.name, Addressee.role)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .outerjoin(Addressee, Addressee.id == Delivery.addressee_id)
    )


def _page(session: Session, query: Select[Any], start: int, limit: int) -> Page[DeliveryOut]:
    """Keyset pagination on the delivery id: ``limit`` + 1 rows say whether a next page exists."""
    rows = session.execute(query.where(Delivery.id > start).order_by(Delivery.id).limit(limit + 1)).all()
    items = [_out(*row) for row in rows[:limit]]
    return Page[DeliveryOut](items=items, next=next_cursor([row[0].id for row in rows], limit))


def _one(session: Session, delivery_id: int) -> DeliveryOut:
    row = session.execute(_deliveries().where(Delivery.id == delivery_id)).first()
    if row is None:
        raise Refused(f"no delivery #{delivery_id}", status=404)
    return _out(*row)


def _out(d: Delivery, campaign: str, addressee: str | None, role: str | None) -> DeliveryOut:
    copy = d.kind == DeliveryKind.COPY
    return DeliveryOut(
        id=d.id,
        campaign=campaign,
        kind=d.kind,
        channel=d.channel,
        addressee_id=d.addressee_id,
        addressee=f"supporter copy #{d.supporter_id}" if copy else addressee,
        role=None if copy else role,
        destination=None if copy else d.destination,
        route_position=d.route_position,
        state=d.state,
        gateway=d.gateway,
        provider_id=d.provider_id,
        attempts=d.attempt_count,
        last_error=d.last_error,
        not_before=d.not_before,
        document_sha256=d.document_sha256,
        pages=d.page_count,
        updated_at=d.updated_at,
    )


def _event(e: DeliveryEvent, campaign: str, target: str) -> EventOut:
    return EventOut(
        id=e.id,
        at=e.at,
        delivery=e.delivery_id,
        campaign=campaign,
        target=target,
        from_state=e.from_state,
        to_state=e.to_state,
        actor=e.actor,
        reason=e.reason,
        error_class=e.error_class,
        provider_id=e.provider_id,
    )


def _attempt(a: Attempt, delivery: Delivery) -> AttemptOut:
    evidence = a.evidence or {}
    pages = evidence.get("pages")
    call = evidence.get("duration_secs")
    return AttemptOut(
        number=a.number,
        gateway=a.gateway,
        started_at=a.started_at,
        finished_at=a.finished_at,
        duration_seconds=(a.finished_at - a.started_at).total_seconds() if a.finished_at else None,
        call_seconds=float(call) if isinstance(call, int | float) else None,
        outcome=a.outcome,
        provider_id=a.provider_id,
        error_code=a.error_code,
        detail=a.detail,
        document_sha256=a.document_sha256,
        pages=pages if isinstance(pages, int) else (delivery.page_count if a.document_sha256 else None),
    )
