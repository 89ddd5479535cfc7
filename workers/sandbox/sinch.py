"""A local emulator of the Sinch Fax API v3: send, get, list, and ``FAX_COMPLETED`` callbacks.

Shapes follow workers/gateways/fax/sinch.py's sources (developers.sinch.com, sinch-sdk-node
``packages/fax``): Basic auth with key id and secret under ``/v3/projects/{projectId}``; a Fax object
per send; ``{faxes, page, totalPages, pageSize, totalItems}`` lists; JSON callbacks. Sinch signs
nothing: the emulator calls the callback URL as given, and httpx turns credentials embedded in it
into an HTTP Basic header, as Sinch does. So there is no signing secret to configure here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import re
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from workers.sandbox.control import control_router
from workers.sandbox.core import SandboxState
from workers.sandbox.phaxio import DropResponse, SwallowDrops  # the same scripted drop for every emulator

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = httpx.Timeout(5.0)
WEBHOOK_ATTEMPTS = 3
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# outcome -> (errorType, errorCode, errorMessage) of the failed call (Sinch "Error Messages")
FAILURES: dict[str, tuple[str, int, str]] = {
    "busy": ("CALL_ERROR", 17, "Busy"),
    "no_answer": ("CALL_ERROR", 30, "No answer from a fax machine."),
    "no_fax_tone": ("FAX_ERROR", 132, "No fax tone detected"),
    "media_fetch_failed": ("DOCUMENT_CONVERSION_ERROR", 54, "Could not access the url you provided."),
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _error(
    status: int, grpc_status: str, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    details = (
        []
        if field is None
        else [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "description": message}],
            }
        ]
    )
    return JSONResponse(
        {"code": status, "message": message, "status": grpc_status, "details": details},
        status_code=status,
        headers=headers,
    )


def _new_id() -> str:
    """A ULID-shaped id like the SDK's examples (``01W4FFL35P4NC4K35CR3P35M1N1``)."""
    return "01" + "".join(secrets.choice(CROCKFORD) for _ in range(24))


def _masked(url: str | None) -> str | None:
    """Credentials in a callback URL are masked when the fax is read back."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}:****@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class SinchEmulator:
    """The state behind the routes: faxes by id, callback tasks in flight."""

    def __init__(self, state: SandboxState, *, project_id: str, key_id: str, key_secret: str) -> None:
        self.state = state
        self.project_id = project_id
        self._credentials = f"{key_id}:{key_secret}".encode()
        self.faxes: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def refused(self, request: Request, project_id: str) -> Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            given = base64.b64decode(token, validate=True) if scheme.lower() == "basic" else b""
        except (binascii.Error, ValueError):
            given = b""
        if not hmac.compare_digest(given, self._credentials):
            return _error(401, "UNAUTHENTICATED", "Invalid authentication credentials")
        if project_id != self.project_id:
            return _error(404, "NOT_FOUND", "Project not found")
        return None

    async def create(self, request: Request, project_id: str) -> Response:
        refusal = self.refused(request, project_id)
        if refusal is not None:
            return refusal
        body = await _read_send_body(request)
        if isinstance(body, Response):
            return body
        to = str(body.get("to") or "")
        if not E164.match(to):
            return _error(400, "INVALID_ARGUMENT", "to must be a phone number in E.164 format", field="to")
        await asyncio.sleep(self.state.latency)
        return self._answer(self.state.next_outcome(to), body)

    def _answer(self, outcome: str, body: dict[str, Any]) -> Response:
        if outcome == "rate_limited":
            return _error(
                429, "RESOURCE_EXHAUSTED", "Too many requests", headers={"Retry-After": str(self.state.retry_after)}
            )
        if outcome == "server_error":
            return _error(500, "INTERNAL", "Internal server error")
        if outcome == "unauthorized":
            return _error(401, "UNAUTHENTICATED", "Invalid authentication credentials")
        if outcome == "invalid_number":
            return _error(400, "INVALID_ARGUMENT", "The destination number is not valid", field="to")
        fax = self._accept(outcome, body)
        if outcome == "bad_gateway":
            return Response(
                "<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502, media_type="text/html"
            )
        if outcome == "drop":
            return DropResponse()
        return JSONResponse(fax)

    def _accept(self, outcome: str, body: dict[str, Any]) -> dict[str, Any]:
        fax = _fax_object(_new_id(), self.project_id, body)
        self.faxes[fax["id"]] = fax
        self.state.record(
            provider_id=fax["id"], reference=fax["labels"].get("reference"), destination=fax["to"], outcome=outcome
        )
        callback = body.get("callbackUrl")
        task = asyncio.create_task(
            self._lifecycle(fax, outcome, str(callback) if callback else None, body.get("_pdf", b""))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fax

    async def _lifecycle(self, fax: dict[str, Any], outcome: str, callback: str | None, pdf: bytes) -> None:
        """QUEUED -> IN_PROGRESS -> COMPLETED | FAILURE; one FAX_COMPLETED callback at the end."""
        await asyncio.sleep(self.state.webhook_delay)
        fax["status"] = "IN_PROGRESS"
        await asyncio.sleep(self.state.webhook_delay)
        _complete(fax, FAILURES.get(outcome))
        if callback:
            await self._callback(
                callback,
                {
                    "event": "FAX_COMPLETED",
                    "eventTime": _now(),
                    "fax": fax,
                    "file": base64.b64encode(pdf).decode("ascii"),
                    "fileType": "PDF",
                },
            )

    async def _callback(self, url: str, payload: dict[str, Any]) -> None:
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as client:
            for _ in range(WEBHOOK_ATTEMPTS):
                try:  # httpx sends credentials embedded in the URL as HTTP Basic, like Sinch
                    response = await client.post(url, json=payload)
                    if response.status_code == 200:
                        return
                except httpx.HTTPError as err:
                    log.debug("sinch sandbox: callback failed (%s)", type(err).__name__)
                await asyncio.sleep(self.state.webhook_delay)

    def get(self, request: Request, project_id: str, fax_id: str) -> Response:
        refusal = self.refused(request, project_id)
        if refusal is not None:
            return refusal
        fax = self.faxes.get(fax_id)
        return JSONResponse(fax) if fax else _error(404, "NOT_FOUND", "Fax not found")

    def list_services(self, request: Request, project_id: str) -> Response:
        """ListServices (the credential check): the project's one default service."""
        refusal = self.refused(request, project_id)
        if refusal is not None:
            return refusal
        service: dict[str, Any] = {"id": "01SANDBOXDEFAULTSERVICE000", "name": "Default service"}
        service |= {"projectId": project_id, "defaultForProject": True, "webhookContentType": "application/json"}
        return JSONResponse({"services": [service], "page": 1, "totalPages": 1, "pageSize": 1, "totalItems": 1})

    def list_faxes(self, request: Request, project_id: str) -> Response:
        refusal = self.refused(request, project_id)
        if refusal is not None:
            return refusal
        query = request.query_params
        try:
            labels = json.loads(query["labels"]) if query.get("labels") else {}
            size = min(max(int(query.get("pageSize", "100")), 1), 1000)
            page = max(int(query.get("page", "1")), 1)
        except ValueError:
            return _error(400, "INVALID_ARGUMENT", "Invalid list parameters")
        faxes = [fax for fax in reversed(self.faxes.values()) if _matches(fax, query, labels)]
        total_pages = max(1, -(-len(faxes) // size))
        return JSONResponse(
            {
                "faxes": faxes[(page - 1) * size : page * size],
                "page": page,
                "totalPages": total_pages,
                "pageSize": size,
                "totalItems": len(faxes),
            }
        )


async def _read_send_body(request: Request) -> dict[str, Any] | Response:
    """The JSON body (``files`` base64) or the multipart form (``file`` parts), with the PDF as ``_pdf``."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        body: dict[str, Any] = {key: value for key, value in form.items() if not isinstance(value, UploadFile)}
        body["labels"] = json.loads(str(body["labels"])) if body.get("labels") else {}
        body["_pdf"] = await upload.read() if isinstance(upload, UploadFile) else b""
        return (
            body
            if body["_pdf"] or body.get("contentUrl")
            else _error(400, "INVALID_ARGUMENT", "file or contentUrl is required", field="file")
        )
    try:
        body = await request.json()
        files = body.get("files") or []
        body["_pdf"] = b"".join(base64.b64decode(item["file"], validate=True) for item in files)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        return _error(400, "INVALID_ARGUMENT", "Malformed request body")
    if not body["_pdf"] and not body.get("contentUrl"):
        return _error(400, "INVALID_ARGUMENT", "files or contentUrl is required", field="files")
    return dict(body)


def _matches(fax: dict[str, Any], query: Any, labels: dict[str, Any]) -> bool:
    if any(fax["labels"].get(key) != value for key, value in labels.items()):
        return False
    for key in ("direction", "status"):
        if query.get(key) and fax[key] != query[key]:
            return False
    return all(not query.get(key) or str(fax.get(key) or "").startswith(query[key]) for key in ("to", "from"))


def _fax_object(fax_id: str, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """An OUTBOUND Fax object as the API answers a send (sinch-sdk-node ``models/v3/fax``)."""
    pdf: bytes = body.get("_pdf", b"")
    return {
        "id": fax_id,
        "direction": "OUTBOUND",
        "from": body.get("from"),
        "to": body.get("to"),
        "numberOfPages": max(1, pdf.count(b"/Type /Page") - pdf.count(b"/Type /Pages")),
        "status": "QUEUED",
        "createTime": _now(),
        "headerText": body.get("headerText", ""),
        "headerPageNumbers": True,
        "headerTimeZone": "America/New_York",
        "retryDelaySeconds": 60,
        "labels": dict(body.get("labels") or {}),
        "callbackUrl": _masked(body.get("callbackUrl")),
        "callbackUrlContentType": body.get("callbackUrlContentType", "multipart/form-data"),
        "imageConversionMethod": "HALFTONE",
        "maxRetries": int(body.get("maxRetries", 3)),
        "retryCount": 0,
        "hasFile": "true",
        "resolution": "FINE",
        "projectId": project_id,
        "serviceId": "sandbox-service",
    }


def _complete(fax: dict[str, Any], failure: tuple[str, int, str] | None) -> None:
    fax["completedTime"] = _now()
    fax["price"] = {"currencyCode": "USD", "amount": "0.070"}
    if failure is None:
        fax.update(status="COMPLETED", pagesSentSuccessfully=fax["numberOfPages"])
        return
    error_type, error_code, message = failure
    fax.update(
        status="FAILURE", pagesSentSuccessfully=0, errorType=error_type, errorCode=error_code, errorMessage=message
    )


def create_app(state: SandboxState, *, project_id: str, key_id: str, key_secret: str) -> FastAPI:
    """The emulator as an ASGI app. Callbacks authenticate with the credentials in ``callbackUrl``."""
    emulator = SinchEmulator(state, project_id=project_id, key_id=key_id, key_secret=key_secret)
    app = FastAPI(title="Sinch Fax v3 sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.emulator = emulator
    app.include_router(control_router(state))
    app.add_middleware(SwallowDrops)
    base = "/v3/projects/{project_id}/faxes"

    @app.post(base)
    async def send_fax(request: Request, project_id: str) -> Response:
        return await emulator.create(request, project_id)

    @app.get(base + "/{fax_id}")
    async def get_fax(request: Request, project_id: str, fax_id: str) -> Response:
        return emulator.get(request, project_id, fax_id)

    @app.get(base)
    async def list_faxes(request: Request, project_id: str) -> Response:
        return emulator.list_faxes(request, project_id)

    @app.get("/v3/projects/{project_id}/services")
    async def list_services(request: Request, project_id: str) -> Response:
        return emulator.list_services(request, project_id)

    return app
