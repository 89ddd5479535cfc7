"""An emulator of SendGrid v3 Mail Send and Email Activity that posts signed Event Webhook batches.

Endpoints (Bearer auth, JSON; shapes of twilio.com/docs/sendgrid and twilio/sendgrid-oai):

- ``POST /v3/mail/send``: validates like SendGrid (400 ``{"errors": [{message, field, help}]}``, 401),
  answers 202 with an empty body and ``X-Message-Id``, then posts ``processed`` and ``delivered`` /
  ``bounce`` events, signed with ECDSA P-256 over ``timestamp + body`` (Signed Event Webhook).
- ``GET /v3/messages?query=&limit=`` (queries ``msg_id="x"``, ``msg_id LIKE "x%"``, ``to_email="x"``,
  ``status="x"``, ``unique_args['k']="v"``, joined with AND) and ``GET /v3/messages/{msg_id}``; both
  answer 403 when the emulated account lacks the Email Activity add-on (``activity_api=False``).
- ``/_sandbox/*`` control endpoints.

Scripted outcomes (``SandboxState.next_outcome(first "to" address)``): ok -> delivered; bounce -> bounce (type
"bounce", a 5.1.1); soft_bounce -> bounce (type "blocked", a 4.2.2 mailbox full that SendGrid gave up on);
complaint -> delivered, then spamreport; invalid_number -> 400 "Does not contain a valid address."; rate_limited
-> 429 with ``X-RateLimit-Reset``; server_error -> 500; bad_gateway -> accepted, then 502; drop -> accepted,
then the connection closes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import itertools
import json
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.responses import Response

from workers.sandbox.core import SandboxState
from workers.sandbox.email_common import (
    REFUSED,
    Background,
    DroppedResponse,
    ProviderError,
    email_outcome,
    emulator_app,
    iso_now,
    post_webhook,
)

HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.{anchor}"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
QUERY_TERM = re.compile(
    r"""^\s*(?:(?P<field>msg_id|to_email|from_email|subject|status)\s*(?P<op>=|LIKE)\s*"""
    r"""|unique_args\['(?P<arg>[^']+)'\]\s*(?P<argop>=)\s*)"(?P<value>(?:[^"\\]|\\.)*)"\s*$"""
)


# The bounce event's fields by outcome (twilio.com/docs/sendgrid/for-developers/tracking-events/event: ``type``
# "bounce" for a hard bounce, "blocked" for a block; ``status``, ``reason``, ``bounce_classification``), and
# the Email Activity event's ``bounce_type``.
BOUNCES: dict[str, dict[str, str]] = {
    "bounce": {
        "type": "bounce",
        "status": "5.1.1",
        "bounce_classification": "Invalid Address",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
    },
    "soft_bounce": {
        "type": "blocked",
        "status": "4.2.2",
        "bounce_classification": "Mailbox Unavailable",
        "reason": "452 4.2.2 The email account that you tried to reach is over quota.",
    },
}
ACTIVITY_BOUNCE_TYPES = {"bounce": "hard", "blocked": "soft"}


class SendGridError(ProviderError):
    """An error answer in SendGrid's shape: ``{"errors": [{"message", "field", "help"}]}``."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        *,
        anchor: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        error: dict[str, Any] = {"message": message, "field": field}
        if anchor:
            error["help"] = HELP.format(anchor=anchor)
        self.status, self.errors, self.headers = status, [error], dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse({"errors": self.errors}, status_code=self.status, headers=self.headers)


def public_key_b64(private_key: ec.EllipticCurvePrivateKey) -> str:
    """The verification key as SendGrid's settings page shows it (base64 DER SubjectPublicKeyInfo)."""
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def sign(private_key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Signed Event Webhook headers for ``body``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "content-type": "application/json",
        "x-twilio-email-event-webhook-timestamp": stamp,
        "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
    }


def validate_mail(body: Any) -> None:
    """SendGrid's parameter checks on mail/send (mail-send/errors); raises the first as a 400."""
    if not isinstance(body, dict):
        raise SendGridError(400, "Bad Request", None)
    _validate_personalizations(body.get("personalizations"))
    sender = body.get("from")
    if not isinstance(sender, dict) or not sender.get("email"):
        raise SendGridError(
            400,
            "The from object must be provided for every email send. It is an object that "
            "requires the email parameter, but may also contain a name parameter.",
            "from",
            anchor="from",
        )
    if not EMAIL.match(str(sender["email"])):
        raise SendGridError(400, "The from email does not contain a valid address.", "from.email", anchor="from")
    if not body.get("subject") and not all(p.get("subject") for p in body["personalizations"]):
        raise SendGridError(
            400,
            "The subject is required. You can get around this requirement if you use a "
            "template with a subject defined or if every personalization has a subject defined.",
            "subject",
            anchor="subject",
        )
    _validate_content(body.get("content"))
    _validate_attachments(body.get("attachments") or [])


def _validate_personalizations(personalizations: Any) -> None:
    if not isinstance(personalizations, list) or not personalizations:
        raise SendGridError(
            400,
            "The personalizations field is required and must have at least one personalization.",
            "personalizations",
            anchor="personalizations",
        )
    for i, p in enumerate(personalizations):
        to = p.get("to") if isinstance(p, dict) else None
        if not isinstance(to, list) or not to:
            raise SendGridError(
                400,
                "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address.",
                f"personalizations.{i}.to",
                anchor="personalizations.to",
            )
        for kind in ("to", "cc", "bcc"):
            for j, addr in enumerate(p.get(kind) or []):
                if not isinstance(addr, dict) or not EMAIL.match(str(addr.get("email", ""))):
                    raise SendGridError(
                        400,
                        "Does not contain a valid address.",
                        f"personalizations.{i}.{kind}.{j}.email",
                        anchor=f"personalizations.{kind}",
                    )
        args = p.get("custom_args") or {}
        if not isinstance(args, dict) or not all(isinstance(v, str) for v in args.values()):
            raise SendGridError(
                400,
                "Invalid type. Expected: string, given: integer.",
                f"personalizations.{i}.custom_args",
                anchor="custom_args",
            )


def _validate_content(content: Any) -> None:
    if not isinstance(content, list) or not content:
        raise SendGridError(
            400,
            "Unless a valid template_id is provided, the content parameter is required. "
            "There must be at least one defined content block.",
            "content",
            anchor="content",
        )
    types = [c.get("type") for c in content if isinstance(c, dict)]
    if "text/plain" in types and types[0] != "text/plain":
        raise SendGridError(
            400,
            "If present, text/plain content must be first, followed by text/html, followed by any other content.",
            "content",
            anchor="content",
        )
    if any(not isinstance(c, dict) or not c.get("value") for c in content):
        raise SendGridError(
            400,
            "The content value must be a string at least one character in length.",
            "content.0.value",
            anchor="content.value",
        )


def _validate_attachments(attachments: list[Any]) -> None:
    for i, a in enumerate(attachments):
        if not isinstance(a, dict) or not a.get("filename"):
            raise SendGridError(
                400,
                "The attachment filename parameter is required.",
                f"attachments.{i}.filename",
                anchor="attachments.filename",
            )
        try:
            base64.b64decode(str(a.get("content", "")), validate=True)
        except (binascii.Error, ValueError):
            raise SendGridError(
                400,
                "The attachment content must be base64 encoded.",
                f"attachments.{i}.content",
                anchor="attachments.content",
            ) from None


class SendGridEmulator:
    """The messages one emulator instance accepted (per recipient, as Email Activity shows them)."""

    def __init__(
        self,
        state: SandboxState,
        *,
        api_key: str,
        signing_key: ec.EllipticCurvePrivateKey,
        webhook_url: str | None,
        activity_api: bool,
    ) -> None:
        self.state, self.api_key, self.signing_key = state, api_key, signing_key
        self.webhook_url, self.activity_api = webhook_url, activity_api
        self.activity: dict[str, dict[str, Any]] = {}  # msg_id -> details; touched only on the event loop
        self.requests: dict[str, dict[str, Any]] = {}  # X-Message-Id -> the accepted request body
        self._serial = itertools.count(13037)
        self.background = Background()

    def authenticate(self, request: Request) -> None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise SendGridError(401, "authorization required")
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise SendGridError(401, "The provided authorization grant is invalid, expired, or revoked")

    # -- POST /v3/mail/send ----------------------------------------------------------------------

    async def send(self, request: Request) -> Response:
        self.authenticate(request)
        if "json" not in request.headers.get("content-type", ""):
            raise SendGridError(415, "Content-Type should be application/json.")
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise SendGridError(400, "Bad Request", None) from None
        validate_mail(body)
        first = body["personalizations"][0]["to"][0]["email"]
        outcome = email_outcome(self.state.next_outcome(first))
        refusal = self._refusal(outcome)
        message_id = None if refusal is not None else self._accept(body, outcome)
        await asyncio.sleep(self.state.latency)
        if refusal is not None:
            return refusal.response()
        if outcome == "bad_gateway":
            return PlainTextResponse("502 Bad Gateway", status_code=502)
        if outcome == "drop":
            return DroppedResponse(202)
        return Response(status_code=202, headers={"X-Message-Id": str(message_id)})

    def _refusal(self, outcome: str) -> SendGridError | None:
        if outcome not in REFUSED:
            return None
        if outcome == "invalid_number":
            return SendGridError(
                400, "Does not contain a valid address.", "personalizations.0.to.0.email", anchor="personalizations.to"
            )
        if outcome == "unauthorized":
            return SendGridError(401, "The provided authorization grant is invalid, expired, or revoked")
        if outcome == "rate_limited":
            reset = str(int(time.time()) + self.state.retry_after)
            return SendGridError(
                429,
                "too many requests",
                headers={"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
            )
        return SendGridError(500, "internal error")

    def _accept(self, body: Mapping[str, Any], outcome: str) -> str:
        message_id = secrets.token_urlsafe(16)[:22]
        self.requests[message_id] = dict(body)
        personalization = body["personalizations"][0]
        args = {**(body.get("custom_args") or {}), **(personalization.get("custom_args") or {})}
        recipients = [r["email"] for r in personalization["to"] + (personalization.get("cc") or [])]
        msg_ids = [self._activity_entry(message_id, n, r, body, args) for n, r in enumerate(recipients)]
        self.state.record(
            provider_id=message_id, reference=args.get("reference"), destination=recipients[0], outcome=outcome
        )
        self.background.start(self._lifecycle(msg_ids, outcome, args))
        return message_id

    def _activity_entry(
        self, message_id: str, n: int, recipient: str, body: Mapping[str, Any], args: Mapping[str, str]
    ) -> str:
        msg_id = f"{message_id}.filter0425p1mdw1.{next(self._serial)}.{int(time.time()):X}.{n}"
        self.activity[msg_id] = {
            "from_email": body["from"]["email"],
            "msg_id": msg_id,
            "subject": body.get("subject", ""),
            "to_email": recipient,
            "status": "processed",
            "opens_count": 0,
            "clicks_count": 0,
            "last_event_time": iso_now(),
            "template_id": "",
            "asm_group_id": 0,
            "teammate": "",
            "api_key_id": "sandboxkey",
            "events": [],
            "originating_ip": "192.0.2.10",
            "categories": [],
            "unique_args": json.dumps(dict(args)),
            "outbound_ip": "192.0.2.20",
            "outbound_ip_type": "shared",
            "smtp_id": dict(body.get("headers") or {}).get("Message-ID"),
        }
        return msg_id

    # -- after acceptance: processed, then delivered or bounce, as signed batches -----------------

    async def _lifecycle(self, msg_ids: list[str], outcome: str, args: Mapping[str, str]) -> None:
        await asyncio.sleep(self.state.webhook_delay)
        await self._emit([self._advance(m, "processed", "processed", args) for m in msg_ids])
        await asyncio.sleep(self.state.webhook_delay)
        bounced = outcome in BOUNCES
        finals = [
            self._advance(
                m,
                "bounce" if bounced and i == 0 else "delivered",
                "not_delivered" if bounced and i == 0 else "delivered",
                args,
                bounce=BOUNCES.get(outcome),
            )
            for i, m in enumerate(msg_ids)
        ]
        await self._emit(finals)
        if outcome == "complaint":  # the first recipient marks the delivered message as spam
            await asyncio.sleep(self.state.webhook_delay)
            await self._emit([self._advance(msg_ids[0], "spamreport", "delivered", args)])

    def _advance(
        self, msg_id: str, event: str, status: str, args: Mapping[str, str], *, bounce: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        entry, now = self.activity[msg_id], int(time.time())
        entry.update(status=status, last_event_time=iso_now())
        payload: dict[str, Any] = {
            "email": entry["to_email"],
            "timestamp": now,
            "smtp-id": entry["smtp_id"],
            "event": event,
            "category": [],
            "sg_event_id": secrets.token_urlsafe(16),
            "sg_message_id": msg_id,
            **args,
        }
        if event == "delivered":
            payload.update(response="250 2.0.0 OK", ip="192.0.2.20", tls=1)
        if event == "bounce":
            payload.update(bounce or BOUNCES["bounce"])
        entry["events"].append(self._activity_event(event, payload))
        return payload

    @staticmethod
    def _activity_event(event: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        name = {"bounce": "bounced", "spamreport": "spam_report"}.get(event, event)
        activity = {
            "event_name": name,
            "processed": iso_now(),
            "bounce_type": "",
            "http_user_agent": "",
            "mx_server": "mx.sandbox.invalid",
        }
        if event == "bounce":
            activity.update(bounce_type=ACTIVITY_BOUNCE_TYPES[payload["type"]], reason=payload["reason"])
        return activity

    async def _emit(self, events: list[dict[str, Any]]) -> None:
        if not self.webhook_url:
            return
        body = json.dumps(events).encode()
        await post_webhook(
            self.webhook_url, lambda: (body, sign(self.signing_key, body)), delay=self.state.webhook_delay
        )

    async def scopes(self, request: Request) -> Response:
        """``GET /v3/scopes`` (the credential check): the key's scopes; the Email Activity one with the add-on."""
        self.authenticate(request)
        return JSONResponse({"scopes": ["mail.send", *(["messages.read"] if self.activity_api else [])]})

    # -- Email Activity --------------------------------------------------------------------------

    def _activity_allowed(self, request: Request) -> None:
        self.authenticate(request)
        if not self.activity_api:
            raise SendGridError(403, "access forbidden")

    async def list_messages(self, request: Request) -> Response:
        self._activity_allowed(request)
        try:
            limit = int(request.query_params.get("limit", "10"))
            terms = [_term(t) for t in re.split(r"\s+AND\s+", request.query_params.get("query", "")) if t.strip()]
        except ValueError as err:
            raise SendGridError(400, f"invalid syntax: {err}", "query") from None
        if not 0 < limit <= 1000:
            raise SendGridError(400, "limit must be greater than 0 and less than or equal to 1000", "limit")
        found = [m for m in reversed(self.activity.values()) if all(_matches(m, t) for t in terms)][:limit]
        keys = (
            "from_email",
            "msg_id",
            "subject",
            "to_email",
            "status",
            "opens_count",
            "clicks_count",
            "last_event_time",
        )
        return JSONResponse({"messages": [{k: m[k] for k in keys} for m in found]})

    async def get_message(self, request: Request, msg_id: str) -> Response:
        self._activity_allowed(request)
        entry = self.activity.get(msg_id)
        if entry is None:
            raise SendGridError(404, "Message not found")
        return JSONResponse({k: v for k, v in entry.items() if k != "smtp_id"})


def _term(text: str) -> tuple[str, str, str]:
    """(field, operator, value) of one query term; ``unique_args['k']`` becomes field ``unique_args.k``."""
    match = QUERY_TERM.match(text)
    if match is None:
        raise ValueError(f"cannot parse {text.strip()!r}")
    value = re.sub(r"\\(.)", r"\1", match["value"])
    if match["arg"] is not None:
        return f"unique_args.{match['arg']}", "=", value
    return match["field"], match["op"], value


def _matches(entry: Mapping[str, Any], term: tuple[str, str, str]) -> bool:
    field, op, value = term
    if field.startswith("unique_args."):
        actual = json.loads(entry["unique_args"]).get(field.removeprefix("unique_args."))
    else:
        actual = entry.get(field)
    if op == "LIKE":
        pattern = "^" + ".*".join(re.escape(part) for part in value.split("%")) + "$"
        return isinstance(actual, str) and re.match(pattern, actual) is not None
    return bool(actual == value)


def create_app(
    state: SandboxState,
    *,
    api_key: str,
    signing_key: ec.EllipticCurvePrivateKey,
    webhook_url: str | None = None,
    activity_api: bool = True,
) -> FastAPI:
    """The SendGrid emulator; events are signed with ``signing_key`` (give the gateway its public key)."""
    emulator = SendGridEmulator(
        state, api_key=api_key, signing_key=signing_key, webhook_url=webhook_url, activity_api=activity_api
    )
    app = emulator_app("SendGrid sandbox", state, emulator, SendGridError)
    app.add_api_route("/v3/mail/send", emulator.send, methods=["POST"])
    app.add_api_route("/v3/messages", emulator.list_messages, methods=["GET"])
    app.add_api_route("/v3/messages/{msg_id}", emulator.get_message, methods=["GET"])
    app.add_api_route("/v3/scopes", emulator.scopes, methods=["GET"])
    return app
