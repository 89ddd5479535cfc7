"""An emulator of Mailgun's Messages and Events APIs that posts Mailgun's signed webhooks back.

Endpoints (Basic auth ``api:<key>``; shapes of mailgun/documentation ``api-sending.rst``/``api-events.rst``):

- ``POST /v3/{domain}/messages`` (multipart or urlencoded form): validates like Mailgun (400 ``{"message"}``,
  401 "Forbidden", 404 "Domain not found"), answers ``{"id": "<...>", "message": "Queued. Thank you."}``
  (the id is the ``h:Message-Id`` given, as Mailgun keeps it), then posts ``accepted`` and ``delivered`` /
  ``failed`` (severity permanent) webhooks signed with HMAC-SHA256 over ``timestamp + token``.
- ``GET /v3/{domain}/events`` (``begin``, ``ascending``, ``limit``, filters ``message-id``, ``event``,
  ``recipient``) with ``paging.next`` URLs that end in an empty page.
- ``/_sandbox/*`` control endpoints.

Scripted outcomes (``SandboxState.next_outcome(first "to" address)``): ok -> delivered; bounce -> failed
(severity permanent, reason bounce, 550); soft_bounce -> failed (severity temporary, 452 mailbox full), then
delivered when Mailgun's own retry gets through; complaint -> delivered, then complained; invalid_number -> 400
"to parameter is not a valid address"; rate_limited -> 429 "try again after <date>"; server_error -> 500;
bad_gateway -> accepted, then 502; drop -> accepted, then the connection closes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, getaddresses, parseaddr
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import FormData
from starlette.responses import Response

from workers.sandbox.core import SandboxState
from workers.sandbox.email_common import (
    REFUSED,
    Background,
    DroppedResponse,
    ProviderError,
    email_outcome,
    emulator_app,
    post_webhook,
)

QUEUED = "Queued. Thank you."


class MailgunError(ProviderError):
    """An error answer in Mailgun's shape: ``{"message": "..."}`` (401 is plain "Forbidden")."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    def response(self) -> Response:
        if self.status == 401:
            return PlainTextResponse(self.message, status_code=401)
        return JSONResponse({"message": self.message}, status_code=self.status)


def signature_block(signing_key: str, *, timestamp: int | None = None, token: str | None = None) -> dict[str, str]:
    """Mailgun's ``signature`` object: HMAC-SHA256 hex of ``timestamp + token``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = token or secrets.token_hex(25)  # 50 characters, as documented
    digest = hmac.new(signing_key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": stamp, "token": token, "signature": digest}


def _valid(address: str) -> bool:
    local, at, domain = parseaddr(address)[1].rpartition("@")
    return bool(local and at and "." in domain)


def validate_form(form: FormData) -> None:
    """Mailgun's checks on a send (api-sending.rst error table); raises the first as a 400."""
    for field in ("from", "to"):
        if not form.get(field):
            raise MailgunError(400, f"{field} parameter is missing")
    for field in ("from", "to", "cc", "bcc"):
        values = [str(v) for v in form.getlist(field)]
        if any(not _valid(addr) for _, addr in getaddresses(values) if addr) or any(not v.strip() for v in values):
            raise MailgunError(400, f"{field} parameter is not a valid address. please check documentation")
    if not form.get("text") and not form.get("html"):
        raise MailgunError(400, "Need at least one of 'text' or 'html' parameters specified")
    for key in form:
        if key.startswith("h:") and not key.isascii():
            raise MailgunError(400, f"Header name must be pure ASCII: {key[2:]}")


def _recipients(form: FormData, field: str) -> list[str]:
    return [addr for _, addr in getaddresses([str(v) for v in form.getlist(field)]) if addr]


class MailgunEmulator:
    """The events of one emulated sending domain."""

    def __init__(
        self, state: SandboxState, *, api_key: str, domain: str, signing_key: str, webhook_url: str | None
    ) -> None:
        self.state, self.api_key, self.domain = state, api_key, domain
        self.signing_key, self.webhook_url = signing_key, webhook_url
        self.events: list[dict[str, Any]] = []  # touched only on the event loop
        self.forms: dict[str, dict[str, Any]] = {}  # message id -> what was posted, for tests
        self.pages: dict[str, tuple[dict[str, str], int]] = {}  # page token -> (filters, offset)
        self._serial = itertools.count(1)
        self.background = Background()

    def authenticate(self, request: Request, domain: str) -> None:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            user, _, key = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            user, key = "", ""
        if scheme.lower() != "basic" or user != "api" or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise MailgunError(401, "Forbidden")
        if domain != self.domain:
            raise MailgunError(404, f"Domain not found: {domain}")

    async def domain_info(self, request: Request, domain: str) -> Response:
        """``GET /v3/domains/{domain}`` (the credential check): the sending domain."""
        self.authenticate(request, domain)
        info = {"name": domain, "state": "active", "type": "custom", "spam_action": "disabled", "wildcard": False}
        return JSONResponse({"domain": info, "receiving_dns_records": [], "sending_dns_records": []})

    # -- POST /v3/{domain}/messages --------------------------------------------------------------

    async def send(self, request: Request, domain: str) -> Response:
        self.authenticate(request, domain)
        form = await request.form()
        validate_form(form)
        first = _recipients(form, "to")[0]
        outcome = email_outcome(self.state.next_outcome(first))
        refusal = self._refusal(outcome)
        message_id = None if refusal is not None else await self._accept(form, outcome)
        await asyncio.sleep(self.state.latency)
        if refusal is not None:
            return refusal.response()
        if outcome == "bad_gateway":
            return PlainTextResponse("502 Bad Gateway", status_code=502)
        if outcome == "drop":
            return DroppedResponse(200)
        return JSONResponse({"id": f"<{message_id}>", "message": QUEUED})

    def _refusal(self, outcome: str) -> MailgunError | None:
        if outcome not in REFUSED:
            return None
        if outcome == "invalid_number":
            return MailgunError(400, "to parameter is not a valid address. please check documentation")
        if outcome == "unauthorized":
            return MailgunError(401, "Forbidden")
        if outcome == "rate_limited":
            after = format_datetime(datetime.now(UTC) + timedelta(seconds=self.state.retry_after), usegmt=True)
            return MailgunError(
                429,
                f"Domain {self.domain} is not allowed to send: request limit exceeded, "
                f"try again after {after.replace('GMT', 'UTC')}",
            )
        return MailgunError(500, "Internal Server Error")

    async def _accept(self, form: FormData, outcome: str) -> str:
        given = str(form.get("h:Message-Id") or "").strip().strip("<>")
        message_id = (
            given
            or f"{datetime.now(UTC):%Y%m%d%H%M%S}.{next(self._serial)}.{secrets.token_hex(8).upper()}@{self.domain}"
        )
        variables = {k[2:]: str(v) for k, v in form.multi_items() if k.startswith("v:")}
        attachments = [v for k, v in form.multi_items() if k == "attachment" and not isinstance(v, str)]
        self.forms[message_id] = {
            "fields": [(k, v) for k, v in form.multi_items() if isinstance(v, str)],
            "attachments": [(a.filename, await a.read()) for a in attachments],
        }
        recipients = _recipients(form, "to") + _recipients(form, "cc")
        self.state.record(
            provider_id=message_id, reference=variables.get("reference"), destination=recipients[0], outcome=outcome
        )
        base = {
            "message": {
                "headers": {
                    "to": str(form.get("to")),
                    "message-id": message_id,
                    "from": str(form.get("from")),
                    "subject": str(form.get("subject") or ""),
                },
                "attachments": [{"filename": a.filename} for a in attachments],
                "size": 1024,
            },
            "user-variables": variables,
            "tags": [str(t) for t in form.getlist("o:tag")],
            "campaigns": [],
        }
        accepted = [self._event("accepted", r, base, method="http") for r in recipients]
        self.background.start(self._lifecycle(accepted, recipients, base, outcome))
        return message_id

    def _event(self, name: str, recipient: str, base: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        event = {
            "id": secrets.token_urlsafe(16),
            "timestamp": time.time(),
            "event": name,
            "log-level": "error" if name == "failed" else "info",
            "recipient": recipient,
            "recipient-domain": recipient.rpartition("@")[2],
            **base,
            **extra,
        }
        self.events.append(event)
        return event

    # -- after acceptance: deliver or fail, and tell the webhook ---------------------------------

    async def _lifecycle(
        self, accepted: list[dict[str, Any]], recipients: list[str], base: Mapping[str, Any], outcome: str
    ) -> None:
        for event in accepted:
            await self._emit(event)
        await asyncio.sleep(self.state.webhook_delay)
        if outcome == "soft_bounce":  # Mailgun retries a temporary failure itself
            await self._emit(self._temporary_failure(recipients[0], base))
            await asyncio.sleep(self.state.webhook_delay)
        for i, recipient in enumerate(recipients):
            if outcome == "bounce" and i == 0:
                final = self._event(
                    "failed",
                    recipient,
                    base,
                    severity="permanent",
                    reason="bounce",
                    **{
                        "delivery-status": {
                            "attempt-no": 1,
                            "code": 550,
                            "description": "",
                            "message": "5.1.1 The email account that you tried to reach does not exist.",
                        }
                    },
                )
            else:
                final = self._event(
                    "delivered",
                    recipient,
                    base,
                    **{
                        "delivery-status": {
                            "tls": True,
                            "mx-host": "mx.sandbox.invalid",
                            "attempt-no": 1,
                            "description": "",
                            "code": 250,
                            "message": "OK",
                        }
                    },
                )
            await self._emit(final)

        if outcome == "complaint":  # the first recipient marks the delivered message as spam
            await asyncio.sleep(self.state.webhook_delay)
            await self._emit(self._event("complained", recipients[0], base))

    def _temporary_failure(self, recipient: str, base: Mapping[str, Any]) -> dict[str, Any]:
        return self._event(
            "failed",
            recipient,
            base,
            severity="temporary",
            reason="generic",
            **{
                "log-level": "warning",
                "delivery-status": {
                    "attempt-no": 1,
                    "code": 452,
                    "description": "",
                    "message": "4.2.2 The email account that you tried to reach is over quota.",
                    "retry-seconds": 600,
                },
            },
        )

    async def _emit(self, event: Mapping[str, Any]) -> None:
        if not self.webhook_url:
            return

        def build() -> tuple[bytes, dict[str, str]]:  # a fresh token per attempt, as Mailgun signs each POST
            body = {"signature": signature_block(self.signing_key), "event-data": event}
            return json.dumps(body).encode(), {"content-type": "application/json"}

        await post_webhook(self.webhook_url, build, delay=self.state.webhook_delay)

    # -- GET /v3/{domain}/events -----------------------------------------------------------------

    async def list_events(self, request: Request, domain: str) -> Response:
        self.authenticate(request, domain)
        filters = {
            k: v
            for k, v in request.query_params.items()
            if k in ("message-id", "event", "recipient", "begin", "ascending", "limit")
        }
        return self._page(request, domain, filters, 0)

    async def next_page(self, request: Request, domain: str, token: str) -> Response:
        self.authenticate(request, domain)
        filters, offset = self.pages.get(token, ({}, len(self.events)))
        return self._page(request, domain, filters, offset)

    def _page(self, request: Request, domain: str, filters: dict[str, str], offset: int) -> Response:
        try:
            limit = int(filters.get("limit", "100"))
            begin = float(filters.get("begin", "0"))
        except ValueError:
            raise MailgunError(400, "Invalid parameter value") from None
        if not 0 < limit <= 300:
            raise MailgunError(400, "limit must be between 1 and 300")
        found = [e for e in self.events if e["timestamp"] >= begin and _matches(e, filters)]
        if filters.get("ascending") != "yes":
            found.reverse()
        token = secrets.token_urlsafe(12)
        self.pages[token] = (filters, offset + limit)
        base = str(request.base_url).rstrip("/") + f"/v3/{domain}/events"
        return JSONResponse(
            {
                "items": found[offset : offset + limit],
                "paging": {"next": f"{base}/{token}", "previous": f"{base}/{token}-prev", "first": base, "last": base},
            }
        )


def _matches(event: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
    if "message-id" in filters and event["message"]["headers"]["message-id"] != filters["message-id"].strip("<>"):
        return False
    if "event" in filters and event["event"] not in filters["event"].split(" OR "):
        return False
    return "recipient" not in filters or event["recipient"] == filters["recipient"]


def create_app(
    state: SandboxState, *, api_key: str, domain: str, webhook_signing_key: str, webhook_url: str | None = None
) -> FastAPI:
    """The Mailgun emulator for one sending ``domain``."""
    emulator = MailgunEmulator(
        state, api_key=api_key, domain=domain, signing_key=webhook_signing_key, webhook_url=webhook_url
    )
    app = emulator_app("Mailgun sandbox", state, emulator, MailgunError)
    app.add_api_route("/v3/domains/{domain}", emulator.domain_info, methods=["GET"])
    app.add_api_route("/v3/{domain}/messages", emulator.send, methods=["POST"])
    app.add_api_route("/v3/{domain}/events", emulator.list_events, methods=["GET"])
    app.add_api_route("/v3/{domain}/events/{token}", emulator.next_page, methods=["GET"])
    return app
