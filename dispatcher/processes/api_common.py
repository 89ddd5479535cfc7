"""What the JSON API's routers share: refusals as JSON, cursors, bounded bodies, the Problem model.

- A refused action (operations.Refused) is answered with its status and ``{"error": message}``; invalid
  campaign input (operations.Invalid) also lists every Problem (``"problems"``).
- **Cursor pagination**: a page is ``{"items": [...], "next": cursor | null}``; the cursor is opaque to
  clients (keyset on id: the last id of the page, encoded); ``?after=<cursor>`` asks for the next page. A
  cursor this API did not give is a 400 naming the ``after`` parameter.
- Bodies are read up to a limit, then 413, before any of them is parsed.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from typing import IO, Any, Generic, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from dispatcher.domain.errors import Problem
from dispatcher.domain.rendering.templates import render
from dispatcher.processes.access import PAGE_HEADERS, wants_page
from dispatcher.processes.operations import Invalid, Refused

MAX_ID = 2**31 - 1  # ids are 32-bit integers on both databases: a larger one is answered 422, never queried
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
CURSOR_PREFIX = "d1:"

Item = TypeVar("Item", bound=BaseModel)


class ProblemOut(BaseModel):
    """One problem with a campaign: where (the addressee or section), the field, what is wrong, a suggestion."""

    file: str
    where: str
    field: str
    message: str
    suggestion: str | None
    severity: str

    @classmethod
    def of(cls, problem: Problem) -> ProblemOut:
        return cls(
            file=problem.file,
            where=problem.where,
            field=problem.field,
            message=problem.message,
            suggestion=problem.suggestion,
            severity=problem.severity,
        )


class ErrorOut(BaseModel):
    error: str
    problems: list[ProblemOut] = []


class Page(BaseModel, Generic[Item]):
    """One page of a list; ``next`` is the cursor of the following page, null on the last one."""

    items: list[Item]
    next: str | None


class ActionIn(BaseModel):
    reason: str | None = None


class DoneOut(BaseModel):
    message: str
    state: str | None


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no identity: send 'Authorization: Bearer <token>'"},
    403: {"model": ErrorOut, "description": "the identity's roles lack the permission"},
}


def refused(status: int, message: str) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorOut, "description": message}}


def install_errors(app: FastAPI) -> None:
    """Answer a Refused action with its status and message (and an Invalid one with its problems)."""

    @app.exception_handler(Refused)
    async def on_refused(request: Request, err: Refused) -> JSONResponse:
        body: dict[str, Any] = {"error": err.message}
        if isinstance(err, Invalid):
            body["problems"] = [ProblemOut.of(p).model_dump() for p in err.problems]
        return JSONResponse(body, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(request: Request, err: RequestValidationError) -> Response:
        """A parameter or body FastAPI could not read (``?limit=5000``, ``/api/deliveries/abc``): 422 in the
        API's own shape, ``{"error": ...}`` naming each parameter and what is wrong with it (a console form
        gets the same sentence on a page)."""
        found = [f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in err.errors()]
        message = "; ".join(found[:20]) or "the request cannot be read"
        if wants_page(request):
            html = render("web/message.html.j2", {"title": "Not valid", "message": message, "identity": None})
            return HTMLResponse(html, status_code=422, headers=PAGE_HEADERS)
        return JSONResponse({"error": message}, status_code=422)


def limit_query() -> Any:
    return Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=f"items per page (at most {MAX_LIMIT})")


def after_query() -> Any:
    return Query(None, max_length=100, description="the 'next' cursor of the previous page")


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The id a cursor stands for (0: the first page); 400 naming ``after`` for one this API did not give."""
    if cursor is None or cursor == "":
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        text = ""
    number = text.removeprefix(CURSOR_PREFIX)
    if not text.startswith(CURSOR_PREFIX) or not number.isdigit() or not number.isascii() or int(number) > MAX_ID:
        raise Refused(
            f"the cursor after={cursor[:40]!r} is malformed: pass the 'next' value of the previous page", status=400
        )
    return int(number)


def next_cursor(ids: list[int], limit: int) -> str | None:
    """The cursor after a page of ``ids`` that asked for ``limit`` + 1 rows (the extra one says there is more)."""
    return encode_cursor(ids[limit - 1]) if len(ids) > limit else None


async def bounded_body(request: Request, *, limit: int, what: str) -> bytes:
    """The body, or 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refused(f"the {what} is larger than {limit} bytes", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(f"the {what} is larger than {limit} bytes", status=413)
    return bytes(body)


async def spooled_body(request: Request, *, limit: int, what: str) -> IO[bytes]:
    """The body in a temporary file (in memory up to 1 MiB), or 413 once it exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refused(f"the {what} is larger than {limit} bytes", status=413)
    spool = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115 (the caller closes it)
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(f"the {what} is larger than {limit} bytes", status=413)
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool
