"""The console: server-rendered pages of `dispatch web` (templates/web/*.html.j2), behind a login.

Pages are Jinja2 with autoescape: a campaign, addressee or supporter name with markup is shown as text.
Every page reads the ledger in a worker thread (``def`` routes), never on the event loop.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select

from dispatcher.domain.accounts import Identity, Permission
from dispatcher.domain.db import reading
from dispatcher.domain.models import Campaign, Delivery
from dispatcher.domain.rendering.templates import render
from dispatcher.processes.access import PAGE_HEADERS, Access
from dispatcher.processes.web_context import WebContext


def page(request: Request, template: str, context: dict[str, Any], *, status: int = 200) -> HTMLResponse:
    """A console page: the identity and the session's form token go to every template (the frame's logout form)."""
    identity = getattr(request.state, "identity", None)
    csrf = getattr(request.state, "csrf", "")
    html = render(template, {"identity": identity, "csrf": csrf, **context})
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def console_router(ctx: WebContext, access: Access) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    def campaigns(request: Request, identity: Identity = access.require(Permission.READ)) -> HTMLResponse:
        with reading(ctx.factory) as session:
            counts: dict[int, Counter[str]] = {}
            for campaign_id, state, n in session.execute(
                select(Delivery.campaign_id, Delivery.state, func.count()).group_by(
                    Delivery.campaign_id, Delivery.state
                )
            ):
                counts.setdefault(campaign_id, Counter())[state] = n
            rows = [
                {
                    "name": c.name,
                    "title": c.title,
                    "status": c.status,
                    "states": sorted(counts.get(c.id, Counter()).items()),
                    "total": sum(counts.get(c.id, Counter()).values()),
                }
                for c in session.scalars(select(Campaign).order_by(Campaign.id.desc()))
            ]
        return page(request, "web/campaigns.html.j2", {"campaigns": rows})

    return router
