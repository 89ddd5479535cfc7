"""SendGrid v3: ``POST /v3/mail/send``, Email Activity lookups, the Signed Event Webhook (ECDSA P-256).

Followed, field by field:

- twilio.com/docs/sendgrid/api-reference/mail-send: the body (``personalizations[].to/cc/custom_args``,
  ``from``, ``reply_to``, ``subject``, ``content[]`` text/plain then text/html, ``headers``,
  ``attachments[].content/type/filename/disposition``, ``tracking_settings``), 202 with an empty body and
  the ``X-Message-Id`` header; .../mail-send/errors: ``{"errors": [{"message", "field", "help"}]}``, 400
  for every parameter error, 401, 403, 413, 429 (``X-RateLimit-Reset``), 500, 503.
- twilio/sendgrid-oai ``spec/yaml/tsg_email_activity_v3.yaml``: ``GET /v3/messages?query=..&limit=..``
  -> ``{"messages": [{msg_id, status: processed|delivered|not_delivered, ...}]}`` and
  ``GET /v3/messages/{msg_id}`` -> ``events[]`` (``event_name``, ``bounce_type`` soft|hard, ``reason``);
  "Getting Started with the Email Activity Feed API" (query format ``field="value"``, the query
  reference naming ``unique_args``, and the paid add-on requirement). The custom-argument form
  ``unique_args['reference']="..."`` is the one client libraries build (e.g. StrongGrid's
  ``SearchCriteriaUniqueArg``); ``msg_id LIKE "<X-Message-Id>%"`` matches the per-recipient ids that
  start with the send's X-Message-Id.
- twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features:
  ECDSA (P-256, SHA-256) signature, base64 DER, in ``X-Twilio-Email-Event-Webhook-Signature`` over
  ``timestamp + raw body`` (``X-Twilio-Email-Event-Webhook-Timestamp``); verification key shown in the
  UI as base64 DER SubjectPublicKeyInfo -- exactly what the official ``sendgrid`` package's
  ``helpers/eventwebhook`` (``EventWebhook.verify_signature``) does.
- .../tracking-events/event: event names, ``sg_message_id`` (``<X-Message-Id>.filter...``),
  ``sg_event_id``, bounce ``type`` bounce|blocked, custom args flattened into each event.
- django-anymail (github.com/anymail/django-anymail): ``anymail/backends/sendgrid.py`` and
  ``anymail/webhooks/sendgrid.py`` with its captured payloads.

**Lookups need SendGrid's paid "additional email activity history" add-on** (and an API key with
Email Activity access). Without it ``fetch_status``/``find_by_reference`` raise StatusLookupError and
Unknown outcomes wait for webhooks or an operator. SendGrid has no idempotency key: our reference rides
in ``custom_args`` and comes back in every event.

**No batch sending here (``max_batch`` stays 1).** One ``/v3/mail/send`` call takes up to 1,000
``personalizations`` (mail-send/errors), each with its own ``to``, ``subject``, ``headers``,
``custom_args`` and ``substitutions``, but one shared ``content``. Our copies differ in the body: each
carries its own unsubscribe URL in the text and the HTML (and its own ``List-Unsubscribe`` header and
Message-ID). Batched, the body would become a template that SendGrid fills in through ``substitutions``
(a legacy feature, capped per personalization) instead of the text we rendered and hashed; the answer
is one 202 with one ``X-Message-Id`` for every personalization, not a receipt per copy; and one invalid
personalization (a bad or repeated address) answers 400 for all of them. Each copy goes in its own call.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, ClassVar

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.domain.messages import EmailMessage, EventKind, Receipt, StatusEvent, Suppress, WebhookRequest
from workers.gateways.email.common import HttpEmailGateway, b64, check_fresh, header, lookup_object, webhook_json
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
from workers.gateways.values import ErrorClass, objects, parse_time, text

log = logging.getLogger(__name__)

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# Event Webhook ``event`` -> (kind, error class). Engagement events (open, click, unsubscribe,
# group_unsubscribe, group_resubscribe) are authentic but not tracked. ``deferred``: SendGrid keeps
# retrying for up to 72 hours itself. ``dropped``: SendGrid will not send it (suppressed or invalid).
EVENT_KINDS: dict[str, tuple[EventKind, ErrorClass | None]] = {
    "processed": (EventKind.QUEUED, None),
    "deferred": (EventKind.DEFERRED, "transient"),
    "delivered": (EventKind.DELIVERED, None),
    "bounce": (EventKind.BOUNCED, "permanent"),
    "dropped": (EventKind.FAILED, "permanent"),
    "spamreport": (EventKind.COMPLAINED, "permanent"),
}

# ``type`` of a bounce event: "bounce" is the receiving server's final no; "blocked" is a refusal of this
# delivery (reputation, content, rate) that SendGrid does not retry but a later send may pass.
BOUNCE_CLASSES: dict[str, ErrorClass] = {"bounce": "permanent", "blocked": "transient"}

# What an event says of the address, for our suppression list (supporter copies only): a ``bounce`` of type
# "bounce" (the receiving server's final no: a hard bounce; "blocked" is not), a ``spamreport`` (the person
# marked it as spam), and a ``dropped`` whose ``reason`` names SendGrid's own lists: "Bounced Address" and
# "Invalid" (its bounce and invalid-email lists), "Spam Reporting Address" (its spam-report list). Other drops
# ("Unsubscribed Address", "Spam Content", "Invalid SMTPAPI header") say nothing about the address for us.
BOUNCE_SUPPRESS: dict[str, Suppress] = {"bounce": "hard-bounce"}
DROPPED_SUPPRESS: dict[str, Suppress] = {
    "Bounced Address": "hard-bounce",
    "Invalid": "hard-bounce",
    "Spam Reporting Address": "complaint",
}

# Email Activity: message ``status`` and ``events[].event_name`` (tsg_email_activity_v3.yaml).
ACTIVITY_STATUS: dict[str, EventKind] = {
    "processed": EventKind.QUEUED,
    "delivered": EventKind.DELIVERED,
    "not_delivered": EventKind.FAILED,  # refined from the message's events below
}
ACTIVITY_EVENTS: dict[str, tuple[EventKind, ErrorClass | None]] = {
    "processed": (EventKind.QUEUED, None),
    "deferred": (EventKind.DEFERRED, "transient"),
    "delivered": (EventKind.DELIVERED, None),
    "bounced": (EventKind.BOUNCED, "permanent"),  # refined by bounce_type
    "dropped": (EventKind.FAILED, "permanent"),
    "spam_report": (EventKind.COMPLAINED, "permanent"),
}
ACTIVITY_BOUNCES: dict[str, ErrorClass] = {"hard": "permanent", "soft": "transient"}
ACTIVITY_SUPPRESS: dict[str, Suppress] = {"spam_report": "complaint"}  # and a bounced one of bounce_type "hard"


class SendGridSettings(BaseSettings):
    """``DISPATCH_<NAME>_*``: the API key and the Signed Event Webhook verification key."""

    model_config = SettingsConfigDict(env_prefix="DISPATCH_SENDGRID_", extra="ignore")

    api_key: SecretStr
    base_url: str = "https://api.sendgrid.com"  # "https://api.eu.sendgrid.com" for EU subusers
    webhook_public_key: str | None = None  # Mail Settings > Event Webhook > verification key (base64 DER)
    webhook_tolerance: int = Field(default=300, gt=0)  # seconds a signature timestamp may differ from ours
    reconcile_limit: int = Field(default=50, ge=1, le=1000)  # Email Activity messages read per lookup

    @field_validator("webhook_public_key")
    @classmethod
    def _p256_key(cls, value: str | None) -> str | None:
        if value is not None:
            load_public_key(value)
        return value


def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it: base64 DER SubjectPublicKeyInfo of a P-256 key."""
    try:
        key = load_der_public_key(base64.b64decode("".join(value.split()), validate=True))
    except (binascii.Error, ValueError) as err:
        raise ValueError("must be the base64 verification key from SendGrid's Event Webhook settings") from err
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("must be an ECDSA P-256 public key")
    return key


class SendGridGateway(HttpEmailGateway[SendGridSettings]):
    """SendGrid's v3 Mail Send API, one personalization per message."""

    provider: ClassVar[str] = PROVIDER
    settings_class: ClassVar[type[BaseSettings]] = SendGridSettings
    # Events come in batches, posted "within approximately 30 seconds or when the batch size reaches
    # 768 kilobytes" (twilio.com/docs/sendgrid, Event Webhook overview); room for the event that tips it.
    max_webhook_bytes: ClassVar[int] = 1024 * 1024
    # Not documented for mail/send: the v3 rate limits are per endpoint, told only in the
    # X-RateLimit-* headers (twilio.com/docs/sendgrid/api-reference/how-to-use-the-sendgrid-v3-api/rate-limits),
    # and the 600 requests/minute default excludes mail/send
    # (twilio.com/en-us/changelog/imposing-rate-limits-on-some-sendgrid-v2-api-endpoints); conservative.
    per_second: ClassVar[int] = 50
    in_flight: ClassVar[int] = 10

    def __init__(self, settings: BaseSettings, *, name: str | None = None, client: httpx.Client | None = None) -> None:
        super().__init__(settings, name=name, client=client)
        key = self.config.webhook_public_key
        self._public_key = load_public_key(key) if key else None

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}

    # -- the credential check at start-up -------------------------------------------------------

    def _check_credentials(self) -> None:
        """``GET /v3/scopes`` ("Retrieve a list of scopes for which this user has access"): the key's own
        scopes, nothing sent; without ``mail.send`` it could send nothing either."""
        response = self.call("GET", "/v3/scopes")
        check_answer(response, name=self.name, setting=self.setting("api_key"))
        try:
            scopes = response.json().get("scopes")
        except (ValueError, AttributeError):
            scopes = None
        if isinstance(scopes, list) and "mail.send" not in scopes:
            raise ConfigurationFault.refused(
                self.setting("api_key"), by=self.name, detail="the key has no mail.send scope"
            )

    # -- sending ---------------------------------------------------------------------------------

    def _send_email(self, email: EmailMessage) -> Receipt:
        """``POST /v3/mail/send``; 202 and ``X-Message-Id`` mean accepted."""
        self.check_recipients(email)
        response = self.call("POST", "/v3/mail/send", json=self.send_body(email))
        if not response.is_success:
            raise self._send_error(response)
        message_id = response.headers.get("x-message-id")
        if not message_id:
            raise Unknown(
                f"{PROVIDER}: HTTP {response.status_code} without X-Message-Id", code="no_id", raw=response.text[:2000]
            )
        log.info("sendgrid accepted %s for reference %s", message_id, email.reference)
        return Receipt(
            provider=PROVIDER,
            provider_id=message_id,
            accepted_at=datetime.now(UTC),
            status="processed",
            raw={"status": response.status_code, "x-message-id": message_id},
        )

    def send_body(self, message: EmailMessage) -> dict[str, Any]:
        personalization: dict[str, Any] = {
            "to": [{"email": a} for a in message.to],
            "custom_args": {"reference": message.reference},
        }
        if message.cc:
            personalization["cc"] = [{"email": a} for a in message.cc]
        content = [{"type": "text/plain", "value": message.text}]
        if message.html is not None:
            content.append({"type": "text/html", "value": message.html})
        body: dict[str, Any] = {
            "personalizations": [personalization],
            "from": _address(message.sender),
            "subject": message.subject,
            "content": content,
            "headers": {**dict(message.headers), "Message-ID": message.message_id},
            # A letter to an official must arrive as written: no tracking pixel, no rewritten links.
            "tracking_settings": {"click_tracking": {"enable": False}, "open_tracking": {"enable": False}},
        }
        if message.reply_to:
            body["reply_to"] = _address(message.reply_to)
        if message.attachments:
            body["attachments"] = [
                {"content": b64(a.content), "type": a.content_type, "filename": a.filename, "disposition": "attachment"}
                for a in message.attachments
            ]
        return body

    def _send_error(self, response: httpx.Response) -> DeliveryError:
        status = response.status_code
        detail, field, body = _errors(response)
        if status in (401, 403):
            return ConfigurationFault(
                f"{PROVIDER}: HTTP {status} {detail}: check {self.setting('api_key')} (and that "
                "the key has Mail Send access)",
                code=str(status),
                raw=body,
                setting=self.setting("api_key"),
            )
        if status == 429:
            return Transient(
                f"{PROVIDER}: HTTP 429 {detail}", code="429", raw=body, retry_after=_rate_limit_wait(response.headers)
            )
        if 400 <= status < 500:
            # 400 covers an invalid address (field personalizations.0.to.0.email) and every other
            # parameter error; 413 a too-large message: the same request will be refused again.
            return Permanent(f"{PROVIDER}: HTTP {status} {detail}", code=field or str(status), raw=body)
        return error_for_status(response, provider=PROVIDER, detail=detail)

    # -- Email Activity lookups (paid add-on) ----------------------------------------------------

    def _fetch_status(self, provider_id: str) -> StatusEvent:
        """The activity of the messages whose msg_id starts with this X-Message-Id (first recipient)."""
        messages = self._activity(f'msg_id LIKE "{_quoted(provider_id)}%"')
        if not messages:
            raise StatusLookupError(f"{PROVIDER}: no Email Activity for {provider_id} (yet)")
        return self._activity_event(messages[0], provider_id=provider_id, reference=None)

    def _find_by_reference(self, reference: str, *, to: str | None, sent_after: datetime | None) -> StatusEvent | None:
        """The message whose custom arg ``reference`` is ours; None when SendGrid has no such message.

        The custom-argument query is exact, so ``to`` and ``sent_after`` narrow nothing further."""
        messages = self._activity(f"unique_args['reference']=\"{_quoted(reference)}\"")
        if not messages:
            return None
        if len(messages) > 1:
            # one per recipient of a send, or several sends: the ledger and the operator decide
            log.warning("sendgrid: %d activity messages carry reference %s", len(messages), reference)
        return self._activity_event(messages[0], provider_id=None, reference=reference)

    def _activity(self, query: str) -> list[dict[str, Any]]:
        response = self.lookup("GET", "/v3/messages", params={"query": query, "limit": self.config.reconcile_limit})
        if response.status_code == 404:
            raise StatusLookupError(f"{PROVIDER}: Email Activity API not available (paid add-on)")
        messages = lookup_object(response, provider=PROVIDER).get("messages")
        if not isinstance(messages, list):
            raise StatusLookupError(f"{PROVIDER}: Email Activity answer without messages")
        return [m for m in objects(messages) if text(m.get("msg_id"))]

    def _activity_event(
        self, summary: Mapping[str, Any], *, provider_id: str | None, reference: str | None
    ) -> StatusEvent:
        msg_id = str(summary["msg_id"])
        kind = ACTIVITY_STATUS.get(str(summary.get("status")))
        if kind is None:
            raise StatusLookupError(f"{PROVIDER}: message {msg_id} has status {summary.get('status')!r}")
        error_class: ErrorClass | None = None
        code = detail = None
        suppress: Suppress | None = None
        if kind is EventKind.FAILED:
            kind, error_class, code, detail, suppress = self._failure(msg_id)
        return StatusEvent(
            provider=PROVIDER,
            provider_id=provider_id or message_id_of(msg_id),
            kind=kind,
            occurred_at=parse_time(summary.get("last_event_time")) or datetime.now(UTC),
            reference=reference,
            error_class=error_class,
            error_code=code,
            detail=detail,
            suppress=suppress,
            raw=dict(summary),
        )

    def _failure(self, msg_id: str) -> tuple[EventKind, ErrorClass, str | None, str | None, Suppress | None]:
        """Why a not_delivered message failed, from its last failure event, and what that says of the address."""
        response = self.lookup("GET", f"/v3/messages/{msg_id}")
        events = lookup_object(response, provider=PROVIDER).get("events") if response.is_success else None
        failures = [e for e in objects(events) if ACTIVITY_EVENTS.get(str(e.get("event_name")), (None, None))[1]]
        if not failures:
            return EventKind.FAILED, "permanent", "not_delivered", None, None
        last = failures[-1]
        name, reason = str(last["event_name"]), text(last.get("reason"))
        kind, error_class = ACTIVITY_EVENTS[name]
        suppress = ACTIVITY_SUPPRESS.get(name)
        if name == "bounced":
            error_class = ACTIVITY_BOUNCES.get(str(last.get("bounce_type")), "permanent")
            suppress = "hard-bounce" if last.get("bounce_type") == "hard" else None
        elif name == "dropped":
            suppress = DROPPED_SUPPRESS.get(reason or "")
        return kind, error_class or "permanent", name, reason, suppress

    # -- the Signed Event Webhook ----------------------------------------------------------------

    def _parse_webhook(self, request: WebhookRequest) -> list[StatusEvent]:
        """Verify the ECDSA signature and timestamp, then decode the batch of events we track."""
        self._verify(request)
        batch = webhook_json(request.body, provider=PROVIDER)
        if not isinstance(batch, list):
            raise WebhookFormatError(f"{PROVIDER}: the Event Webhook posts a JSON array")
        return [event for raw in batch if (event := _event(raw)) is not None]

    def _verify(self, request: WebhookRequest) -> None:
        if self._public_key is None:
            raise WebhookAuthError(
                f"{PROVIDER}: webhooks refused until {self.setting('webhook_public_key')} "
                "is set (enable the Signed Event Webhook)"
            )
        signature = header(request.headers, SIGNATURE_HEADER)
        timestamp = header(request.headers, TIMESTAMP_HEADER)
        if not signature or not timestamp:
            raise WebhookAuthError(f"{PROVIDER}: missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
        try:
            signed_at = int(timestamp)
            der = base64.b64decode(signature, validate=True)
            # The raw body, byte for byte: re-serialised JSON would not verify.
            self._public_key.verify(der, timestamp.encode("ascii") + request.body, ec.ECDSA(hashes.SHA256()))
        except (binascii.Error, ValueError, UnicodeEncodeError, InvalidSignature) as err:
            raise WebhookAuthError(f"{PROVIDER}: webhook signature does not verify") from err
        check_fresh(
            signed_at, received_at=request.received_at, tolerance=self.config.webhook_tolerance, provider=PROVIDER
        )


def message_id_of(sg_message_id: str) -> str:
    """The X-Message-Id a send answered with: the part of ``sg_message_id`` before ``.filter...``."""
    return sg_message_id.split(".", 1)[0] or sg_message_id


def _event(raw: object) -> StatusEvent | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("event"), str):
        raise WebhookFormatError(f"{PROVIDER}: an event without an 'event' name")
    mapped = EVENT_KINDS.get(raw["event"])
    if mapped is None:
        return None  # opens, clicks, unsubscribes: authentic, not tracked
    kind, error_class = mapped
    stamp, sg_message_id = raw.get("timestamp"), text(raw.get("sg_message_id"))
    when = parse_time(stamp) if isinstance(stamp, int) else None  # epoch seconds, an integer
    if when is None or not sg_message_id:
        raise WebhookFormatError(f"{PROVIDER}: {raw['event']} event without timestamp or sg_message_id")
    code = None
    suppress: Suppress | None = "complaint" if raw["event"] == "spamreport" else None
    if raw["event"] == "bounce":
        code = str(raw.get("type") or "bounce")
        error_class = BOUNCE_CLASSES.get(code, "permanent")
        suppress = BOUNCE_SUPPRESS.get(code)
    elif error_class is not None:
        code = raw["event"]
    if raw["event"] == "dropped":
        suppress = DROPPED_SUPPRESS.get(text(raw.get("reason")) or "")
    return StatusEvent(
        provider=PROVIDER,
        provider_id=message_id_of(sg_message_id),
        kind=kind,
        occurred_at=when,
        reference=text(raw.get("reference")),
        error_class=error_class,
        error_code=code,
        detail=text(raw.get("reason")) or text(raw.get("response")),
        event_id=text(raw.get("sg_event_id")),
        suppress=suppress,
        raw=raw,
    )


def _address(value: str) -> dict[str, str]:
    name, addr = parseaddr(value)
    return {"email": addr, "name": name} if name else {"email": addr or value}


def _quoted(value: str) -> str:
    """A value inside a double-quoted Email Activity query string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _errors(response: httpx.Response) -> tuple[str, str | None, Any]:
    """("message (field); ...", first field, body) of a SendGrid error answer."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.reason_phrase, None, response.text[:2000]
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return response.reason_phrase, None, body
    parts = [
        f"{e.get('message')}" + (f" ({e['field']})" if e.get("field") else "") for e in errors if isinstance(e, dict)
    ]
    first = errors[0] if isinstance(errors[0], dict) else {}
    return "; ".join(parts), first.get("field"), body


def _rate_limit_wait(headers: Mapping[str, str]) -> float | None:
    """Retry-After if given, else SendGrid's ``X-RateLimit-Reset`` (epoch seconds of the next window)."""
    wait = retry_after_seconds(headers)
    if wait is not None:
        return wait
    reset = headers.get("x-ratelimit-reset")
    try:
        return max(0.0, float(reset) - time.time()) if reset else None
    except ValueError:
        return None
