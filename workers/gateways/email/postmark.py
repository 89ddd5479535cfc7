"""Postmark: ``POST /email`` and ``/email/batch``, lookups by MessageID and by ``Metadata.reference``, webhooks.

Followed, field by field:

- postmarkapp.com/developer/api/overview: ``X-Postmark-Server-Token``; HTTP 401 for a missing or wrong
  token, 422 with ``{"ErrorCode", "Message"}`` for a refused request, 429 rate limit, 500/503; the
  API error codes (10 bad or missing token, 100 maintenance, 300 invalid email request, 400/401
  sender signature, 405 not allowed to send, 406 inactive recipient, 411 forbidden attachment, 412/413
  account pending / may not send, 429 rate limit exceeded).
- postmarkapp.com/developer/api/email-api: the send body (From, To, Cc, ReplyTo, Subject, TextBody,
  HtmlBody, Headers ``[{Name, Value}]``, Metadata, MessageStream, Attachments ``[{Name, Content,
  ContentType}]``, TrackOpens, TrackLinks) and the answer (To, SubmittedAt, MessageID, ErrorCode, Message).
- postmarkapp.com/developer/api/email-api#send-batch-emails and user-guide/send-email-with-api/batch-emails:
  ``POST /email/batch`` takes a JSON array of ``/email`` bodies, "up to 500 messages per API call, and up
  to 50 MB payload size, including attachments"; it answers 200 with "a matching JSON array" of
  ``{ErrorCode, Message, MessageID, SubmittedAt, To}``, in the messages' order, even when some were
  refused (postmark-php wiki "Sending Batches"); API error 410 "Too many batch messages" (overview).
- postmarkapp.com/developer/api/messages-api and support article "Custom metadata FAQ": outbound
  search ``GET /messages/outbound?count&offset&metadata_<key>=<value>`` (one metadata field at a time),
  ``GET /messages/outbound/{id}/details`` with ``Status`` and ``MessageEvents``; bounce-api
  ``GET /bounces/{id}`` and the bounce ``Type`` list with its TypeCodes.
- postmarkapp.com/developer/webhooks (delivery, bounce, spam complaint payloads) and webhook HTTP auth:
  Postmark sends the Basic-auth credentials configured on the webhook (or embedded in its URL).
- ActiveCampaign/postmark-python (official SDK): ``postmark/exceptions.py`` (code -> exception),
  ``postmark/models/outbound/enums.py`` (MessageStatus, MessageEventType),
  ``postmark/models/bounces/enums.py`` (BounceType); postmarker (Postmark's recommended client)
  ``postmarker/core.py``, ``postmarker/models/emails.py``, ``postmarker/models/messages.py``.
  Batches: postmark-python ``postmark/models/outbound/manager.py`` ``send_batch`` (a bare array of the
  ``Email`` bodies of ``schemas.py``, over 500 refused before any call, one ``SendResponse`` per entry)
  and ``tests/test_send_messages.py`` (``test_send_batch``: the answer the tests here reuse); postmarker
  ``EmailBatch`` (``MAX_SIZE = 500``, a longer batch split into chunks of 500) and
  ``EmailManager._send_batch``.
- django-anymail (github.com/anymail/django-anymail): ``anymail/backends/postmark.py`` (300/406
  handling), ``anymail/webhooks/postmark.py`` (RecordType and bounce Type tables) and
  ``tests/test_postmark_webhooks.py`` (captured payloads).

Postmark has no idempotency key. Our reference travels in ``Metadata.reference`` and our Message-ID in
``Headers``; an Unknown outcome is reconciled with :meth:`PostmarkGateway.find_by_reference`.

A batch maps exactly as single sends do: each entry's ErrorCode through the same table (300 -> Permanent,
406 inactive -> Permanent, 10 -> ConfigurationFault, 100/429 -> Transient), and an answer for the whole
request (401, 422 for the body, 429, 5xx, a timeout or a dropped connection) is what ``/email`` would have
said, for each message: a timeout or a dropped connection after the request left is Unknown for every
message, each reconciled by its own ``Metadata.reference``. An answer that does not pair one entry with
each message is Unknown for all. :meth:`Gateway.send_many` splits longer batches (``max_batch``,
``max_batch_bytes``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.domain.messages import (
    EmailMessage,
    EventKind,
    Message,
    Receipt,
    StatusEvent,
    Suppress,
    WebhookRequest,
)
from workers.gateways.email.common import HttpEmailGateway, b64, header, lookup_object, webhook_json
from workers.gateways.errors import (
    ConfigurationFault,
    DeliveryError,
    Permanent,
    StatusLookupError,
    Transient,
    Unknown,
    WebhookAuthError,
    WebhookFormatError,
)
from workers.gateways.http import check_answer, error_for_status, retry_after_seconds
from workers.gateways.values import ErrorClass, integer, obj, objects, parse_time, text

log = logging.getLogger(__name__)

PROVIDER = "postmark"

# Webhook RecordType -> our kind. Open, Click and SubscriptionChange are authentic but not tracked.
RECORD_KINDS: dict[str, EventKind] = {
    "Delivery": EventKind.DELIVERED,
    "Bounce": EventKind.BOUNCED,
    "SpamComplaint": EventKind.COMPLAINED,
}

# Bounce ``Type`` -> (kind, error class), for every type Postmark documents (bounce-api#bounce-types).
# DEFERRED: Postmark is still trying itself (Transient, DnsError) -- nothing for us to do yet.
# BOUNCED transient: this copy is lost but the mailbox may take a new one later (SoftBounce: full, off).
# permanent: the address, or Postmark's view of it, will not change by resending.
# None: informational (auto-replies, subscribe requests, relay tests): the message was not refused.
BOUNCE_TYPES: dict[str, tuple[EventKind, ErrorClass] | None] = {
    "HardBounce": (EventKind.BOUNCED, "permanent"),
    "Transient": (EventKind.DEFERRED, "transient"),
    "Unsubscribe": (EventKind.FAILED, "permanent"),
    "Subscribe": None,
    "AutoResponder": None,
    "AddressChange": (EventKind.BOUNCED, "permanent"),
    "DnsError": (EventKind.DEFERRED, "transient"),
    "SpamNotification": (EventKind.COMPLAINED, "permanent"),
    "OpenRelayTest": None,
    "Unknown": (EventKind.BOUNCED, "transient"),
    "SoftBounce": (EventKind.BOUNCED, "transient"),
    "VirusNotification": (EventKind.BOUNCED, "permanent"),
    "ChallengeVerification": None,
    "BadEmailAddress": (EventKind.BOUNCED, "permanent"),
    "SpamComplaint": (EventKind.COMPLAINED, "permanent"),
    "ManuallyDeactivated": (EventKind.FAILED, "permanent"),
    "Unconfirmed": (EventKind.FAILED, "permanent"),
    "Blocked": (EventKind.BOUNCED, "permanent"),
    "SMTPApiError": (EventKind.FAILED, "permanent"),
    "InboundError": None,
    "DMARCPolicy": (EventKind.BOUNCED, "permanent"),
    "TemplateRenderingFailed": (EventKind.FAILED, "permanent"),
}
# A type Postmark adds later: nothing was delivered; retry until the campaign deadline decides.
DEFAULT_BOUNCE: tuple[EventKind, ErrorClass] = (EventKind.BOUNCED, "transient")

# Bounce ``Type`` -> what it says of the address, for our suppression list (supporter copies only): the mailbox
# does not exist or the address is malformed (HardBounce, TypeCode 1; BadEmailAddress, 100000), or the person
# marked the message as spam (the SpamComplaint record, Type SpamComplaint, 512). A SoftBounce (4096), a
# Transient or DnsError, a Blocked (ISP policy), a DMARCPolicy or a SpamNotification (a filter's verdict,
# not the person's) says nothing about the address.
SUPPRESSING_TYPES: dict[str, Suppress] = {
    "HardBounce": "hard-bounce",
    "BadEmailAddress": "hard-bounce",
    "SpamComplaint": "complaint",
}

# ``Status`` of an outbound message (postmark-python models/outbound/enums.py MessageStatus).
STATUS_KINDS: dict[str, EventKind] = {
    "Queued": EventKind.QUEUED,
    "Scheduled": EventKind.QUEUED,
    "Processed": EventKind.SENDING,
    "Sent": EventKind.SENDING,  # handed to Postmark's MTA; the Delivered event says more
    "Blocked": EventKind.FAILED,
    "Failed": EventKind.FAILED,
}

# ``MessageEvents[].Type`` in message details (MessageEventType); opens and clicks say nothing new.
MESSAGE_EVENT_KINDS: dict[str, EventKind] = {
    "Delivered": EventKind.DELIVERED,
    "Transient": EventKind.DEFERRED,
    "Bounced": EventKind.BOUNCED,
}

# API ErrorCodes that mean "try again later": the request was refused before anything was sent.
TRANSIENT_CODES: dict[int, str] = {100: "maintenance", 429: "rate limit exceeded"}
BAD_TOKEN = 10
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")  # written into JSON as it is


class PostmarkSettings(BaseSettings):
    """``DISPATCH_<NAME>_*``: the server token, the message stream, the webhook Basic-auth pair."""

    model_config = SettingsConfigDict(env_prefix="DISPATCH_POSTMARK_", extra="ignore")

    server_token: SecretStr
    base_url: str = "https://api.postmarkapp.com"
    message_stream: str = "outbound"
    webhook_username: str | None = None  # the HTTP auth set on the Postmark webhook (or in its URL)
    webhook_password: SecretStr | None = None
    reconcile_count: int = Field(default=50, ge=1, le=500)  # messages read by find_by_reference


class PostmarkGateway(HttpEmailGateway[PostmarkSettings]):
    """Postmark's Email API (one message per call)."""

    provider: ClassVar[str] = PROVIDER
    settings_class: ClassVar[type[BaseSettings]] = PostmarkSettings
    # One record per POST, a few KB; a Bounce carries the raw bounce in ``Content`` when the webhook
    # includes bounce content, and that may quote our message, which Postmark caps at 10 MB
    # (postmarkapp.com/developer: "Maximum email size is 10 MB").
    max_webhook_bytes: ClassVar[int] = 12 * 1024 * 1024
    # Not documented: Postmark states that the API answers 429 when a client sends too fast, but
    # publishes no number (postmarkapp.com/developer/api/overview, "API error codes"); conservative.
    per_second: ClassVar[int] = 50
    in_flight: ClassVar[int] = 10
    # POST /email/batch: "up to 500 messages per API call, and up to 50 MB payload size, including
    # attachments" (email-api#send-batch-emails); 50 MB read as 50,000,000 bytes of JSON body, the lower reading.
    max_batch: ClassVar[int] = 500
    max_batch_bytes: ClassVar[int | None] = 50_000_000

    def __init__(self, settings: BaseSettings, *, name: str | None = None, client: httpx.Client | None = None) -> None:
        super().__init__(settings, name=name, client=client)

    def auth_headers(self) -> dict[str, str]:
        return {"X-Postmark-Server-Token": self.config.server_token.get_secret_value()}

    # -- the credential check at start-up -------------------------------------------------------

    def _check_credentials(self) -> None:
        """``GET /server`` with the server token (Postmark's Server API): the server's settings, nothing sent."""
        check_answer(self.call("GET", "/server"), name=self.name, setting=self.setting("server_token"))

    # -- sending ---------------------------------------------------------------------------------

    def _send_email(self, email: EmailMessage) -> Receipt:
        """``POST /email``; 200 with ``ErrorCode`` 0 is an acceptance, anything else is mapped."""
        self.check_recipients(email)
        response = self.call("POST", "/email", json=self.send_body(email))
        body = _json_or_none(response)
        code = _error_code(body)
        if not response.is_success or code not in (0, None):
            raise self._send_error(response, body, code)
        receipt = self._receipt(response, body)
        # Addresses are personal data: INFO names the message, never the recipients.
        log.info("postmark accepted %s for reference %s", receipt.provider_id, email.reference)
        return receipt

    def _send_email_batch(self, emails: Sequence[EmailMessage]) -> list[Receipt | DeliveryError]:
        """``POST /email/batch``: one entry per email in the answer, mapped as ``/email``'s answer is.

        An email without a recipient is refused before the call and left out of the request."""
        outcomes: list[Receipt | DeliveryError | None] = [_recipients_refusal(self, email) for email in emails]
        sending = [index for index, outcome in enumerate(outcomes) if outcome is None]
        if sending:
            response = self.call("POST", "/email/batch", json=[self.send_body(emails[i]) for i in sending])
            for index, outcome in zip(sending, self._batch_outcomes(response, len(sending)), strict=True):
                outcomes[index] = outcome
        results = [outcome for outcome in outcomes if outcome is not None]
        if sending:
            # Addresses are personal data: the log names counts and references, never the recipients.
            accepted = sum(isinstance(r, Receipt) for r in results)
            log.info("postmark accepted %d of %d messages in one batch", accepted, len(sending))
            for email, result in zip(emails, results, strict=True):
                if isinstance(result, Receipt):
                    log.debug("postmark accepted %s for reference %s", result.provider_id, email.reference)
        return results

    def _batch_outcomes(self, response: httpx.Response, count: int) -> list[Receipt | DeliveryError]:
        """Each entry of a batch answer; raises what a single send would for an answer to the whole request."""
        body = _json_or_none(response)
        code = _error_code(body)
        if not response.is_success or code not in (0, None):
            raise self._send_error(response, body, code)
        if not isinstance(body, list) or len(body) != count:
            raise Unknown(
                f"{PROVIDER}: HTTP {response.status_code}: the batch answer does not pair one entry with each "
                f"of its {count} messages",
                code="no_id",
                raw=body if body is not None else response.text[:2000],
            )
        return [self._entry_outcome(response, entry) for entry in body]

    def _entry_outcome(self, response: httpx.Response, entry: Any) -> Receipt | DeliveryError:
        """One message's entry: its ErrorCode mapped as ``/email``'s, else its receipt."""
        code = _error_code(entry)
        if code not in (0, None):
            return self._send_error(response, entry, code)
        try:
            return self._receipt(response, entry)
        except Unknown as err:
            return err

    def _batch_bytes(self, message: Message) -> int:
        """The message's share of a batch body, never less than its ``/email`` body as httpx encodes it
        and a comma: a bound read off the body's strings while 500 such fit in ``max_batch_bytes``
        (a fifth of the cost of encoding it), else the exact size."""
        if not isinstance(message, EmailMessage):
            return 0
        body = self.send_body(message)
        bound = json_bound(body) + 1
        if self.max_batch_bytes is None or bound <= self.max_batch_bytes // self.max_batch:
            return bound
        encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        return len(encoded) + 1

    def send_body(self, message: EmailMessage) -> dict[str, Any]:
        headers = [{"Name": "Message-ID", "Value": message.message_id}]
        headers += [{"Name": k, "Value": v} for k, v in message.headers.items() if k.lower() != "message-id"]
        body: dict[str, Any] = {
            "From": message.sender,
            "To": ", ".join(message.to),
            "Subject": message.subject,
            "TextBody": message.text,
            "Headers": headers,
            "Metadata": {"reference": message.reference},
            "MessageStream": self.config.message_stream,
            # A letter to an official must arrive as written: no tracking pixel, no rewritten links.
            "TrackOpens": False,
            "TrackLinks": "None",
        }
        if message.cc:
            body["Cc"] = ", ".join(message.cc)
        if message.reply_to:
            body["ReplyTo"] = message.reply_to
        if message.html is not None:
            body["HtmlBody"] = message.html
        if message.attachments:
            body["Attachments"] = [
                {"Name": a.filename, "Content": b64(a.content), "ContentType": a.content_type}
                for a in message.attachments
            ]
        return body

    def _receipt(self, response: httpx.Response, body: Any) -> Receipt:
        message_id = text(obj(body).get("MessageID"))
        if not message_id:
            # Postmark said yes but gave no id we could follow: reconcile by reference.
            raise Unknown(
                f"{PROVIDER}: HTTP {response.status_code} without a MessageID",
                code="no_id",
                raw=body if body is not None else response.text[:2000],
            )
        # "Message accepted, but delivery may be delayed." is still an acceptance (anymail #392).
        status = "Queued" if "delayed" in str(body.get("Message", "")) else "Sent"
        return Receipt(
            provider=PROVIDER, provider_id=str(message_id), accepted_at=datetime.now(UTC), status=status, raw=body
        )

    def _send_error(self, response: httpx.Response, body: Any, code: int | None) -> DeliveryError:
        """Map a refusal: the API ErrorCode decides first, then the HTTP status."""
        status = response.status_code
        explanation = str(body.get("Message", "")) if isinstance(body, dict) else response.text[:300]
        label = (
            f"{PROVIDER}: HTTP {status} ErrorCode {code}: {explanation}"
            if code is not None
            else f"{PROVIDER}: HTTP {status}: {explanation}"
        )
        if code == BAD_TOKEN or status in (401, 403):
            return ConfigurationFault(
                f"{label} -- check {self.setting('server_token')} (a *server* token)",
                code=str(code if code is not None else status),
                raw=body,
                setting=self.setting("server_token"),
            )
        if code in TRANSIENT_CODES or status == 429:
            return Transient(
                label,
                code=str(code if code is not None else status),
                raw=body,
                retry_after=retry_after_seconds(response.headers),
            )
        if code is not None and (status < 500 or status == 200):
            # 300 invalid request (a bad To among them), 406 inactive recipient, 400/401 sender
            # signature, 405/412/413 account: resending the same request gets the same answer.
            return Permanent(label, code=str(code), raw=body)
        return error_for_status(response, provider=PROVIDER, detail=explanation)

    # -- status lookups --------------------------------------------------------------------------

    def _fetch_status(self, provider_id: str) -> StatusEvent:
        """``GET /messages/outbound/{id}/details``: the newest delivery event, else the message Status."""
        response = self.lookup("GET", f"/messages/outbound/{provider_id}/details")
        if response.status_code == 404:
            raise StatusLookupError(f"{PROVIDER}: no outbound message {provider_id}")
        details = lookup_object(response, provider=PROVIDER)
        return self._details_event(provider_id, details)

    def _find_by_reference(self, reference: str, *, to: str | None, sent_after: datetime | None) -> StatusEvent | None:
        """Outbound search by ``metadata_reference``; None only when Postmark knows no such message.

        The metadata filter is exact, so ``to`` and ``sent_after`` narrow nothing further."""
        params = {"count": self.config.reconcile_count, "offset": 0, "metadata_reference": reference}
        body = lookup_object(self.lookup("GET", "/messages/outbound", params=params), provider=PROVIDER)
        messages, total = body.get("Messages"), integer(body.get("TotalCount"))
        if not isinstance(messages, list) or total is None:
            raise StatusLookupError(f"{PROVIDER}: outbound search answer without Messages or TotalCount")
        ours = [m for m in objects(messages) if _reference(m) == reference]
        if not ours:
            if total > len(messages):
                raise StatusLookupError(
                    f"{PROVIDER}: {total} matches, more than one page: cannot conclude the message was never sent"
                )
            return None
        if len(ours) > 1:
            log.warning("postmark: %d messages carry reference %s", len(ours), reference)
        message_id = text(ours[0].get("MessageID"))  # newest first, per the Messages API
        if not message_id:
            raise StatusLookupError(f"{PROVIDER}: a message carries our reference but no MessageID")
        return self._fetch_status(message_id)

    def _details_event(self, provider_id: str, details: Mapping[str, Any]) -> StatusEvent:
        reference = _reference(details)
        events = [e for e in objects(details.get("MessageEvents")) if text(e.get("Type")) in MESSAGE_EVENT_KINDS]
        if events:
            latest = max(events, key=lambda e: parse_time(e.get("ReceivedAt")) or datetime.min.replace(tzinfo=UTC))
            return self._message_event(provider_id, latest, reference, details)
        status = text(details.get("Status")) or ""
        kind = STATUS_KINDS.get(status)
        if kind is None:
            raise StatusLookupError(f"{PROVIDER}: message {provider_id} has status {status!r}")
        failed = kind is EventKind.FAILED
        return StatusEvent(
            provider=PROVIDER,
            provider_id=provider_id,
            kind=kind,
            occurred_at=parse_time(details.get("ReceivedAt")) or datetime.now(UTC),
            reference=reference,
            error_class="permanent" if failed else None,
            error_code=status if failed else None,
            raw=dict(details),
        )

    def _message_event(
        self, provider_id: str, event: Mapping[str, Any], reference: str | None, details: Mapping[str, Any]
    ) -> StatusEvent:
        kind = MESSAGE_EVENT_KINDS[str(event["Type"])]
        error_class: ErrorClass | None = "transient" if kind is EventKind.DEFERRED else None
        code = None
        event_details = obj(event.get("Details"))
        if kind is EventKind.BOUNCED:
            # The summary does not say hard or soft; the bounce record does.
            code = self._bounce_type(event_details.get("BounceID"))
            kind, error_class = bounce_kind(code) or DEFAULT_BOUNCE
        return StatusEvent(
            provider=PROVIDER,
            provider_id=provider_id,
            kind=kind,
            occurred_at=parse_time(event.get("ReceivedAt")) or datetime.now(UTC),
            reference=reference,
            error_class=error_class,
            error_code=code,
            detail=text(event_details.get("Summary")) or text(event_details.get("DeliveryMessage")),
            suppress=SUPPRESSING_TYPES.get(code or ""),
            raw=dict(details),
        )

    def _bounce_type(self, bounce_id: object) -> str | None:
        """The bounce record's ``Type``; None when the summary names no bounce (a numeric ``BounceID``)."""
        number = integer(bounce_id)
        if number is None:
            return None
        response = self.lookup("GET", f"/bounces/{number}")
        if response.status_code == 404:
            return None
        return text(lookup_object(response, provider=PROVIDER).get("Type")) or None

    # -- webhooks --------------------------------------------------------------------------------

    def _parse_webhook(self, request: WebhookRequest) -> list[StatusEvent]:
        """Check the webhook's Basic-auth credentials, then decode one Delivery/Bounce/SpamComplaint."""
        self._authenticate(request)
        payload = webhook_json(request.body, provider=PROVIDER)
        if not isinstance(payload, dict):
            raise WebhookFormatError(f"{PROVIDER}: webhook body is not a JSON object")
        kind = RECORD_KINDS.get(str(payload.get("RecordType")))
        if kind is None:
            return []  # opens, clicks, subscription changes: authentic, not ours to track
        event = self._webhook_event(kind, payload)
        return [] if event is None else [event]

    def _authenticate(self, request: WebhookRequest) -> None:
        user, password = self.config.webhook_username, self.config.webhook_password
        if not user or password is None:
            # Never accept unauthenticated status reports: a forged "delivered" would end a campaign.
            raise WebhookAuthError(
                f"{PROVIDER}: webhooks refused until {self.setting('webhook_username')} "
                f"and {self.setting('webhook_password')} are set"
            )
        expected = f"{user}:{password.get_secret_value()}".encode()
        if not hmac.compare_digest(_basic_credentials(header(request.headers, "authorization")), expected):
            raise WebhookAuthError(f"{PROVIDER}: missing or wrong webhook Basic-auth credentials")

    def _webhook_event(self, kind: EventKind, payload: Mapping[str, Any]) -> StatusEvent | None:
        message_id = text(payload.get("MessageID"))
        when = parse_time(payload.get("DeliveredAt") or payload.get("BouncedAt"))
        if not message_id or when is None:
            raise WebhookFormatError(f"{PROVIDER}: {payload.get('RecordType')} without MessageID or time")
        error_class: ErrorClass | None = None
        code = None
        if kind is not EventKind.DELIVERED:
            code = text(payload.get("Type")) or str(payload.get("RecordType"))
            mapped = bounce_kind(code)
            if mapped is None:
                return None  # an auto-reply or similar: not a refusal of the letter
            kind, error_class = mapped
        return StatusEvent(
            provider=PROVIDER,
            provider_id=message_id,
            kind=kind,
            occurred_at=when,
            reference=_reference(payload),
            error_class=error_class,
            error_code=code,
            detail=text(payload.get("Description")) or text(payload.get("Details")),
            event_id=_event_id(payload),
            suppress=SUPPRESSING_TYPES.get(code or ""),
            raw=dict(payload),
        )


def bounce_kind(bounce_type: str | None) -> tuple[EventKind, ErrorClass] | None:
    """(kind, class) for a bounce Type; None for informational types (see :data:`BOUNCE_TYPES`)."""
    if bounce_type is None:
        return DEFAULT_BOUNCE
    return BOUNCE_TYPES.get(bounce_type, DEFAULT_BOUNCE)


def _reference(record: Mapping[str, Any]) -> str | None:
    """Our reference in a message's or a webhook's ``Metadata``."""
    return text(obj(record.get("Metadata")).get("reference"))


def _event_id(payload: Mapping[str, Any]) -> str:
    """Bounces carry an ID; a delivery is identified by its message and time (no address in ids)."""
    if payload.get("ID") is not None:
        return f"{payload.get('RecordType')}:{payload['ID']}"
    return f"{payload.get('RecordType')}:{payload.get('MessageID')}:{payload.get('DeliveredAt')}"


def _basic_credentials(value: str | None) -> bytes:
    """The ``user:password`` bytes of a Basic Authorization header; empty when absent or unreadable."""
    scheme, _, encoded = (value or "").partition(" ")
    if scheme.lower() != "basic":
        return b""
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b""


def json_bound(value: object) -> int:
    """An upper bound of ``value``'s compact JSON in UTF-8, without encoding it: a character of a string
    takes at most 6 bytes (an escape such as ``\\u001f``), of base64 text (attachments) one."""
    if isinstance(value, str):
        return len(value) + 2 if len(value) >= 64 and _BASE64.fullmatch(value) else 6 * len(value) + 2
    if isinstance(value, dict):
        return 2 + sum(json_bound(str(key)) + json_bound(item) + 2 for key, item in value.items())
    if isinstance(value, list | tuple):
        return 2 + sum(json_bound(item) + 1 for item in value)
    return len(json.dumps(value))  # numbers, booleans, null: as written


def _recipients_refusal(gateway: HttpEmailGateway[Any], email: EmailMessage) -> Permanent | None:
    """The refusal of an email no provider call could deliver (no addressee), or None."""
    try:
        gateway.check_recipients(email)
    except Permanent as err:
        return err
    return None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_code(body: Any) -> int | None:
    code = body.get("ErrorCode") if isinstance(body, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None
