"""An emulator of Telnyx Programmable Fax v2, speaking the shapes of the official SDK (telnyx-python v4).

Endpoints (under the ``https://api.telnyx.com/v2`` layout, Bearer auth):

- ``POST /v2/faxes``: validates like Telnyx (422 with ``errors[]``), answers 202 ``{"data": Fax}``, then
  fetches ``media_url`` (2xx, no redirects, PDF) and plays ``fax.queued``, ``fax.media.processed``,
  ``fax.sending.started`` and ``fax.delivered`` / ``fax.failed`` as Ed25519-signed webhooks.
- ``GET /v2/faxes/{id}`` and ``GET /v2/faxes`` (filters ``filter[direction|to|from][eq]``,
  ``filter[created_at][gt|gte|lt|lte]``, ``page[number]``, ``page[size]``; ``meta.total_pages``).
- ``/_sandbox/*`` control endpoints (scripts, oracle).

Scripted outcomes (``SandboxState.next_outcome(to)``) and what the client sees:
ok -> 202, delivered; busy / no_answer / no_fax_tone -> 202, failed with ``user_busy`` /
``receiver_no_answer`` / ``fax_initial_communication_timeout``; invalid_number -> 422 (10002);
unauthorized -> 401 (10009, as for a wrong key); media_fetch_failed -> 202, failed with
``file_download_failed`` without fetching (a real unreachable ``media_url`` fails the same way);
rate_limited -> 429 + Retry-After; server_error -> 500; bad_gateway -> accepted, then 502;
drop -> accepted, then the connection closes mid-answer. Every accepted fax is in the oracle.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import re
import ssl
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

import httpx
import nacl.signing
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from workers.sandbox.control import control_router
from workers.sandbox.core import SandboxState

log = logging.getLogger(__name__)

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
QUALITIES = frozenset({"normal", "high", "very_high", "ultra_light", "ultra_dark"})
FAILURE_REASONS = {
    "busy": "user_busy",
    "no_answer": "receiver_no_answer",
    "no_fax_tone": "fax_initial_communication_timeout",
}
MAX_MEDIA_BYTES = 50 * 1024 * 1024  # Telnyx: file_size_limit_exceeded above 50 MB
MAX_PAGES = 350  # Telnyx: page_count_limit_exceeded above 350 pages
ERROR_DOCS = "https://developers.telnyx.com/docs/overview/errors/{code}"


class TelnyxAPIError(Exception):
    """An error answer in Telnyx's shape: ``{"errors": [{code, title, detail, source, meta}]}``."""

    def __init__(self, status: int, errors: list[dict[str, Any]], *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.errors = errors
        self.headers = headers

    def response(self) -> JSONResponse:
        headers = dict(self.headers or {})
        return JSONResponse({"errors": self.errors}, status_code=self.status, headers=headers)


# Titles and details as on developers.telnyx.com "API error codes".
ERROR_TEXTS: dict[str, tuple[str, str]] = {
    "10002": ("Invalid phone number", "The phone number is invalid."),
    "10003": ("Invalid URL", "The URL provided was invalid, malformed, or too long."),
    "10004": ("Missing required parameter", "A required parameter was missing."),
    "10005": ("Resource not found", "The requested resource or URL could not be found."),
    "10007": ("Unexpected error", "An unexpected error occured."),
    "10009": (
        "Authentication failed",
        "The required authentication headers were either invalid or not included in the request.",
    ),
    "10011": ("Too many requests", "You have exceeded the maximum number of allowed requests."),
    "10014": ("Unsupported Media Type", "The request failed because the server does not support the media type."),
    "10015": ("Bad Request", "The request failed because it was not well-formed."),
    "10016": (
        "Phone number must be in +E.164 format",
        "The specified phone number parameter must be in +E.164 format.",
    ),
}


def api_error(code: str, pointer: str | None = None, detail: str | None = None) -> dict[str, Any]:
    """One ``errors[]`` entry; ``detail`` overrides the catalogue text."""
    title, default_detail = ERROR_TEXTS[code]
    error: dict[str, Any] = {
        "code": code,
        "title": title,
        "detail": detail or default_detail,
        "meta": {"url": ERROR_DOCS.format(code=code)},
    }
    if pointer:
        error["source"] = {"pointer": pointer}
    return error


class DroppedResponse(Response):
    """Starts a 202 it never finishes: the server closes the connection mid-body (accept-then-drop)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"data": {"id": ', "more_body": True})
        # Returning now leaves the response incomplete; uvicorn closes the socket.


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every webhook and document fetch: a client's own would load the CA bundle each
    time (most of the emulator's CPU when faxes go by the hundred)."""
    return ssl.create_default_context()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _decode_reference(client_state: str | None) -> str | None:
    if not client_state:
        return None
    try:
        return base64.b64decode(client_state, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def count_pdf_pages(pdf: bytes) -> int:
    """Pages of a PDF by its page objects; good enough for an emulator."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf))


def validate_send(body: Any) -> list[dict[str, Any]]:
    """Telnyx's checks on a send request, as ``errors[]`` entries; empty when the request is valid."""
    if not isinstance(body, dict):
        return [api_error("10015")]
    errors = [
        api_error("10004", f"/{name}", f"The '{name}' parameter is required.")
        for name in ("connection_id", "from", "to")
        if not body.get(name)
    ]
    errors += _number_errors(body) + _media_errors(body) + _option_errors(body)
    return errors


def _number_errors(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    errors = []
    for name in ("from", "to"):
        value = body.get(name)
        if not value or (name == "to" and str(value).startswith("sip:")):
            continue
        if not isinstance(value, str) or not E164.match(value):
            errors.append(api_error("10016", f"/{name}"))
    return errors


def _media_errors(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    url, name = body.get("media_url"), body.get("media_name")
    if url and name:
        return [api_error("10015", "/media_url", "media_url and media_name can't be submitted together.")]
    if not url and not name:
        return [api_error("10004", "/media_url", "Either media_url or media_name is required.")]
    if url and (not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2000):
        return [api_error("10003", "/media_url")]
    return []


def _option_errors(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    errors = []
    if "quality" in body and body["quality"] not in QUALITIES:
        errors.append(api_error("10015", "/quality", f"quality must be one of {sorted(QUALITIES)}."))
    state = body.get("client_state")
    if state is not None and (not isinstance(state, str) or _not_base64(state)):
        errors.append(api_error("10015", "/client_state", "client_state must be a valid Base-64 string."))
    return errors


def _not_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return True
    return False


class TelnyxEmulator:
    """The faxes one emulator instance knows, and their life after acceptance."""

    def __init__(
        self,
        state: SandboxState,
        *,
        api_key: str,
        signing_key: nacl.signing.SigningKey,
        default_webhook_url: str | None,
    ) -> None:
        self.state = state
        self.api_key = api_key
        self.signing_key = signing_key
        self.default_webhook_url = default_webhook_url
        self.user_id = str(uuid.uuid4())
        self.faxes: dict[str, dict[str, Any]] = {}  # touched only on the event loop
        self._tasks: set[asyncio.Task[None]] = set()

    def authenticate(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self.api_key.encode()):
            raise TelnyxAPIError(401, [api_error("10009")])

    # -- POST /v2/faxes ------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        self.authenticate(request)
        body = await self._json_body(request)
        errors = validate_send(body)
        if errors:
            raise TelnyxAPIError(422, errors)
        outcome = self.state.next_outcome(body["to"])
        refused = self._refusal(outcome)
        fax = None if refused is not None else self._accept(body, outcome)
        await asyncio.sleep(self.state.latency)
        if refused is not None:
            return refused.response()
        assert fax is not None
        if outcome == "bad_gateway":
            return PlainTextResponse("502 Bad Gateway", status_code=502)
        if outcome == "drop":
            return DroppedResponse()
        return JSONResponse({"data": fax}, status_code=202)

    async def _json_body(self, request: Request) -> Any:
        if "json" not in request.headers.get("content-type", ""):
            raise TelnyxAPIError(415, [api_error("10014")])
        try:
            return json.loads(await request.body())
        except ValueError:
            raise TelnyxAPIError(400, [api_error("10015")]) from None

    def _refusal(self, outcome: str) -> TelnyxAPIError | None:
        """Outcomes where Telnyx refuses the fax: nothing is accepted, nothing reaches the oracle."""
        if outcome == "invalid_number":
            return TelnyxAPIError(422, [api_error("10002", "/to")])
        if outcome == "unauthorized":
            return TelnyxAPIError(401, [api_error("10009")])
        if outcome == "rate_limited":
            retry_after = {"Retry-After": str(self.state.retry_after)}
            return TelnyxAPIError(429, [api_error("10011")], headers=retry_after)
        if outcome == "server_error":
            return TelnyxAPIError(500, [api_error("10007")])
        return None

    def _accept(self, body: Mapping[str, Any], outcome: str) -> dict[str, Any]:
        fax = self._new_fax(body)
        self.faxes[fax["id"]] = fax
        self.state.record(
            provider_id=fax["id"],
            reference=_decode_reference(body.get("client_state")),
            destination=body["to"],
            outcome=outcome,
        )
        webhook_url = body.get("webhook_url") or self.default_webhook_url
        task = asyncio.get_running_loop().create_task(self._lifecycle(fax["id"], outcome, webhook_url))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return dict(fax)

    def _new_fax(self, body: Mapping[str, Any]) -> dict[str, Any]:
        now = _now()
        fax: dict[str, Any] = {
            "record_type": "fax",
            "id": str(uuid.uuid4()),
            "connection_id": str(body["connection_id"]),
            "direction": "outbound",
            "from": body["from"],
            "to": body["to"],
            "media_url": body.get("media_url"),
            "quality": body.get("quality", "high"),
            "client_state": body.get("client_state"),
            "webhook_url": body.get("webhook_url"),
            "webhook_failover_url": body.get("webhook_failover_url"),
            "store_media": bool(body.get("store_media", False)),
            "status": "queued",
            "failure_reason": None,
            "internal_failure_reason": None,
            "created_at": now,
            "updated_at": now,
        }
        if body.get("from_display_name"):
            fax["from_display_name"] = body["from_display_name"]
        return fax

    # -- after acceptance: fetch the document, "dial", report by webhook -------------------------

    async def _lifecycle(self, fax_id: str, outcome: str, webhook_url: str | None) -> None:
        await self._advance(fax_id, "queued", "fax.queued", webhook_url)
        pages: int
        reason: str | None
        if outcome == "media_fetch_failed":
            pages, reason = 0, "file_download_failed"
        else:
            pages, reason = await self._fetch_media(self.faxes[fax_id]["media_url"])
            if reason is not None:  # no call was made: this fax reached nobody
                self.state.amend(fax_id, "media_fetch_failed" if reason == "file_download_failed" else reason)
        if reason is None:
            await self._advance(fax_id, "media.processed", "fax.media.processed", webhook_url)
            await self._advance(fax_id, "sending", "fax.sending.started", webhook_url)
            reason = FAILURE_REASONS.get(outcome)
        if reason is not None:
            self.faxes[fax_id].update(failure_reason=reason, internal_failure_reason=reason)
            await self._advance(fax_id, "failed", "fax.failed", webhook_url, failure_reason=reason)
        else:
            await self._advance(
                fax_id,
                "delivered",
                "fax.delivered",
                webhook_url,
                page_count=pages,
                call_duration_secs=30 * max(pages, 1),
            )

    async def _advance(self, fax_id: str, status: str, event_type: str, webhook_url: str | None, **extra: Any) -> None:
        await asyncio.sleep(self.state.webhook_delay)
        fax = self.faxes[fax_id]
        fax.update(status=status, updated_at=_now())
        if webhook_url:
            await self._post_webhook(webhook_url, self._envelope(fax, event_type, webhook_url, extra))

    async def _fetch_media(self, url: str) -> tuple[int, str | None]:
        """(pages, failure_reason or None): Telnyx needs a direct 2xx answer with a supported file."""
        try:
            async with httpx.AsyncClient(timeout=5.0, follow_redirects=False, verify=_tls()) as client:
                response = await client.get(url)
        except httpx.HTTPError:
            return 0, "file_download_failed"
        if not response.is_success:
            return 0, "file_download_failed"
        if len(response.content) > MAX_MEDIA_BYTES:
            return 0, "file_size_limit_exceeded"
        if not response.content.startswith(b"%PDF"):
            return 0, "file_format_invalid"
        pages = count_pdf_pages(response.content)
        return pages, "page_count_limit_exceeded" if pages > MAX_PAGES else None

    def _envelope(self, fax: Mapping[str, Any], event_type: str, url: str, extra: Mapping[str, Any]) -> Any:
        payload = {
            "fax_id": fax["id"],
            "connection_id": fax["connection_id"],
            "direction": "outbound",
            "from": fax["from"],
            "to": fax["to"],
            "original_media_url": fax["media_url"],
            "status": fax["status"],
            "user_id": self.user_id,
            **extra,
        }
        if fax.get("client_state"):
            payload["client_state"] = fax["client_state"]
        data = {
            "event_type": event_type,
            "id": str(uuid.uuid4()),
            "occurred_at": _now(),
            "record_type": "event",
            "payload": payload,
        }
        return {"data": data, "meta": {"attempt": 1, "delivered_to": url}}

    async def _post_webhook(self, url: str, envelope: dict[str, Any]) -> None:
        """Sign and POST; like Telnyx, retry a few times when the receiver does not answer 2xx."""
        async with httpx.AsyncClient(timeout=5.0, verify=_tls()) as client:
            for attempt in (1, 2, 3):
                envelope["meta"]["attempt"] = attempt
                body = json.dumps(envelope).encode("utf-8")
                try:
                    response = await client.post(url, content=body, headers=self.sign(body))
                    if response.is_success:
                        return
                except httpx.HTTPError as err:
                    log.debug("telnyx sandbox: webhook attempt %d failed: %s", attempt, err)
                await asyncio.sleep(self.state.webhook_delay)

    def sign(self, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        """Telnyx's webhook headers: Ed25519 over ``"{timestamp}|{body}"``, base64."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.signing_key.sign(stamp.encode("ascii") + b"|" + body).signature
        return {
            "content-type": "application/json",
            "telnyx-timestamp": stamp,
            "telnyx-signature-ed25519": base64.b64encode(signature).decode("ascii"),
        }

    # -- GET /v2/faxes/{id}, GET /v2/faxes ----------------------------------------------------------

    async def retrieve(self, request: Request, fax_id: str) -> Response:
        self.authenticate(request)
        fax = self.faxes.get(fax_id)
        if fax is None:
            raise TelnyxAPIError(404, [api_error("10005")])
        return JSONResponse({"data": fax})

    async def list_faxes(self, request: Request) -> Response:
        self.authenticate(request)
        query = request.query_params
        try:
            number = max(1, int(query.get("page[number]", 1)))
            size = min(250, max(1, int(query.get("page[size]", 20))))
            faxes = [f for f in self.faxes.values() if _matches(f, query)]
        except ValueError:
            invalid = api_error("10015", detail="Invalid filter or page parameter.")
            raise TelnyxAPIError(400, [invalid]) from None
        faxes.sort(key=lambda f: f["created_at"], reverse=True)  # newest first
        total_pages = max(1, -(-len(faxes) // size))
        page = faxes[(number - 1) * size : number * size]
        meta = {"page_number": number, "page_size": size, "total_pages": total_pages, "total_results": len(faxes)}
        return JSONResponse({"data": page, "meta": meta})


def _matches(fax: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    for field in ("direction", "to", "from"):
        wanted = query.get(f"filter[{field}][eq]")
        if wanted is not None and fax.get(field) != wanted:
            return False
    created = _parse_time(fax["created_at"])
    bounds = {"gt": created.__gt__, "gte": created.__ge__, "lt": created.__lt__, "lte": created.__le__}
    for op, compare in bounds.items():
        value = query.get(f"filter[created_at][{op}]")
        if value is not None and not compare(_parse_time(value)):
            return False
    return True


def create_app(
    state: SandboxState, *, api_key: str, signing_key: nacl.signing.SigningKey, default_webhook_url: str | None = None
) -> FastAPI:
    """The Telnyx fax emulator as an ASGI app; serve it with :func:`workers.sandbox.server.serve`."""
    emulator = TelnyxEmulator(state, api_key=api_key, signing_key=signing_key, default_webhook_url=default_webhook_url)
    app = FastAPI(title="Telnyx fax sandbox", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.emulator = emulator

    async def telnyx_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, TelnyxAPIError)
        return exc.response()

    app.add_exception_handler(TelnyxAPIError, telnyx_error)
    app.add_api_route("/v2/faxes", emulator.create, methods=["POST"])
    app.add_api_route("/v2/faxes", emulator.list_faxes, methods=["GET"])
    app.add_api_route("/v2/faxes/{fax_id}", emulator.retrieve, methods=["GET"])
    app.include_router(control_router(state))
    return app
