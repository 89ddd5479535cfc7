"""`dispatch web`: status webhooks, fax documents for providers, the unsubscribe page, and a small read API.

Webhooks are verified on the raw body by the gateway (signature, timestamp tolerance) before
anything is recorded; a refused webhook changes nothing and is logged without personal data.

Blocking work (verifying, the ledger) runs in worker threads, never on the event loop: a locked ledger
delays only the requests that need it. Reads take no write lock (``db.reading``); a request whose
ledger stays locked past the busy timeout, or is unreachable, gets 503 with Retry-After.
"""

from __future__ import annotations

import logging
from collections import Counter

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from dispatcher.domain.accounts import Identity, Permission
from dispatcher.domain.db import reading, transaction
from dispatcher.domain.matching import UnusableEvent, find_delivery, recordable
from dispatcher.domain.media import MediaTokenError, read_token
from dispatcher.domain.messages import StatusEvent, WebhookRequest
from dispatcher.domain.models import Delivery
from dispatcher.domain.outcomes import apply_status
from dispatcher.domain.rendering.templates import static_directory
from dispatcher.domain.settings import get_settings
from dispatcher.processes import console, console_forms, console_log
from dispatcher.processes.access import Access, install
from dispatcher.processes.api_campaigns import campaign_router
from dispatcher.processes.api_common import install_errors
from dispatcher.processes.api_deliveries import delivery_router
from dispatcher.processes.api_lists import list_router
from dispatcher.processes.health import health_router
from dispatcher.processes.metrics import metrics_router
from dispatcher.processes.unsubscribe_web import unsubscribe_router
from dispatcher.processes.web_context import WebContext
from workers.gateways.base import Gateway
from workers.gateways.errors import WebhookError

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5  # what a 503 asks the caller to wait when the ledger is locked or unreachable


def create_app(ctx: WebContext) -> FastAPI:
    # the schema and its docs page need an identity too (any role): they map what the API holds
    app = FastAPI(title="campaign-dispatch", openapi_url=None, docs_url=None, redoc_url=None)
    access = Access(ctx.factory, ctx.clock, ctx.secure_cookies)

    app.add_exception_handler(OperationalError, _ledger_unavailable)
    app.add_exception_handler(DataError, _ledger_refused)
    app.add_exception_handler(IntegrityError, _ledger_refused)
    app.include_router(unsubscribe_router(ctx.factory, ctx.secret, ctx.clock))  # public: no login
    install(app, access)  # /login, /logout, 401/403 answers
    app.include_router(console_forms.forms_router(ctx, access))
    app.include_router(console.console_router(ctx, access))
    app.include_router(console_log.log_router(ctx, access))
    install_errors(app)  # the JSON API: refusals as {"error": ...}
    app.include_router(campaign_router(ctx, access))
    app.include_router(delivery_router(ctx, access))
    app.include_router(list_router(ctx, access))
    app.mount("/static", StaticFiles(directory=static_directory()), name="static")

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(identity: Identity = access.require(Permission.READ)) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/api/docs", include_in_schema=False)
    def docs(identity: Identity = access.require(Permission.READ)) -> HTMLResponse:
        # Swagger UI's page; its script and stylesheet come from FastAPI's default CDN
        return get_swagger_ui_html(openapi_url="/openapi.json", title="campaign-dispatch API")

    settings = ctx.settings or get_settings()
    app.include_router(health_router(ctx.factory, settings, gateways=ctx.gateways))  # public: probes
    app.include_router(metrics_router(ctx.factory, settings, [access.require(Permission.READ)], gateways=ctx.gateways))

    @app.post("/webhooks/{name}")
    async def webhook(name: str, request: Request) -> JSONResponse:
        gateway = ctx.gateways.get(name)
        if gateway is None:
            raise HTTPException(404, f"no gateway named {name!r}")
        body = await _bounded_body(request, limit=gateway.max_webhook_bytes)
        raw = WebhookRequest(
            method=request.method,
            url=str(request.url),
            body=body,
            received_at=ctx.clock(),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        # verifying and recording block (signature checks, the ledger's locks): a worker thread does it
        return await run_in_threadpool(handle_webhook, ctx, gateway, raw)

    @app.get("/media/{token}.pdf")
    def media(token: str) -> Response:
        if ctx.secret is None:
            raise HTTPException(404, "document URLs are not enabled (DISPATCH_SECRET_KEY is unset)")
        try:
            delivery_id = read_token(token, secret=ctx.secret, now=ctx.clock())
        except MediaTokenError as err:
            raise HTTPException(403, str(err)) from err
        return Response(_fax_pdf(ctx, delivery_id), media_type="application/pdf")

    return app


async def _bounded_body(request: Request, *, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to exceed ``limit`` (the gateway's max_webhook_bytes)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, "webhook body too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, "webhook body too large")
    return bytes(body)


def handle_webhook(ctx: WebContext, gateway: Gateway, raw: WebhookRequest) -> JSONResponse:
    """Verify and decode the webhook, then record its events: 4xx when refused or unmatched."""
    try:
        events = [recordable(event) for event in gateway.parse_webhook(raw)]
    except (WebhookError, UnusableEvent) as err:
        log.warning("webhook for %s refused: %s", gateway.name, type(err).__name__)
        status = err.status_code if isinstance(err, WebhookError) else 400
        return JSONResponse({"error": str(err)}, status_code=status)
    counts = apply_events(ctx, gateway, events)
    status = 404 if events and counts.get("unmatched") == len(events) else 200
    return JSONResponse(dict(counts), status_code=status)


async def _ledger_unavailable(request: Request, err: Exception) -> JSONResponse:
    """503 with Retry-After when the ledger is locked or unreachable: the provider (or client) retries.
    Only the error's class is logged: the statement and its parameters may hold personal data."""
    cause = err.orig if isinstance(err, OperationalError) else err
    log.warning("ledger unavailable for %s %s: %s", request.method, request.url.path, type(cause).__name__)
    return JSONResponse(
        {"error": "the ledger is busy or unavailable; try again shortly"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _ledger_refused(request: Request, err: Exception) -> JSONResponse:
    """A value the ledger refused (too long, malformed: DataError, 422) or a conflict with what it holds
    (IntegrityError, 409), which input checks should have caught: a clear refusal, never a 500. Nothing
    of the request was kept (its transaction rolled back); only the error's class is logged and shown."""
    cause = err.orig if isinstance(err, DataError | IntegrityError) else err
    log.error("the ledger refused %s %s: %s", request.method, request.url.path, type(cause).__name__)
    status = 409 if isinstance(err, IntegrityError) else 422
    return JSONResponse(
        {"error": f"the ledger refused a value of this request ({type(cause).__name__}); nothing was kept"},
        status_code=status,
    )


def apply_events(ctx: WebContext, gateway: Gateway, events: list[StatusEvent]) -> Counter[str]:
    """Each event in its own transaction: one unknown id does not undo the others."""
    counts: Counter[str] = Counter()
    for event in events:
        with transaction(ctx.factory) as session:
            delivery = find_delivery(session, gateway=gateway.name, event=event)
            if delivery is None:
                counts["unmatched"] += 1
                log.warning("%s webhook for an unknown message (%s)", gateway.name, event.kind)
                continue
            counts[
                apply_status(
                    session, delivery, event, actor=f"webhook:{gateway.name}", now=ctx.clock(), policy=ctx.retry
                )
            ] += 1
    return counts


def _fax_pdf(ctx: WebContext, delivery_id: int) -> bytes:
    with reading(ctx.factory) as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.channel != "fax":
            raise HTTPException(404, "no such document")
        document = ctx.documents.fax_document(delivery)
        if delivery.document_sha256 and delivery.document_sha256 != document.sha256:
            log.error("document for delivery %s no longer matches its recorded hash", delivery_id)
            raise HTTPException(409, "document changed since it was sent")
        return document.pdf
