"""The console's forms (see console.py for what every console page shares): create or edit a draft campaign,
and upload a supporter list CSV. Both are for managers (the campaigns permission).

The campaign form's fields become a campaign file's content (campaign_input.campaign_data_from_form): the
letter is inline, the addressees a TOML textarea of [[to]] and [[cc]] tables; nothing names a file on the
server. Problems are shown beside the field they concern, and the form keeps what was typed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from dispatcher.domain.accounts import Identity, Permission
from dispatcher.domain.db import reading
from dispatcher.domain.models import Campaign, SupporterList
from dispatcher.domain.states import CampaignStatus
from dispatcher.domain.supporter_lists import list_counts
from dispatcher.processes import campaign_input, operations
from dispatcher.processes.access import Access
from dispatcher.processes.api_lists import CSV_MAX_BYTES
from dispatcher.processes.console import Notice, page
from dispatcher.processes.web_context import WebContext

EXAMPLE_ADDRESSEES = """\
[[to]]
name = "Xi Jinping"
title = "President"
salutation = "Dear President Xi,"
country = "CN"
timezone = "Asia/Shanghai"
fax = ["+86 10 6551 2381"]
email = []

[[cc]]
name = "Wang Yi"
title = "Minister of Foreign Affairs"
country = "CN"
timezone = "Asia/Shanghai"
fax = ["+86 10 6596 1808"]
"""
DEFAULTS = {
    "campaign.route_policy": "first-success",
    "campaign.route_order": "fax-first",
    "campaign.urgency": "urgent",
    "schedule.mode": "now",
    "sender.country": "US",
    "supporters.copies": "after-delivery",
    "addressees": EXAMPLE_ADDRESSEES,
}
MAX_FORM_FIELD = 200_000  # characters in one field (a letter is far shorter)


def forms_router(ctx: WebContext, access: Access) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def lists() -> list[str]:
        with reading(ctx.factory) as session:
            return list(session.scalars(select(SupporterList.name).order_by(SupporterList.name)))

    def form_page(
        request: Request,
        fields: dict[str, str],
        *,
        editing: str | None,
        problems: dict[str, list[str]] | None = None,
        notice: Notice | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        context: dict[str, Any] = {
            "fields": {**DEFAULTS, **fields},
            "problems": problems or {},
            "editing": editing,
            "lists": lists(),
            "notice": notice,
        }
        return page(request, "web/campaign_form.html.j2", context, status=status)

    @router.get("/new-campaign", response_class=HTMLResponse)
    def new(request: Request, identity: Identity = access.require(Permission.CAMPAIGNS)) -> HTMLResponse:
        return form_page(request, {}, editing=None)

    @router.get("/campaigns/{name}/edit", response_class=HTMLResponse)
    def edit(request: Request, name: str, identity: Identity = access.require(Permission.CAMPAIGNS)) -> HTMLResponse:
        with reading(ctx.factory) as session:
            campaign = session.scalar(select(Campaign).where(Campaign.name == name))
            if campaign is None:
                return page(
                    request,
                    "web/message.html.j2",
                    {"title": "No such campaign", "message": f"There is no campaign named {name!r}."},
                    status=404,
                )
            if campaign.status != CampaignStatus.DRAFT:
                return page(
                    request,
                    "web/message.html.j2",
                    {"title": "Not a draft", "message": f"{name} is {campaign.status}: only a draft is edited."},
                    status=409,
                )
            fields = campaign_input.form_from_campaign(campaign)
        return form_page(request, fields, editing=name)

    async def submit(request: Request, identity: Identity, editing: str | None) -> Response:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}
        too_long = {
            k: [f"{len(v)} characters: at most {MAX_FORM_FIELD}"] for k, v in fields.items() if len(v) > MAX_FORM_FIELD
        }
        if too_long:
            return await run_in_threadpool(form_page, request, {}, editing=editing, problems=too_long, status=422)
        try:
            done = await run_in_threadpool(
                campaign_input.create_campaign_from_form,
                ctx.factory,
                fields,
                by=identity,
                now=ctx.clock(),
                editing=editing,
            )
        except campaign_input.FormRefused as err:
            notice = Notice(f"Not saved: {err.message}", ok=False)
            return await run_in_threadpool(
                form_page, request, fields, editing=editing, problems=err.problems, notice=notice, status=422
            )
        except operations.Refused as err:
            notice = Notice(f"Not saved: {err.message}", ok=False)
            return await run_in_threadpool(
                form_page, request, fields, editing=editing, notice=notice, status=err.status
            )
        name = editing or fields.get("campaign.name", "").strip()
        del done
        return RedirectResponse(f"/campaigns/{name}", status_code=303)

    @router.post("/new-campaign")
    async def create(request: Request, identity: Identity = access.require(Permission.CAMPAIGNS)) -> Response:
        return await submit(request, identity, None)

    @router.post("/campaigns/{name}/edit")
    async def save(request: Request, name: str, identity: Identity = access.require(Permission.CAMPAIGNS)) -> Response:
        return await submit(request, identity, name)

    def upload_page(
        request: Request, notice: Notice | None = None, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        with reading(ctx.factory) as session:
            counts = list_counts(session)
        defaults: dict[str, Any] = {"result": None, "rejected": [], "list_name": ""}
        return page(
            request,
            "web/list_upload.html.j2",
            {**defaults, **context, "lists": counts, "notice": notice},
            status=status,
        )

    @router.get("/lists/upload", response_class=HTMLResponse)
    def upload_form(request: Request, identity: Identity = access.require(Permission.CAMPAIGNS)) -> HTMLResponse:
        return upload_page(request)

    @router.post("/lists/upload", response_class=HTMLResponse)
    def upload(
        request: Request,
        list_name: str = Form(""),
        file: UploadFile = File(...),
        identity: Identity = access.require(Permission.CAMPAIGNS),
    ) -> HTMLResponse:
        if file.size is not None and file.size > CSV_MAX_BYTES:  # as the API's import refuses it
            notice = Notice(f"Nothing was imported: the file is larger than {CSV_MAX_BYTES // 2**20} MiB", ok=False)
            return upload_page(request, notice, status=413, list_name=list_name)
        try:
            result, rejected = campaign_input.import_list_upload(
                ctx.factory, list_name, file.file, by=identity, now=ctx.clock()
            )
        except operations.Refused as err:
            notice = Notice(f"Nothing was imported: {err.message}", ok=False)
            return upload_page(request, notice, status=err.status, list_name=list_name)
        return upload_page(
            request, Notice(result.summary(), ok=True), result=result, rejected=rejected, list_name=list_name
        )

    return router
