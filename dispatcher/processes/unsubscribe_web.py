"""The public unsubscribe page of `dispatch web`: ``GET`` and ``POST /unsubscribe/<token>``, no login.

- ``GET`` shows a page with a button (a POST form to the same URL); it never unsubscribes, because mail
  scanners and link previews follow links.
- ``POST`` unsubscribes (dispatcher/domain/unsubscribe.py) and answers 200 with a confirmation page, the
  second time too ("already unsubscribed"). It takes the RFC 8058 one-click request, the body
  ``List-Unsubscribe=One-Click`` as multipart/form-data or application/x-www-form-urlencoded (source
  ``one-click``), or the page's button, ``confirm=unsubscribe`` (source ``unsubscribe-page``); any other
  body is a 400 page naming what is expected, and a body over 8 KiB a 413.
- A token that is malformed, altered, or names no supporter copy gets a 404 page saying the link is not
  valid; without DISPATCH_SECRET_KEY no token can be checked: a 503 page, and an ERROR naming the variable.

Pages show at most the masked address (``a***@example.org``) and the sending organisation; logs name the
copy by its delivery id, never the address or the token (the access log's copy of the path is redacted by
dispatcher/processes/logs.py). Ledger work runs in worker threads; a locked ledger is the app's 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message

from dispatcher.domain.db import reading, transaction
from dispatcher.domain.rendering.templates import UNSUBSCRIBE_PAGE, render
from dispatcher.domain.unsubscribe import CopyLink, Outcome, copy_link, unsubscribe, verify

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024  # a one-click POST is 26 bytes; the page's button sends fewer
ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058 3.1
BUTTON = ("confirm", "unsubscribe")  # the page's own form
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never pass it on
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'",
}
NOT_VALID = (
    "This unsubscribe link is not valid",
    "It may have been cut short or changed on its way here. Open the link from the email again, as it is, "
    "or reply to the email and ask to receive no more copies.",
)


def unsubscribe_router(
    factory: sessionmaker[Session], secret: bytes | None, clock: Callable[[], datetime]
) -> APIRouter:
    router = APIRouter()

    @router.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def show(token: str) -> HTMLResponse:  # a plain def: FastAPI runs it in a worker thread
        delivery_id = _delivery_id(secret, token)
        if isinstance(delivery_id, HTMLResponse):
            return delivery_id
        with reading(factory) as session:
            link = copy_link(session, delivery_id)
        if link is None:
            return _not_valid()
        if link.suppressed:
            return _page(
                200,
                "Unsubscribed",
                [f"{link.masked} is already unsubscribed: it receives no more copies of our letters."],
            )
        return _page(
            200,
            "Unsubscribe",
            [
                f"{link.masked} receives a copy of each letter {_sender(link)} sends on your behalf.",
                "Press the button to receive no more copies.",
            ],
            confirm="Unsubscribe",
        )

    @router.post("/unsubscribe/{token}", response_class=HTMLResponse)
    async def confirm(token: str, request: Request) -> HTMLResponse:
        delivery_id = _delivery_id(secret, token)
        if isinstance(delivery_id, HTMLResponse):
            return delivery_id
        body = await _bounded_body(request)
        if body is None:
            return _page(413, "Request too large", ["An unsubscribe request is a few bytes; this one was refused."])
        source = await _source(request, body)
        if source is None:
            return _page(
                400,
                "Not an unsubscribe request",
                [
                    "This address takes the one-click request List-Unsubscribe=One-Click (RFC 8058) "
                    "or the button on its page, sent as a form.",
                ],
            )
        outcome, link = await run_in_threadpool(_unsubscribe, factory, delivery_id, clock(), source)
        if outcome is Outcome.NOT_A_COPY or link is None:
            return _not_valid()
        log.info("unsubscribe: copy %s: %s (%s)", delivery_id, outcome, source)
        if outcome is Outcome.ALREADY:
            return _page(200, "Unsubscribed", [f"You were already unsubscribed: {link.masked} receives no copies."])
        return _page(
            200,
            "Unsubscribed",
            [f"You are unsubscribed: {link.masked} will receive no more copies of letters from {_sender(link)}."],
        )

    return router


def _sender(link: CopyLink) -> str:
    return link.organisation or "this campaign's organisation"


def _unsubscribe(
    factory: sessionmaker[Session], delivery_id: int, now: datetime, source: str
) -> tuple[Outcome, CopyLink | None]:
    with transaction(factory) as session:
        outcome = unsubscribe(session, delivery_id, now=now, source=source)
        return outcome, copy_link(session, delivery_id)


def _delivery_id(secret: bytes | None, token: str) -> int | HTMLResponse:
    """The copy the token names, or the page to answer instead."""
    if secret is None:
        log.error("unsubscribe: a link was refused: DISPATCH_SECRET_KEY is not set for `dispatch web`")
        return _page(
            503,
            "Unsubscribing is unavailable",
            ["Your request cannot be handled right now. Please try again later, or reply to the email."],
        )
    delivery_id = verify(secret, token)
    if delivery_id is None:
        log.warning("unsubscribe: a link that is not valid was refused")
        return _not_valid()
    return delivery_id


def _not_valid() -> HTMLResponse:
    return _page(404, NOT_VALID[0], [NOT_VALID[1]])


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or None as soon as it is known to exceed MAX_BODY_BYTES."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


async def _source(request: Request, body: bytes) -> str | None:
    """``one-click`` or ``unsubscribe-page`` by the form's fields; None for anything else."""
    form = await _form(request, body)
    if form is None:
        return None
    if form.get(ONE_CLICK[0]) == ONE_CLICK[1]:
        return "one-click"
    if form.get(BUTTON[0]) == BUTTON[1]:
        return "unsubscribe-page"
    return None


async def _form(request: Request, body: bytes) -> FormData | None:
    """The body read as a form (multipart or urlencoded; other types give no fields); None if unreadable."""

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=0, max_fields=16)
    except (MultiPartException, StarletteHTTPException, ValueError):
        return None


def _page(status: int, title: str, paragraphs: Sequence[str], *, confirm: str | None = None) -> HTMLResponse:
    html = render(UNSUBSCRIBE_PAGE, {"title": title, "paragraphs": list(paragraphs), "confirm": confirm})
    return HTMLResponse(html, status_code=status, headers=HEADERS)
