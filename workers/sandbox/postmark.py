"""An emulator of Postmark's Email and Messages APIs that posts Postmark's webhooks back.

Endpoints (``X-Postmark-Server-Token`` auth, JSON, PascalCase fields as on postmarkapp.com/developer):

- ``POST /email``: validates like Postmark (401 ErrorCode 10; 422 with ErrorCode 300 / 402 / 406 / 409),
  answers ``{To, SubmittedAt, MessageID, ErrorCode: 0, Message: "OK"}``, then posts a ``Delivery`` or
  ``Bounce`` webhook with the Basic-auth credentials embedded in the webhook URL.
- ``POST /email/batch``: a JSON array of up to 500 ``/email`` bodies (more: 422 ErrorCode 410, "Too many
  batch messages"; not an array: 422 ErrorCode 403, incompatible JSON), each validated like ``/email``;
  200 with one entry per message in order, ``{To, SubmittedAt, MessageID, ErrorCode: 0, Message: "OK"}``
  for an accepted one and ``{ErrorCode, Message}`` (the body ``/email`` would refuse it with) for a
  refused one; each accepted message is kept, recorded in the oracle and followed by its webhooks as
  from ``/email``; the latency is waited once per request. Postmark's 50 MB cap on a batch body is not
  enforced here: its answer to a larger body is not documented.
- ``GET /messages/outbound`` (``count``, ``offset``, ``recipient``, ``status``, ``metadata_<key>``),
  ``GET /messages/outbound/{id}/details`` (with ``MessageEvents``), ``GET /bounces/{id}``.
- ``/_sandbox/*`` control endpoints.

Scripted outcomes (``SandboxState.next_outcome(first To address)``): ok -> delivered; bounce -> a Bounce of Type
HardBounce; soft_bounce -> a Bounce of Type SoftBounce; complaint -> delivered, then a SpamComplaint record
(Type SpamComplaint, TypeCode 512); invalid_number -> 422 ErrorCode 406 (inactive recipient); rate_limited ->
429 ErrorCode 429 + Retry-After; server_error -> 500; bad_gateway -> accepted, then 502; drop -> accepted, then
the connection closes.

In a batch each message consumes its own first address's outcome (a request is an attempt for each of its
destinations). Postmark answers 401, 429 and 500 for a request, not a message: a message scripted
unauthorized, rate_limited or server_error refuses the whole request that way (nothing accepted); one
scripted bad_gateway or drop makes the request accept every valid message, then answer 502 or drop the
connection; invalid_number refuses its own message (ErrorCode 406).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import itertools
import json
import uuid
from collections.abc import Mapping
from email.utils import getaddresses, parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

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

SERVER_ID = 23
MAX_BATCH = 500  # messages per /email/batch (postmarkapp.com/developer/api/email-api#send-batch-emails)
REQUEST_REFUSALS = ("unauthorized", "rate_limited", "server_error")  # answered for a whole batch
AMBIGUOUS = ("bad_gateway", "drop")
INACTIVE = (
    "You tried to send to recipient(s) that have been marked as inactive.\nFound inactive addresses: "
    "{addresses}.\nInactive recipients are ones that have generated a hard bounce, a spam complaint, "
    "or a manual suppression."
)


# The Bounce webhook's fields that differ by Type (postmarkapp.com/developer/webhooks/bounce-webhook and the
# bounce-api Type list: HardBounce TypeCode 1, SoftBounce 4096, SpamComplaint 512).
BOUNCES: dict[str, dict[str, Any]] = {
    "bounce": {
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Inactive": True,
        "CanActivate": True,
    },
    "soft_bounce": {
        "Type": "SoftBounce",
        "TypeCode": 4096,
        "Name": "Soft bounce",
        "Description": "Unable to temporarily deliver this email.",
        "Details": "smtp;452 4.2.2 The email account that you tried to reach is over quota.",
        "Inactive": False,
        "CanActivate": True,
    },
    "complaint": {
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        "Description": "The subscriber explicitly marked this message as spam.",
        "Details": "",
        "Inactive": True,
        "CanActivate": False,
    },
}


class PostmarkError(ProviderError):
    """An error answer in Postmark's shape: ``{"ErrorCode": n, "Message": "..."}``."""

    def __init__(self, status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"ErrorCode": self.code, "Message": self.message}, status_code=self.status, headers=self.headers
        )


def _token_refused(token: str | None) -> PostmarkError:
    """Postmark's 401 (ErrorCode 10) for a missing or invalid server token."""
    if not token:
        return PostmarkError(
            401,
            10,
            "No Account or Server API tokens were supplied in the HTTP headers. "
            "Please add a header for either X-Postmark-Server-Token or X-Postmark-Account-Token.",
        )
    return PostmarkError(
        401,
        10,
        "The Server Token you provided in the X-Postmark-Server-Token request "
        "header was invalid. Please verify that you are using a valid token.",
    )


def split_credentials(url: str | None) -> tuple[str | None, str | None]:
    """(URL without userinfo, ``Basic ...`` header) for a webhook URL like ``https://u:p@host/path``."""
    if not url:
        return None, None
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return urlunsplit(parts._replace(netloc=netloc)), "Basic " + base64.b64encode(pair).decode()


def _addresses(value: object) -> list[str]:
    if not value:
        return []
    return [addr for _, addr in getaddresses([str(value)])]


def _first_address(body: Mapping[str, Any]) -> str:
    """The address a message's scripted outcome is looked up by: its first To, else its first Cc."""
    return _addresses(body.get("To"))[0] if body.get("To") else _addresses(body.get("Cc"))[0]


def _checked(body: Any) -> PostmarkError | None:
    """The refusal ``POST /email`` would give this body, or None."""
    try:
        validate_email(body)
    except PostmarkError as err:
        return err
    return None


def _valid(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(local and at and "." in domain and " " not in address)


def validate_email(body: Any) -> None:
    """Postmark's checks on ``POST /email``; raises PostmarkError (422) for the first problem."""
    if not isinstance(body, dict):
        raise PostmarkError(422, 402, "Received invalid JSON input.")
    sender = parseaddr(str(body.get("From") or ""))[1]
    if not _valid(sender):
        raise PostmarkError(422, 300, f"Invalid 'From' address: '{sender}'.")
    recipients = _addresses(body.get("To")) + _addresses(body.get("Cc")) + _addresses(body.get("Bcc"))
    if not recipients:
        raise PostmarkError(422, 300, "Zero recipients specified")
    for field in ("To", "Cc", "Bcc"):
        bad = [a for a in _addresses(body.get(field)) if not _valid(a)]
        if bad:
            raise PostmarkError(422, 300, f"Invalid '{field}' address: '{bad[0]}'.")
    if not body.get("TextBody") and not body.get("HtmlBody"):
        raise PostmarkError(422, 300, "Provide either email TextBody or HtmlBody or both.")
    metadata = body.get("Metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str | int | float) for v in metadata.values())
    ):
        raise PostmarkError(422, 300, "Invalid metadata content. Values must be strings or numbers.")


class PostmarkEmulator:
    """The messages one emulator instance accepted, and their life afterwards."""

    def __init__(self, state: SandboxState, *, server_token: str, webhook_url: str | None) -> None:
        self.state = state
        self.server_token = server_token
        self.webhook_url, self.webhook_auth = split_credentials(webhook_url)
        self.messages: dict[str, dict[str, Any]] = {}  # touched only on the event loop
        self.bounces: dict[int, dict[str, Any]] = {}
        self._bounce_ids = itertools.count(901542550)
        self.background = Background()

    def authenticate(self, request: Request) -> None:
        token = request.headers.get("x-postmark-server-token")
        if not token or not hmac.compare_digest(token.encode(), self.server_token.encode()):
            raise _token_refused(token)

    # -- POST /email -----------------------------------------------------------------------------

    async def _json_body(self, request: Request) -> Any:
        self.authenticate(request)
        if "json" not in request.headers.get("content-type", ""):
            raise PostmarkError(422, 409, "JSON required. Please provide the Content-Type: application/json header.")
        try:
            return json.loads(await request.body())
        except ValueError:
            raise PostmarkError(422, 402, "Received invalid JSON input.") from None

    async def send(self, request: Request) -> Response:
        body = await self._json_body(request)
        validate_email(body)
        first = _first_address(body)
        outcome = email_outcome(self.state.next_outcome(first))
        refusal = self._refusal(outcome, first)
        message = None if refusal is not None else self._accept(body, outcome)
        await asyncio.sleep(self.state.latency)
        if refusal is not None:
            return refusal.response()
        assert message is not None
        if outcome == "bad_gateway":
            return PlainTextResponse("502 Bad Gateway", status_code=502)
        if outcome == "drop":
            return DroppedResponse(200)
        return JSONResponse(
            {
                "To": body.get("To"),
                "SubmittedAt": message["ReceivedAt"],
                "MessageID": message["MessageID"],
                "ErrorCode": 0,
                "Message": "OK",
            }
        )

    # -- POST /email/batch ------------------------------------------------------------------------

    async def send_batch(self, request: Request) -> Response:
        body = await self._json_body(request)
        if not isinstance(body, list):
            raise PostmarkError(
                422,
                403,
                "The JSON input you provided is syntactically correct, but still not the one we expect.",
            )
        if len(body) > MAX_BATCH:
            raise PostmarkError(422, 410, f"Too many batch messages: you may send up to {MAX_BATCH} in one call.")
        checked = [_checked(entry) for entry in body]
        outcomes = [
            None if error else email_outcome(self.state.next_outcome(_first_address(entry)))
            for entry, error in zip(body, checked, strict=True)
        ]
        refused = next((o for o in outcomes if o in REQUEST_REFUSALS), None)
        answers = (
            [] if refused else [self._batch_entry(e, c, o) for e, c, o in zip(body, checked, outcomes, strict=True)]
        )
        await asyncio.sleep(self.state.latency)
        if refused is not None:
            refusal = self._refusal(refused, "")
            assert refusal is not None
            return refusal.response()
        ambiguous = next((o for o in outcomes if o in AMBIGUOUS), None)
        if ambiguous == "bad_gateway":
            return PlainTextResponse("502 Bad Gateway", status_code=502)
        if ambiguous == "drop":
            return DroppedResponse(200)
        return JSONResponse(answers)

    def _batch_entry(self, body: Any, error: PostmarkError | None, outcome: str | None) -> dict[str, Any]:
        """One message of a batch: its refusal, or its acceptance (kept, recorded, webhooks to follow)."""
        if error is None and outcome is not None:
            error = self._refusal(outcome, _first_address(body))
        if error is not None:
            return {"ErrorCode": error.code, "Message": error.message}
        assert outcome is not None
        message = self._accept(body, outcome)
        return {
            "To": body.get("To"),
            "SubmittedAt": message["ReceivedAt"],
            "MessageID": message["MessageID"],
            "ErrorCode": 0,
            "Message": "OK",
        }

    def _refusal(self, outcome: str, first: str) -> PostmarkError | None:
        if outcome not in REFUSED:
            return None
        if outcome == "invalid_number":
            return PostmarkError(422, 406, INACTIVE.format(addresses=first.lower()))
        if outcome == "unauthorized":
            return _token_refused("revoked")
        if outcome == "rate_limited":
            return PostmarkError(
                429,
                429,
                "Rate limit exceeded. Please slow down your request rate.",
                headers={"Retry-After": str(self.state.retry_after)},
            )
        return PostmarkError(500, 0, "Internal server error.")

    def _accept(self, body: Mapping[str, Any], outcome: str) -> dict[str, Any]:
        message = self._new_message(body)
        self.messages[message["MessageID"]] = message
        self.state.record(
            provider_id=message["MessageID"],
            reference=message["Metadata"].get("reference"),
            destination=message["Recipients"][0],
            outcome=outcome,
        )
        self.background.start(self._lifecycle(message["MessageID"], outcome))
        return message

    def _new_message(self, body: Mapping[str, Any]) -> dict[str, Any]:
        to = [{"Email": addr, "Name": name} for name, addr in getaddresses([str(body.get("To") or "")]) if addr]
        cc = [{"Email": addr, "Name": name} for name, addr in getaddresses([str(body.get("Cc") or "")]) if addr]
        metadata = {k: str(v) for k, v in (body.get("Metadata") or {}).items()}
        return {
            "Tag": body.get("Tag") or "",
            "MessageID": str(uuid.uuid4()),
            "MessageStream": body.get("MessageStream") or "outbound",
            "To": to,
            "Cc": cc,
            "Bcc": [],
            "Recipients": [r["Email"] for r in to + cc],
            "ReceivedAt": iso_now(),
            "From": body["From"],
            "Subject": body.get("Subject") or "",
            "Attachments": [a.get("Name") for a in body.get("Attachments") or []],
            "Status": "Sent",
            "TrackOpens": bool(body.get("TrackOpens")),
            "TrackLinks": body.get("TrackLinks") or "None",
            "Metadata": metadata,
            "Sandboxed": False,
            "TextBody": body.get("TextBody") or "",
            "HtmlBody": body.get("HtmlBody") or "",
            "Body": "",
            "Headers": body.get("Headers") or [],
            "MessageEvents": [],
        }

    # -- after acceptance: deliver or bounce, and tell the webhook -------------------------------

    async def _lifecycle(self, message_id: str, outcome: str) -> None:
        await asyncio.sleep(self.state.webhook_delay)
        message = self.messages[message_id]
        bounced = outcome in ("bounce", "soft_bounce")
        await self._post(self._bounce(message, outcome) if bounced else self._delivery(message))
        if outcome == "complaint":  # the person marks the delivered message as spam
            await asyncio.sleep(self.state.webhook_delay)
            await self._post(self._complaint(message))

    async def _post(self, payload: Mapping[str, Any]) -> None:
        if self.webhook_url:
            await post_webhook(self.webhook_url, lambda: self._signed(payload), delay=self.state.webhook_delay)

    def _delivery(self, message: dict[str, Any]) -> dict[str, Any]:
        now, recipient = iso_now(), message["Recipients"][0]
        message["MessageEvents"].append(
            {
                "Recipient": recipient,
                "Type": "Delivered",
                "ReceivedAt": now,
                "Details": {
                    "DeliveryMessage": "smtp;250 2.0.0 OK",
                    "DestinationServer": "mx.sandbox.invalid",
                    "DestinationIP": "192.0.2.25",
                },
            }
        )
        return {
            "RecordType": "Delivery",
            "ServerID": SERVER_ID,
            "MessageStream": message["MessageStream"],
            "MessageID": message["MessageID"],
            "Recipient": recipient,
            "Tag": message["Tag"],
            "DeliveredAt": now,
            "Details": "smtp;250 2.0.0 OK",
            "Metadata": message["Metadata"],
        }

    def _bounce_record(self, message: dict[str, Any], outcome: str) -> dict[str, Any]:
        """A bounce as the Bounce API keeps it (spam complaints are bounces of Type SpamComplaint there)."""
        bounce_id = next(self._bounce_ids)
        bounce = {
            "ID": bounce_id,
            **{k: BOUNCES[outcome][k] for k in ("Type", "TypeCode", "Name")},
            "MessageID": message["MessageID"],
            "ServerID": SERVER_ID,
            "MessageStream": message["MessageStream"],
            "Description": BOUNCES[outcome]["Description"],
            "Details": BOUNCES[outcome]["Details"],
            "Email": message["Recipients"][0],
            "From": message["From"],
            "BouncedAt": iso_now(),
            "DumpAvailable": True,
            "Inactive": BOUNCES[outcome]["Inactive"],
            "CanActivate": BOUNCES[outcome]["CanActivate"],
            "Subject": message["Subject"],
            "Tag": message["Tag"],
        }
        self.bounces[bounce_id] = bounce
        return bounce

    def _complaint(self, message: dict[str, Any]) -> dict[str, Any]:
        """The SpamComplaint webhook (postmarkapp.com/developer/webhooks/spam-complaint-webhook)."""
        complaint = self._bounce_record(message, "complaint")
        return {"RecordType": "SpamComplaint", **complaint, "Content": "", "Metadata": message["Metadata"]}

    def _bounce(self, message: dict[str, Any], outcome: str) -> dict[str, Any]:
        bounce = self._bounce_record(message, outcome)
        bounce_id, now, recipient = bounce["ID"], bounce["BouncedAt"], bounce["Email"]
        message["MessageEvents"].append(
            {
                "Recipient": recipient,
                "Type": "Bounced",
                "ReceivedAt": now,
                "Details": {"Summary": bounce["Description"], "BounceID": str(bounce_id)},
            }
        )
        return {"RecordType": "Bounce", **bounce, "Content": "", "Metadata": message["Metadata"]}

    def _signed(self, payload: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        headers = {"content-type": "application/json"}
        if self.webhook_auth:
            headers["authorization"] = self.webhook_auth
        return json.dumps(payload).encode(), headers

    # -- Messages API, Bounce API ----------------------------------------------------------------

    async def search(self, request: Request) -> Response:
        self.authenticate(request)
        query = request.query_params
        try:
            count, offset = int(query["count"]), int(query["offset"])
        except (KeyError, ValueError):
            raise PostmarkError(422, 300, "The 'count' and 'offset' parameters are required.") from None
        if not 0 < count <= 500 or offset < 0 or count + offset > 10000:
            raise PostmarkError(422, 300, "Count must be 1-500 and Count + Offset cannot exceed 10,000.")
        found = [m for m in reversed(self.messages.values()) if _matches(m, query)]  # newest first
        summaries = [
            {k: v for k, v in m.items() if k not in ("TextBody", "HtmlBody", "Body", "Headers", "MessageEvents")}
            for m in found
        ]
        return JSONResponse({"TotalCount": len(found), "Messages": summaries[offset : offset + count]})

    async def details(self, request: Request, message_id: str) -> Response:
        self.authenticate(request)
        message = self.messages.get(message_id)
        if message is None:
            raise PostmarkError(404, 701, "This message was not found.")
        return JSONResponse(message)

    async def server(self, request: Request) -> Response:
        """``GET /server`` (the credential check): this server's settings."""
        self.authenticate(request)
        return JSONResponse(
            {
                "ID": 1,
                "Name": "Sandbox",
                "Color": "blue",
                "SmtpApiActivated": True,
                "DeliveryHookUrl": self.webhook_url or "",
                "BounceHookUrl": self.webhook_url or "",
                "TrackOpens": False,
                "TrackLinks": "None",
            }
        )

    async def bounce(self, request: Request, bounce_id: int) -> Response:
        self.authenticate(request)
        if bounce_id not in self.bounces:
            raise PostmarkError(404, 605, "Bounce not found.")
        return JSONResponse(self.bounces[bounce_id])


def _matches(message: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    if "recipient" in query and query["recipient"].lower() not in [r.lower() for r in message["Recipients"]]:
        return False
    if "status" in query and query["status"].lower() != str(message["Status"]).lower():
        return False
    for key, value in query.items():
        if key.startswith("metadata_") and message["Metadata"].get(key.removeprefix("metadata_")) != value:
            return False
    return True


def create_app(state: SandboxState, *, server_token: str, webhook_url: str | None = None) -> FastAPI:
    """The Postmark emulator; ``webhook_url`` may embed Basic-auth credentials (``https://u:p@host/``)."""
    emulator = PostmarkEmulator(state, server_token=server_token, webhook_url=webhook_url)
    app = emulator_app("Postmark sandbox", state, emulator, PostmarkError)
    app.add_api_route("/email", emulator.send, methods=["POST"])
    app.add_api_route("/email/batch", emulator.send_batch, methods=["POST"])
    app.add_api_route("/messages/outbound", emulator.search, methods=["GET"])
    app.add_api_route("/messages/outbound/{message_id}/details", emulator.details, methods=["GET"])
    app.add_api_route("/bounces/{bounce_id}", emulator.bounce, methods=["GET"])
    app.add_api_route("/server", emulator.server, methods=["GET"])
    return app
