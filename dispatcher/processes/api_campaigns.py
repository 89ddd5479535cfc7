"""The campaigns API: list, show, create and replace a draft from a campaign file body, validate, preview,
schedule / pause / resume / cancel, addressees and their routes, and the CSV export of a campaign's log.

A campaign body is the campaign file's TOML (``application/toml`` or ``text/plain``) or the same tables as
JSON (``application/json``), at most 1 MiB; it may not name files by path (dispatcher/domain/campaign_body.py).
Writes go through dispatcher/processes/operations.py, as the console's do.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Body, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.domain.accounts import Identity, Permission
from dispatcher.domain.campaign_body import check_body, parse_body
from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.csv_out import inert
from dispatcher.domain.db import reading
from dispatcher.domain.errors import NotFound, Problem, TemplateProblemError
from dispatcher.domain.input_files import CAMPAIGN_FILE_MAX_BYTES
from dispatcher.domain.models import Addressee, Campaign, Delivery, DeliveryEvent
from dispatcher.domain.queries import get_campaign, state_counts
from dispatcher.domain.rendering.fonts import UndrawableTextError
from dispatcher.domain.rendering.preview import preview_email, preview_fax
from dispatcher.domain.states import DeliveryKind
from dispatcher.domain.templating import compile_letter
from dispatcher.processes import campaign_input, operations
from dispatcher.processes.access import Access
from dispatcher.processes.api_common import (
    ERRORS,
    ActionIn,
    DoneOut,
    ProblemOut,
    bounded_body,
    refused,
)
from dispatcher.processes.operations import Invalid, Refused
from dispatcher.processes.views import describe_target
from dispatcher.processes.web_context import WebContext

EXPORT_BATCH = 1000
MAX_TO = 1000  # "To" addressees a preview URL may name
BODY_TYPES = ("application/toml", "text/plain", "application/json")
CAMPAIGN_BODY = {
    "required": True,
    "description": "the campaign file: TOML, or the same tables as JSON; at most 1 MiB; no file paths "
    "(use letter.body and supporters.lists)",
    "content": {
        "application/toml": {"schema": {"type": "string"}},
        "text/plain": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "object"}},
    },
}
NAME = Path(description="the campaign's name", max_length=200)


class CampaignSummary(BaseModel):
    name: str
    title: str
    status: str
    counts: dict[str, int]  # deliveries by state
    total: int


class CampaignOut(CampaignSummary):
    urgency: str
    route_policy: str
    schedule: dict[str, Any]
    deadline: datetime | None
    scheduled_at: datetime | None
    letter_date: date | None
    copies: str
    lists: list[str]
    subject: str
    created_at: datetime
    updated_at: datetime


class SavedOut(BaseModel):
    name: str
    status: str  # created | replaced | unchanged
    planned: int
    skipped: int
    problems: list[ProblemOut]  # warnings (and, with skip_invalid, what was left out)


class ValidationOut(BaseModel):
    ok: bool
    name: str | None
    errors: int
    warnings: int
    problems: list[ProblemOut]


class EmailPreview(BaseModel):
    to: list[str]
    subject: str
    text: str
    html: str
    sha256: str


class FaxPreview(BaseModel):
    url: str
    pages: int
    sha256: str


class LetterPreviewOut(BaseModel):
    index: int  # 1-based, as in the fax's URL
    to: str  # the "To" addressee's name
    email: EmailPreview
    fax: FaxPreview


class PreviewOut(BaseModel):
    name: str
    letter_date: date
    letters: list[LetterPreviewOut]


class RouteDelivery(BaseModel):
    id: int
    state: str
    attempts: int


class RouteOut(BaseModel):
    position: int
    channel: str
    destination: str  # normalised (E.164 / email) when valid, else as written
    valid: bool
    problem: str | None
    delivery: RouteDelivery | None


class AddresseeOut(BaseModel):
    id: int
    role: str
    position: int
    name: str
    title: str
    organisation: str
    country: str
    timezone: str
    routes: list[RouteOut]


def campaign_router(ctx: WebContext, access: Access) -> APIRouter:
    router = APIRouter(prefix="/api/campaigns", tags=["campaigns"], responses=ERRORS)

    @router.get("", response_model=list[CampaignSummary])
    def campaigns(identity: Identity = access.require(Permission.READ)) -> list[CampaignSummary]:
        with reading(ctx.factory) as session:
            counts = state_counts(session)
            return [
                CampaignSummary(
                    name=c.name,
                    title=c.title,
                    status=c.status,
                    counts=dict(counts.get(c.id, {})),
                    total=sum(counts.get(c.id, Counter()).values()),
                )
                for c in session.scalars(select(Campaign).order_by(Campaign.id))
            ]

    @router.post(
        "",
        status_code=201,
        response_model=SavedOut,
        openapi_extra={"requestBody": CAMPAIGN_BODY},
        responses={**refused(409, "a campaign of that name exists"), **refused(422, "invalid: every problem")},
    )
    async def create(
        request: Request, skip_invalid: bool = False, identity: Identity = access.require(Permission.CAMPAIGNS)
    ) -> SavedOut:
        spec, report = await _read_body(request)
        return await run_in_threadpool(_save, ctx, spec, report, identity, create=True, skip_invalid=skip_invalid)

    @router.post(
        "/validate",
        response_model=ValidationOut,
        openapi_extra={"requestBody": CAMPAIGN_BODY},
        responses={422: {"model": ValidationOut, "description": "the campaign has errors: each is listed"}},
    )
    async def validate(request: Request, identity: Identity = access.require(Permission.READ)) -> Any:
        raw = await _campaign_bytes(request)
        spec, problems = await run_in_threadpool(_check, raw, _is_json(request))
        errors = sum(1 for p in problems if p.severity == "error")
        out = ValidationOut(
            ok=not errors,
            name=spec.campaign.name if spec is not None else None,
            errors=errors,
            warnings=len(problems) - errors,
            problems=[ProblemOut.of(p) for p in problems],
        )
        return JSONResponse(out.model_dump(mode="json"), status_code=422 if errors else 200)

    @router.get("/{name}", response_model=CampaignOut, responses=refused(404, "no campaign of that name"))
    def campaign(name: str = NAME, identity: Identity = access.require(Permission.READ)) -> CampaignOut:
        with reading(ctx.factory) as session:
            c = _campaign(session, name)
            counts = state_counts(session, c.id).get(c.id, Counter())
            supporters = c.spec.get("supporters") or {}
            return CampaignOut(
                name=c.name,
                title=c.title,
                status=c.status,
                counts=dict(counts),
                total=sum(counts.values()),
                urgency=c.urgency,
                route_policy=c.route_policy,
                schedule=c.schedule,
                deadline=c.deadline,
                scheduled_at=c.scheduled_at,
                letter_date=c.letter_date,
                copies=c.copies,
                lists=list(supporters.get("lists") or []),
                subject=c.letter.subject if c.letter else "",
                created_at=c.created_at,
                updated_at=c.updated_at,
            )

    @router.put(
        "/{name}",
        response_model=SavedOut,
        openapi_extra={"requestBody": CAMPAIGN_BODY},
        responses={
            **refused(404, "no campaign of that name"),
            **refused(409, "the campaign is no longer a draft"),
            **refused(422, "invalid: every problem"),
        },
    )
    async def replace(
        request: Request,
        name: str = NAME,
        skip_invalid: bool = False,
        identity: Identity = access.require(Permission.CAMPAIGNS),
    ) -> SavedOut:
        spec, report = await _read_body(request)
        if spec.campaign.name != name:
            raise Refused(
                f"the body's campaign.name {spec.campaign.name!r} is not {name!r}, the campaign this URL replaces",
                status=422,
            )
        return await run_in_threadpool(_save, ctx, spec, report, identity, create=False, skip_invalid=skip_invalid)

    @router.get("/{name}/preview", response_model=PreviewOut, responses=refused(404, "no campaign of that name"))
    def preview(name: str = NAME, identity: Identity = access.require(Permission.READ)) -> PreviewOut:
        spec, template, day = _letters(ctx, name)
        letters = []
        for index, to in enumerate(spec.to):
            with _unrenderable():
                email = preview_email(spec, template, index, reference=f"preview-{name}-{index + 1}", date=day)
                fax = preview_fax(spec, template, index, date=day)
            letters.append(
                LetterPreviewOut(
                    index=index + 1,
                    to=to.name,
                    email=EmailPreview(
                        to=list(email.message.to),
                        subject=email.message.subject,
                        text=email.message.text,
                        html=email.message.html or "",
                        sha256=email.sha256,
                    ),
                    fax=FaxPreview(
                        url=f"/api/campaigns/{name}/preview/{index + 1}.pdf", pages=fax.page_count, sha256=fax.sha256
                    ),
                )
            )
        return PreviewOut(name=name, letter_date=day, letters=letters)

    @router.get(
        "/{name}/preview/{index}.pdf",
        response_class=Response,
        responses={
            200: {"content": {"application/pdf": {}}, "description": "the fax PDF"},
            **refused(404, "no campaign of that name, or no 'To' addressee at that place"),
        },
    )
    def preview_pdf(
        name: str = NAME,
        index: int = Path(ge=1, le=MAX_TO, description="the 'To' addressee's place, from 1"),
        identity: Identity = access.require(Permission.READ),
    ) -> Response:
        spec, template, day = _letters(ctx, name)
        if index > len(spec.to):
            raise Refused(f"campaign {name!r} has {len(spec.to)} 'To' addressee(s): no letter {index}", status=404)
        with _unrenderable():
            fax = preview_fax(spec, template, index - 1, date=day)
        return Response(fax.pdf, media_type="application/pdf", headers={"X-Content-SHA256": fax.sha256})

    for verb, summary in (
        ("schedule", "start sending per the campaign's schedule"),
        ("pause", "stop claiming; queued deliveries go back to planned"),
        ("resume", "claim again"),
        ("cancel", "cancel everything not yet handed to a provider"),
    ):
        router.add_api_route(
            f"/{{name}}/{verb}",
            _action(ctx, access, verb),
            methods=["POST"],
            summary=summary,
            response_model=DoneOut,
            responses={**refused(404, "no campaign of that name"), **refused(409, "not in a state for this")},
        )

    @router.get(
        "/{name}/addressees", response_model=list[AddresseeOut], responses=refused(404, "no campaign of that name")
    )
    def addressees(name: str = NAME, identity: Identity = access.require(Permission.READ)) -> list[AddresseeOut]:
        with reading(ctx.factory) as session:
            c = _campaign(session, name)
            by_route = {
                route_id: RouteDelivery(id=i, state=state, attempts=attempts)
                for i, route_id, state, attempts in session.execute(
                    select(Delivery.id, Delivery.route_id, Delivery.state, Delivery.attempt_count).where(
                        Delivery.campaign_id == c.id, Delivery.kind == DeliveryKind.LETTER
                    )
                )
            }
            people = session.scalars(
                select(Addressee)
                .where(Addressee.campaign_id == c.id)
                .order_by(Addressee.role.desc(), Addressee.position)
            )
            return [
                AddresseeOut(
                    id=p.id,
                    role=p.role,
                    position=p.position,
                    name=p.name,
                    title=p.title,
                    organisation=p.organisation,
                    country=p.country,
                    timezone=p.timezone,
                    routes=[
                        RouteOut(
                            position=r.position,
                            channel=r.channel,
                            destination=r.value or r.raw_value,
                            valid=r.valid,
                            problem=r.problem,
                            delivery=by_route.get(r.id),
                        )
                        for r in p.routes
                    ],
                )
                for p in people
            ]

    @router.get(
        "/{name}/export.csv",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/csv": {}}, "description": "the campaign's delivery log"},
            **refused(404, "no campaign of that name"),
        },
    )
    def export(name: str = NAME, identity: Identity = access.require(Permission.READ)) -> StreamingResponse:
        with reading(ctx.factory) as session:
            campaign_id = _campaign(session, name).id
        return StreamingResponse(
            _export_rows(ctx, campaign_id),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}-log.csv"'},
        )

    return router


EXPORT_COLUMNS = [
    "event",
    "at",
    "delivery",
    "kind",
    "channel",
    "target",
    "from",
    "to",
    "actor",
    "reason",
    "error_class",
    "provider_id",
]


def _export_rows(ctx: WebContext, campaign_id: int) -> Iterator[str]:
    """The log as CSV lines, read 1,000 events at a time (keyset on the event id), each cell made inert.

    A supporter copy is named "supporter copy #id", never by address or name (as `dispatch log` does)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)

    def flush() -> str:
        text = out.getvalue()
        out.seek(0)
        out.truncate()
        return text

    writer.writerow(EXPORT_COLUMNS)
    yield "\ufeff" + flush()
    after = 0
    while True:
        with reading(ctx.factory) as session:
            rows = session.execute(
                select(DeliveryEvent, Delivery)
                .join(Delivery, Delivery.id == DeliveryEvent.delivery_id)
                .where(DeliveryEvent.campaign_id == campaign_id, DeliveryEvent.id > after)
                .order_by(DeliveryEvent.id)
                .limit(EXPORT_BATCH)
            ).all()
            for event, delivery in rows:
                cells: list[object] = [
                    event.id,
                    event.at.isoformat(),
                    delivery.id,
                    delivery.kind,
                    delivery.channel,
                    describe_target(delivery),
                    event.from_state or "",
                    event.to_state,
                    event.actor,
                    event.reason,
                    event.error_class or "",
                    event.provider_id or "",
                ]
                writer.writerow([inert(c) if isinstance(c, str) else c for c in cells])
        if not rows:
            return
        after = rows[-1][0].id
        yield flush()


def _action(ctx: WebContext, access: Access, verb: str) -> Any:
    def act(
        name: str = NAME,
        body: ActionIn | None = Body(None),
        identity: Identity = access.require(Permission.CAMPAIGNS),
    ) -> DoneOut:
        reason = body.reason if body is not None else None
        done = operations.campaign_action(ctx.factory, verb, name, by=identity, reason=reason, now=ctx.clock())
        return DoneOut(message=done.message, state=done.state)

    act.__name__ = f"campaign_{verb}"
    return act


def _campaign(session: Session, name: str) -> Campaign:
    try:
        return get_campaign(session, name)
    except NotFound:  # a 404 naming no other campaign (names may be probed)
        raise Refused(f"no campaign named {name!r}", status=404) from None


def _letters(ctx: WebContext, name: str) -> tuple[CampaignSpec, Any, date]:
    """A stored campaign's spec, its letter compiled from the ledger's copy (never a file), the letter's date."""
    with reading(ctx.factory) as session:
        c = _campaign(session, name)
        spec = CampaignSpec.model_validate(c.spec)
        try:
            template = compile_letter(c.letter.template_source, name=c.letter.template_name)
        except TemplateProblemError as err:
            raise Refused(f"the letter does not compile: {err}", status=409) from None
        return spec, template, c.letter_date or ctx.clock().date()


@contextlib.contextmanager
def _unrenderable() -> Iterator[None]:
    """A letter that no longer renders (a template error met only on this date, a character no font draws)
    is a 409 naming the problem, not a server error."""
    try:
        yield
    except (TemplateProblemError, UndrawableTextError) as err:
        raise Refused(f"the letter cannot be rendered: {err}", status=409) from None


def _is_json(request: Request) -> bool:
    return "json" in request.headers.get("content-type", "").lower()


def _check(raw: bytes, json_body: bool) -> tuple[CampaignSpec | None, list[Problem]]:
    data, problems = parse_body(raw, json_body=json_body)
    if data is None:
        return None, problems
    spec, report = check_body(data)
    return spec, report.problems


async def _read_body(request: Request) -> tuple[CampaignSpec, Any]:
    """The body as a validated campaign (spec, report), or Invalid (422) listing every problem."""
    raw = await _campaign_bytes(request)
    spec, report = await run_in_threadpool(_parse_and_check, raw, _is_json(request))
    if spec is None:
        raise Invalid(report)
    return spec, report


async def _campaign_bytes(request: Request) -> bytes:
    """The body of a campaign request: 415 for another type, 413 past 1 MiB."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and kind not in BODY_TYPES:
        raise Refused(f"a campaign is sent as {', '.join(BODY_TYPES)}; not {kind[:60]!r}", status=415)
    return await bounded_body(request, limit=CAMPAIGN_FILE_MAX_BYTES, what="campaign")


def _parse_and_check(raw: bytes, json_body: bool) -> tuple[CampaignSpec | None, Any]:
    """(spec, report) of a valid body; (None, its problems) otherwise. Parsing and validating block: a
    worker thread does them."""
    data, problems = parse_body(raw, json_body=json_body)
    if data is None:
        return None, problems
    spec, report = check_body(data)
    return (spec, report) if spec is not None else (None, report.problems)


def _save(
    ctx: WebContext, spec: CampaignSpec, report: Any, identity: Identity, *, create: bool, skip_invalid: bool
) -> SavedOut:
    saved = campaign_input.save_campaign(
        ctx.factory, spec, report, by=identity, now=ctx.clock(), create=create, skip_invalid=skip_invalid
    )
    return SavedOut(
        name=spec.campaign.name,
        status=saved.status,
        planned=saved.planned,
        skipped=saved.skipped,
        problems=[ProblemOut.of(p) for p in report.problems],
    )
