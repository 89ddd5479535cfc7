"""The supporter lists API: the lists with their counts, one list's report, and a CSV import into a list.

The import reads the columns `dispatch supporters import` reads (with the same ``map`` of other headers
and ``encoding``), in one transaction; its answer gives counts and the rejected rows by line, kind and
reason, never an address or a name. The body (``text/csv``) is at most 50 MiB.
"""

from __future__ import annotations

from datetime import datetime
from typing import BinaryIO, cast

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import select

from dispatcher.domain.accounts import Identity, Permission
from dispatcher.domain.db import reading
from dispatcher.domain.models import Campaign, CampaignList, SupporterList
from dispatcher.domain.supporter_import import SupporterFileError, parse_mapping
from dispatcher.domain.supporter_lists import list_counts
from dispatcher.processes import campaign_input
from dispatcher.processes.access import Access
from dispatcher.processes.api_common import ERRORS, refused, spooled_body
from dispatcher.processes.operations import Refused
from dispatcher.processes.web_context import WebContext

CSV_MAX_BYTES = 50 * 1024 * 1024
LIST = Path(description="the list's name", max_length=200)
CSV_BODY = {
    "required": True,
    "description": "the list as CSV (a header, then one row per supporter), at most 50 MiB",
    "content": {"text/csv": {"schema": {"type": "string"}}},
}


class ListOut(BaseModel):
    name: str
    members: int
    consenting: int


class ListReport(ListOut):
    created_at: datetime
    updated_at: datetime
    campaigns: list[str]  # the campaigns that copy it


class RejectedRow(BaseModel):
    line: int
    kind: str
    column: str
    reason: str


class ImportOut(BaseModel):
    name: str  # the list's
    created: bool
    added: int
    updated: int
    unchanged: int
    withdrawn: int
    rejected: dict[str, int]  # by kind
    rejected_rows: list[RejectedRow]  # the first 1,000, by line
    summary: str


def list_router(ctx: WebContext, access: Access) -> APIRouter:
    router = APIRouter(prefix="/api/lists", tags=["supporter lists"], responses=ERRORS)

    @router.get("", response_model=list[ListOut])
    def lists(identity: Identity = access.require(Permission.READ)) -> list[ListOut]:
        with reading(ctx.factory) as session:
            return [ListOut(name=c.name, members=c.members, consenting=c.consenting) for c in list_counts(session)]

    @router.get("/{name}", response_model=ListReport, responses=refused(404, "no list of that name"))
    def report(name: str = LIST, identity: Identity = access.require(Permission.READ)) -> ListReport:
        with reading(ctx.factory) as session:
            counts = {c.name: c for c in list_counts(session)}
            found = counts.get(name)
            row = session.scalar(select(SupporterList).where(SupporterList.name == name)) if found else None
            if found is None or row is None:
                raise Refused(f"no supporter list named {name!r}", status=404)
            campaigns = session.scalars(
                select(Campaign.name)
                .join(CampaignList, CampaignList.campaign_id == Campaign.id)
                .where(CampaignList.list_id == row.id)
                .order_by(Campaign.name)
            )
            return ListReport(
                name=name,
                members=found.members,
                consenting=found.consenting,
                created_at=row.created_at,
                updated_at=row.updated_at,
                campaigns=list(campaigns),
            )

    @router.post(
        "/{name}/import",
        response_model=ImportOut,
        openapi_extra={"requestBody": CSV_BODY},
        responses={**refused(413, "larger than 50 MiB"), **refused(422, "the file cannot be imported")},
    )
    async def import_csv(
        request: Request,
        name: str = LIST,
        encoding: str | None = Query(None, max_length=40, description="the file's encoding (default UTF-8)"),
        map: str | None = Query(
            None, max_length=2000, description='columns of other headers: "E-Mail Adresse=email,Vorname=first_name"'
        ),
        identity: Identity = access.require(Permission.CAMPAIGNS),
    ) -> ImportOut:
        try:
            mapping = parse_mapping(map) if map else None
        except SupporterFileError as err:
            raise Refused(str(err), status=422) from None
        body = await spooled_body(request, limit=CSV_MAX_BYTES, what="CSV")
        try:
            done = await run_in_threadpool(
                campaign_input.import_list,
                ctx.factory,
                name,
                cast(BinaryIO, body),
                by=identity,
                now=ctx.clock(),
                source="the uploaded CSV",
                encoding=encoding,
                mapping=mapping,
            )
        finally:
            body.close()
        result = done.result
        return ImportOut(
            name=result.list_name,
            created=result.created,
            added=result.added,
            updated=result.updated,
            unchanged=result.unchanged,
            withdrawn=result.withdrawn,
            rejected=dict(result.rejected),
            rejected_rows=[
                RejectedRow(line=r.line, kind=r.kind, column=r.column, reason=r.reason) for r in done.rejected
            ],
            summary=result.summary(),
        )

    return router
