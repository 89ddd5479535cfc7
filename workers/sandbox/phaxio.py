"""A local emulator of the Phaxio v2.1 fax API: send, get, list, and signed send webhooks.

Shapes follow workers/gateways/fax/phaxio.py's sources (phaxio-ruby cassettes, phaxio.com docs):
Basic auth with the API key and secret; ``{"success", "message", "data"}`` bodies; tags echoed; send
webhooks as multipart ``fax`` + ``event_type`` signed with ``X-Phaxio-Signature``. Scripted outcomes
come from :class:`SandboxState`; every accepted fax is recorded in its oracle with our reference.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import itertools
import json
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile
from starlette.types import Receive, Scope, Send

from workers.gateways.fax.phaxio import signature
from workers.sandbox.control import control_router
from workers.sandbox.core import SandboxState

log = logging.getLogger(__name__)

API = "/v2.1"
FIRST_ID = 323034811  # the id in phaxio-ruby's create cassette
WEBHOOK_TIMEOUT = httpx.Timeout(5.0)
WEBHOOK_ATTEMPTS = 3

# outcome -> (error_type, error_id, error_message) of the failed call: lineError 17 and 112 from
# https://www.phaxio.com/docs/errorMessages; the copy of that page we could read ends its faxError ids at
# 12, so faxError 14 is the number Sinch gives the same message (its Phaxio-derived list).
FAILURES: dict[str, tuple[str, int, str]] = {
    "busy": ("lineError", 17, "Busy"),
    "no_answer": ("lineError", 112, "No answer"),
    "no_fax_tone": ("faxError", 14, "Timed out waiting for initial communication"),
    "media_fetch_failed": ("documentConversionError", 54, "Could not access the url you provided."),
}


class ConnectionDropped(Exception):
    """Raised inside a half-sent response so the server closes the connection (scripted ``drop``)."""


class DropResponse(Response):
    """Starts a response with a Content-Length, sends part of it, then drops the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"75")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"success":tr', "more_body": True})
        raise ConnectionDropped("sandbox: scripted drop after the fax was accepted")


class SwallowDrops:
    """Outermost middleware: a scripted drop ends the request; uvicorn closes the half-sent response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except ConnectionDropped:
            log.debug("sandbox: connection dropped on purpose")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _fail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"success": False, "message": message}, status_code=status, headers=headers)


class PhaxioEmulator:
    """The state behind the routes: faxes by id, webhook tasks in flight."""

    def __init__(self, state: SandboxState, *, api_key: str, api_secret: str, callback_token: str) -> None:
        self.state = state
        self._credentials = f"{api_key}:{api_secret}".encode()
        self._callback_token = callback_token
        self._ids = itertools.count(FIRST_ID)
        self.faxes: dict[int, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            given = base64.b64decode(token, validate=True) if scheme.lower() == "basic" else b""
        except (binascii.Error, ValueError):
            given = b""
        return hmac.compare_digest(given, self._credentials)

    async def create(self, request: Request) -> Response:
        if not self.authorized(request):
            return _fail(401, "The api key or secret you provided is invalid")
        form = await request.form()
        to = str(form.get("to") or form.get("to[]") or "")
        upload = form.get("file") or form.get("file[]")
        if not to or not (isinstance(upload, UploadFile) or form.get("content_url")):
            return _fail(422, "You must provide a 'to' number and at least one file or content_url")
        pdf = await upload.read() if isinstance(upload, UploadFile) else b""
        await asyncio.sleep(self.state.latency)
        return self._answer(self.state.next_outcome(to), to, form, pdf)

    def _answer(self, outcome: str, to: str, form: FormData, pdf: bytes) -> Response:
        if outcome == "rate_limited":
            return _fail(429, "Rate limit exceeded", {"Retry-After": str(self.state.retry_after)})
        if outcome == "server_error":
            return _fail(500, "An internal server error occurred")
        if outcome == "unauthorized":
            return _fail(401, "The api key or secret you provided is invalid")
        if outcome == "invalid_number":
            return _fail(422, "Phone number is not formatted correctly or invalid")
        fax = self._accept(outcome, to, form, pdf)
        if outcome == "bad_gateway":
            return Response(
                "<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502, media_type="text/html"
            )
        if outcome == "drop":
            return DropResponse()
        return JSONResponse({"success": True, "message": "Fax queued for sending", "data": {"id": fax["id"]}})

    def _accept(self, outcome: str, to: str, form: FormData, pdf: bytes) -> dict[str, Any]:
        tags = {
            key[4:-1]: str(value) for key, value in form.multi_items() if key.startswith("tag[") and key.endswith("]")
        }
        fax = _fax_object(
            next(self._ids),
            to,
            caller_id=form.get("caller_id"),
            tags=tags,
            pages=max(1, pdf.count(b"/Type /Page") - pdf.count(b"/Type /Pages")),
        )
        self.faxes[fax["id"]] = fax
        self.state.record(provider_id=str(fax["id"]), reference=tags.get("reference"), destination=to, outcome=outcome)
        callback_url = form.get("callback_url")
        task = asyncio.create_task(self._lifecycle(fax, outcome, str(callback_url) if callback_url else None))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fax

    async def _lifecycle(self, fax: dict[str, Any], outcome: str, callback_url: str | None) -> None:
        """queued -> inprogress (transmitting_page) -> success | failure (fax_completed)."""
        recipient = fax["recipients"][0]
        await asyncio.sleep(self.state.webhook_delay)
        fax["status"], recipient["status"] = "inprogress", "callactive"
        if outcome not in FAILURES and callback_url:
            await self._webhook(
                callback_url,
                fax,
                "transmitting_page",
                {"page": "1", "recipient_phone_number": recipient["phone_number"]},
            )
        await asyncio.sleep(self.state.webhook_delay)
        _complete(fax, FAILURES.get(outcome))
        if callback_url:
            await self._webhook(callback_url, fax, "fax_completed", {})

    async def _webhook(self, url: str, fax: dict[str, Any], event_type: str, extra: dict[str, str]) -> None:
        fields = {"fax": json.dumps(fax), "event_type": event_type, **extra}
        headers = {"X-Phaxio-Signature": signature(self._callback_token, url, fields.items())}
        files = {name: (None, value) for name, value in fields.items()}  # multipart, no file parts
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as client:
            for _ in range(WEBHOOK_ATTEMPTS):
                try:
                    response = await client.post(url, files=files, headers=headers)
                    if response.status_code == 200:
                        return
                except httpx.HTTPError as err:
                    log.debug("phaxio sandbox: webhook failed (%s)", type(err).__name__)
                await asyncio.sleep(self.state.webhook_delay)

    def get(self, request: Request, fax_id: str) -> Response:
        if not self.authorized(request):
            return _fail(401, "The api key or secret you provided is invalid")
        fax = self.faxes.get(int(fax_id)) if fax_id.isdigit() else None
        if fax is None:
            return _fail(404, "Fax not found")
        return JSONResponse({"success": True, "message": "Metadata for fax", "data": fax})

    def account_status(self, request: Request) -> Response:
        """``GET /v2.1/account/status`` (the credential check), as in phaxio-ruby's ``account/get.yml``."""
        if not self.authorized(request):
            return _fail(401, "The api key or secret you provided is invalid")
        sent = len(self.faxes)
        data = {"balance": 1076, "faxes_today": {"sent": sent, "received": 0}}
        data["faxes_this_month"] = {"sent": sent, "received": 0}
        return JSONResponse({"success": True, "message": "Account status retrieved successfully", "data": data})

    def list_faxes(self, request: Request) -> Response:
        if not self.authorized(request):
            return _fail(401, "The api key or secret you provided is invalid")
        query = request.query_params
        faxes = [fax for fax in sorted(self.faxes.values(), key=lambda f: -f["id"]) if _matches(fax, query)]
        per_page = min(max(int(query.get("per_page", "25")), 1), 1000)
        page = max(int(query.get("page", "1")), 1)
        data = faxes[(page - 1) * per_page : page * per_page]
        return JSONResponse(
            {
                "success": True,
                "message": "Retrieved faxes successfully",
                "data": data,
                "paging": {"total": len(faxes), "per_page": per_page, "page": page},
            }
        )


def _matches(fax: dict[str, Any], query: Any) -> bool:
    for key, value in query.multi_items():
        if key.startswith("tag[") and key.endswith("]") and fax["tags"].get(key[4:-1]) != value:
            return False
    if query.get("direction") and fax["direction"] != query["direction"]:
        return False
    if query.get("status") and fax["status"] != query["status"]:
        return False
    phone = query.get("phone_number")
    return not phone or fax["recipients"][0]["phone_number"] == phone


def _fax_object(fax_id: int, to: str, *, caller_id: Any, tags: dict[str, str], pages: int) -> dict[str, Any]:
    """A sent Fax object as GET /v2.1/faxes/{id} returns it (phaxio-ruby ``fax/get.yml``)."""
    return {
        "id": fax_id,
        "direction": "sent",
        "num_pages": pages,
        "status": "queued",
        "is_test": True,
        "created_at": _now(),
        "caller_id": str(caller_id) if caller_id else None,
        "from_number": None,
        "completed_at": None,
        "caller_name": None,
        "cost": 0,
        "tags": tags,
        "recipients": [
            {
                "phone_number": to,
                "status": "queued",
                "retry_count": 0,
                "completed_at": None,
                "bitrate": None,
                "resolution": None,
                "error_type": None,
                "error_id": None,
                "error_message": None,
            }
        ],
        "to_number": None,
        "error_id": None,
        "error_type": None,
        "error_message": None,
        "barcodes": [],
    }


def _complete(fax: dict[str, Any], failure: tuple[str, int, str] | None) -> None:
    recipient = fax["recipients"][0]
    fax["completed_at"] = recipient["completed_at"] = _now()
    if failure is None:
        fax["status"] = recipient["status"] = "success"
        recipient.update(bitrate=14400, resolution=8040)
        fax["cost"] = 7 * fax["num_pages"]
        return
    error_type, error_id, message = failure
    fax["status"] = recipient["status"] = "failure"
    for target in (fax, recipient):
        target.update(error_type=error_type, error_id=error_id, error_message=message)


def create_app(state: SandboxState, *, api_key: str, api_secret: str, callback_token: str) -> FastAPI:
    """The emulator as an ASGI app; ``callback_token`` signs its webhooks as Phaxio's would."""
    emulator = PhaxioEmulator(state, api_key=api_key, api_secret=api_secret, callback_token=callback_token)
    app = FastAPI(title="Phaxio v2.1 sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.emulator = emulator
    app.include_router(control_router(state))
    app.add_middleware(SwallowDrops)

    @app.post(f"{API}/faxes")
    async def create_fax(request: Request) -> Response:
        return await emulator.create(request)

    @app.get(f"{API}/faxes/{{fax_id}}")
    async def get_fax(request: Request, fax_id: str) -> Response:
        return emulator.get(request, fax_id)

    @app.get(f"{API}/faxes")
    async def list_faxes(request: Request) -> Response:
        return emulator.list_faxes(request)

    @app.get(f"{API}/account/status")
    async def account_status(request: Request) -> Response:
        return emulator.account_status(request)

    return app
