"""The console: server-rendered pages of `dispatch web` (templates/web/*.html.j2), behind a login.

Pages are Jinja2 with autoescape: a campaign, addressee or supporter name with markup is shown as text.
Every page reads the ledger in a worker thread (``def`` routes), never on the event loop. Every action is a
POST form carrying the session's form token (csrf); its result, or why it was refused, is shown on the page.
Buttons are shown only to a role that may press them; the server checks the permission anyway.

This module: the campaign list and a campaign's page with its letter preview and its actions.
console_log.py: the live delivery log, a delivery's timeline, the deliveries held for an operator.
console_forms.py: the form that creates or edits a draft campaign, and the supporter list upload.
"""

from __future__ import annotations

import io
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.domain.accounts import Identity, Permission
from dispatcher.domain.control import resolvable
from dispatcher.domain.db import reading
from dispatcher.domain.errors import NotFound
from dispatcher.domain.holds import held_because
from dispatcher.domain.models import Addressee, Campaign, Delivery, OperatorAction
from dispatcher.domain.queries import get_campaign
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.rendering.email import render_email
from dispatcher.domain.rendering.fax import render_fax
from dispatcher.domain.rendering.preview import PLACEHOLDER_EMAIL, PLACEHOLDER_FAX
from dispatcher.domain.rendering.templates import render
from dispatcher.domain.states import DeliveryKind, State
from dispatcher.processes import operations
from dispatcher.processes.access import PAGE_HEADERS, Access
from dispatcher.processes.web_context import WebContext

CAMPAIGN_VERBS = ("schedule", "pause", "resume", "cancel")
ENDED = frozenset({State.DELIVERED, State.FAILED, State.CANCELLED, State.SKIPPED})


def ended_state(state: str, expects_report: bool) -> bool:
    """Whether a delivery in ``state`` has ended: a final state, or ``submitted`` through a gateway that
    reports nothing more (SMTP: its acceptance is the outcome)."""
    return state in ENDED or (state == State.SUBMITTED and not expects_report)


# the letter preview is framed by the console's own page, and runs nothing: no script, no form, no request
PREVIEW_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "frame-ancestors 'self'; sandbox",
}
FAX_PAGE_SCALE = 1.2  # 72 dpi * 1.2: an A4 page about 714 px wide


def page(request: Request, template: str, context: dict[str, Any], *, status: int = 200) -> HTMLResponse:
    """A console page: the identity and the session's form token go to every template (the frame's logout form)."""
    identity = getattr(request.state, "identity", None)
    csrf = getattr(request.state, "csrf", "")
    may = {p.value: bool(identity and identity.may(p)) for p in Permission}
    html = render(template, {"identity": identity, "csrf": csrf, "may": may, **context})
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


@dataclass
class Notice:
    """The result of an action (``ok``) or why it was refused, shown at the top of the page."""

    text: str
    ok: bool


# -- the campaign list and a campaign's page ------------------------------------------------------------


def campaign_rows(session: Session) -> list[dict[str, Any]]:
    counts: dict[int, Counter[str]] = {}
    finished: Counter[int] = Counter()
    for campaign_id, state, reports, n in session.execute(
        select(Delivery.campaign_id, Delivery.state, Delivery.expects_report, func.count()).group_by(
            Delivery.campaign_id, Delivery.state, Delivery.expects_report
        )
    ):
        counts.setdefault(campaign_id, Counter())[state] += n
        finished[campaign_id] += n if ended_state(state, reports) else 0
    rows = []
    for c in session.scalars(select(Campaign).order_by(Campaign.id.desc())):
        states = counts.get(c.id, Counter())
        total = sum(states.values())
        ended = finished[c.id]
        rows.append(
            {
                "name": c.name,
                "title": c.title,
                "status": c.status,
                "states": sorted(states.items()),
                "total": total,
                "ended": ended,
                "percent": round(100 * ended / total) if total else 0,
            }
        )
    return rows


def campaign_context(session: Session, name: str) -> dict[str, Any]:
    """Everything a campaign's page shows; NotFound when there is no such campaign."""
    campaign = get_campaign(session, name)
    letters = list(
        session.scalars(
            select(Delivery).where(Delivery.campaign_id == campaign.id, Delivery.kind == DeliveryKind.LETTER)
        )
    )
    by_addressee: dict[int, list[Delivery]] = {}
    for d in letters:
        if d.addressee_id is not None:
            by_addressee.setdefault(d.addressee_id, []).append(d)
    people = []
    for person in sorted(campaign.addressees, key=lambda a: (a.role != "to", a.position)):
        routes = []
        for route in sorted(person.routes, key=lambda r: r.position):
            delivery = next((d for d in by_addressee.get(person.id, []) if d.route_id == route.id), None)
            held = held_because(session, delivery) if delivery is not None and resolvable(delivery) else None
            routes.append(
                {
                    "channel": route.channel,
                    "value": route.value or route.raw_value,
                    "valid": route.valid,
                    "problem": route.problem,
                    "delivery": delivery,
                    "note": held or (delivery.last_error if delivery and delivery.state not in ("delivered",) else ""),
                }
            )
        people.append({"person": person, "routes": routes})
    copy_counts = session.execute(
        select(Delivery.state, Delivery.expects_report, func.count())
        .where(Delivery.campaign_id == campaign.id, Delivery.kind == DeliveryKind.COPY)
        .group_by(Delivery.state, Delivery.expects_report)
    ).all()
    by_state: Counter[str] = Counter()
    for state, _, n in copy_counts:
        by_state[state] += n
    copies = sorted(by_state.items())
    states = Counter(d.state for d in letters) + by_state
    total = sum(states.values())
    ended = sum(1 for d in letters if ended_state(d.state, d.expects_report))
    ended += sum(n for state, reports, n in copy_counts if ended_state(state, reports))
    return {
        "campaign": campaign,
        "schedule": campaign.schedule or {},
        "people": people,
        "copies": copies,
        "states": sorted(states.items()),
        "total": total,
        "ended": ended,
        "percent": round(100 * ended / total) if total else 0,
        "fax_pages": None,
        "preview_error": None,
        "actions": list(
            session.scalars(
                select(OperatorAction)
                .where(OperatorAction.campaign_id == campaign.id)
                .order_by(OperatorAction.id.desc())
                .limit(50)
            )
        ),
    }


class Previews:
    """The letter to the first "To" addressee, rendered for the campaign page: the email's HTML and the fax's
    pages as PNG images, kept for the most recent campaign versions (rendering a fax takes a moment)."""

    def __init__(self, documents: DocumentCache, *, size: int = 8) -> None:
        self._documents = documents
        self._kept: OrderedDict[tuple[int, str, Any], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def of(self, campaign: Campaign) -> dict[str, Any]:
        key = (campaign.id, campaign.spec_sha256, campaign.letter_date)
        with self._lock:
            if key in self._kept:
                return self._kept[key]
        spec, letter = self._documents.letter(campaign)
        first = _first_to(campaign)
        email = render_email(spec, letter, to_email=_route(first, "email", PLACEHOLDER_EMAIL), reference="preview")
        fax = render_fax(spec, letter, to=spec.to[0], fax_number=_route(first, "fax", PLACEHOLDER_FAX))
        kept: dict[str, Any] = {"html": email.message.html or "", "pdf": fax.pdf, "pages": {}}
        kept["page_count"] = fax.page_count
        with self._lock:
            self._kept[key] = kept
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return kept

    def fax_page(self, campaign: Campaign, number: int) -> bytes:
        kept = self.of(campaign)
        if not 1 <= number <= kept["page_count"]:
            raise NotFound(f"the fax has {kept['page_count']} pages: no page {number}")
        with self._lock:
            if number in kept["pages"]:
                return bytes(kept["pages"][number])
        png = _page_png(kept["pdf"], number - 1)
        with self._lock:
            kept["pages"][number] = png
        return png


def _first_to(campaign: Campaign) -> Addressee | None:
    return next((a for a in sorted(campaign.addressees, key=lambda a: a.position) if a.role == "to"), None)


def _route(person: Addressee | None, channel: str, placeholder: str) -> str:
    if person is None:
        return placeholder
    for route in sorted(person.routes, key=lambda r: r.position):
        if route.channel == channel and route.valid and route.value:
            return route.value
    return placeholder


_PDFIUM = threading.Lock()  # pdfium is not thread-safe


def _page_png(pdf: bytes, index: int) -> bytes:
    import pypdfium2

    with _PDFIUM:
        document = pypdfium2.PdfDocument(pdf)
        try:
            image = document[index].render(scale=FAX_PAGE_SCALE).to_pil()
        finally:
            document.close()
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def console_router(ctx: WebContext, access: Access) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    previews = Previews(ctx.documents)

    @router.get("/", response_class=HTMLResponse)
    def campaigns(request: Request, identity: Identity = access.require(Permission.READ)) -> HTMLResponse:
        with reading(ctx.factory) as session:
            rows = campaign_rows(session)
        return page(request, "web/campaigns.html.j2", {"campaigns": rows})

    def show(request: Request, name: str, notice: Notice | None = None, status: int = 200) -> HTMLResponse:
        with reading(ctx.factory) as session:
            try:
                context = campaign_context(session, name)
            except NotFound:
                return page(
                    request,
                    "web/message.html.j2",
                    {"title": "No such campaign", "message": f"There is no campaign named {name!r}."},
                    status=404,
                )
            try:
                context["fax_pages"] = previews.of(context["campaign"])["page_count"]
            except Exception as err:  # a letter that cannot render is shown as such, not as a 500
                context["preview_error"] = f"{type(err).__name__}: {err}"
        return page(request, "web/campaign.html.j2", {**context, "notice": notice}, status=status)

    @router.get("/campaigns/{name}", response_class=HTMLResponse)
    def campaign(request: Request, name: str, identity: Identity = access.require(Permission.READ)) -> HTMLResponse:
        return show(request, name)

    @router.post("/campaigns/{name}/{verb}", response_class=HTMLResponse)
    def act(
        request: Request,
        name: str,
        verb: str,
        reason: str = Form(""),
        identity: Identity = access.require(Permission.CAMPAIGNS),
    ) -> HTMLResponse:
        if verb not in CAMPAIGN_VERBS:
            raise HTTPException(404, f"no campaign action named {verb!r}")
        try:
            done = operations.campaign_action(ctx.factory, verb, name, by=identity, reason=reason, now=ctx.clock())
        except operations.Refused as err:
            return show(request, name, Notice(f"Refused: {err.message}", ok=False), status=err.status)
        return show(request, name, Notice(done.message, ok=True))

    @router.get("/campaigns/{name}/preview/email", response_class=HTMLResponse)
    def email_preview(name: str, identity: Identity = access.require(Permission.READ)) -> HTMLResponse:
        with reading(ctx.factory) as session:
            html = previews.of(_campaign_or_404(session, name))["html"]
        return HTMLResponse(html, headers=PREVIEW_HEADERS)

    @router.get("/campaigns/{name}/preview/fax/{number}.png")
    def fax_preview(
        name: str, number: Annotated[int, Path(ge=1, le=1000)], identity: Identity = access.require(Permission.READ)
    ) -> Response:
        with reading(ctx.factory) as session:
            campaign = _campaign_or_404(session, name)
            try:
                png = previews.fax_page(campaign, number)
            except NotFound as err:
                raise HTTPException(404, str(err)) from err
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})

    return router


def _campaign_or_404(session: Session, name: str) -> Campaign:
    try:
        return get_campaign(session, name)
    except NotFound as err:
        raise HTTPException(404, f"no campaign named {name!r}") from err
