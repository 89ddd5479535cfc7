"""Mailgun: ``POST /v3/{domain}/messages``, the Events API for lookups, HMAC-SHA256 signed webhooks.

Followed, field by field (mailgun/documentation, ``source/*.rst``, and documentation.mailgun.com):

- ``api-intro.rst``: Basic auth ``api:<key>``; US ``https://api.mailgun.net`` and EU
  ``https://api.eu.mailgun.net``; status codes 200, 400, 401, 402, 404, 413, 429, 500/502/503/504.
- ``api-sending.rst``: form fields ``from``, ``to``/``cc`` (repeatable), ``subject``, ``text``, ``html``,
  ``attachment`` (multipart files), ``h:<Header>``, ``v:<var>``, ``o:tracking``; the answer
  ``{"id": "<...>", "message": "Queued. Thank you."}``; the error table (400 "... is not a valid
  address", 401 "Forbidden", 404 "Domain not found", 429 "... try again after <date>").
- ``user_manual.rst`` "Attaching Data to Messages": ``v:reference`` comes back as
  ``user-variables.reference`` in webhooks and events (``h:X-Mailgun-Variables`` is the SMTP form);
  "Securing Webhooks": HMAC-SHA256 hex of ``timestamp + token`` keyed with the webhook signing key,
  compared in constant time, optionally refusing reused tokens and stale timestamps; webhook payload
  ``{"signature": {timestamp, token, signature}, "event-data": {...}}``.
- ``api-events.rst``: ``GET /v3/{domain}/events`` with ``begin``, ``ascending``, ``limit`` (300 max),
  filter fields (``message-id``, ``recipient``, ``event``, ...; user variables are *not* a documented
  filter, so lookups by reference match pages here, narrowed by ``recipient`` and ``begin``),
  ``paging.next`` until an empty page; event types and ``severity`` temporary|permanent.
- django-anymail (github.com/anymail/django-anymail): ``anymail/backends/mailgun.py``,
  ``anymail/webhooks/mailgun.py`` and ``tests/test_mailgun_webhooks.py``
  (captured delivered / failed permanent / failed temporary / complained payloads).

We set ``h:Message-Id`` to our own stable Message-ID; Mailgun answers with that id, so the receipt's
provider_id (without angle brackets) is the ``message-id`` every event and Events API filter uses.
Mailgun has no idempotency key; an Unknown outcome is reconciled with ``find_by_reference``.

**No batch sending here (``max_batch`` stays 1).** Mailgun's batch form (user manual, "Batch Sending":
up to 1,000 ``to`` in one call with ``recipient-variables``) sends *one* message that Mailgun
personalizes per recipient through ``%recipient.<key>%`` placeholders. Our copies differ in kind: each
is rendered whole by us, with its own unsubscribe URL in the text and the HTML, its own
``List-Unsubscribe`` header and its own Message-ID (which Mailgun's answer and every event then carry).
A batch would send a template with placeholders instead of what we rendered and hashed, all 1,000 would
share the one id Mailgun answers with, and one refused parameter (a bad address) answers 400 for the
whole call. Each copy goes in its own call.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.domain.messages import EmailMessage, EventKind, Receipt, StatusEvent, Suppress, WebhookRequest
from workers.gateways.email.common import HttpEmailGateway, check_fresh, lookup_object, webhook_json
from workers.gateways.errors import (
    ConfigurationFault,
    DeliveryError,
    GatewayError,
    Permanent,
    StatusLookupError,
    Transient,
    Unknown,
    WebhookAuthError,
    WebhookFormatError,
)
from workers.gateways.http import check_answer, error_for_status, retry_after_seconds
from workers.gateways.values import ErrorClass, number, obj, objects, parse_time, text

log = logging.getLogger(__name__)

PROVIDER = "mailgun"

# ``event-data.event`` -> (kind, error class). ``failed`` is refined by severity below; opened,
# clicked, unsubscribed and stored are authentic but not tracked.
EVENT_KINDS: dict[str, tuple[EventKind, ErrorClass | None]] = {
    "accepted": (EventKind.QUEUED, None),
    "delivered": (EventKind.DELIVERED, None),
    "failed": (EventKind.BOUNCED, "permanent"),
    "rejected": (EventKind.FAILED, "permanent"),  # Mailgun refused to send at all
    "complained": (EventKind.COMPLAINED, "permanent"),
}
# ``failed`` by ``severity``: Mailgun keeps retrying a temporary failure itself (DEFERRED, nothing to
# do yet); a permanent one is final for this message.
SEVERITIES: dict[str, tuple[EventKind, ErrorClass]] = {
    "temporary": (EventKind.DEFERRED, "transient"),
    "permanent": (EventKind.BOUNCED, "permanent"),
}
TRACKED = frozenset(EVENT_KINDS)
# What an event says of the address, for our suppression list (supporter copies only): ``complained`` (the
# person marked it as spam), and a permanent ``failed`` by its ``reason``: "bounce" and "delayed-bounce" (the
# receiving server's final no) and "suppress-bounce" (on Mailgun's bounce list already) are hard bounces,
# "suppress-complaint" (on its complaint list) a complaint. A temporary failure, and a permanent one for
# "old" (gave up retrying), "espblock", "generic" or "suppress-unsubscribe", say nothing about the address.
FAILED_SUPPRESS: dict[str, Suppress] = {
    "bounce": "hard-bounce",
    "delayed-bounce": "hard-bounce",
    "suppress-bounce": "hard-bounce",
    "suppress-complaint": "complaint",
}


class MailgunSettings(BaseSettings):
    """``DISPATCH_<NAME>_*``: the API key, the sending domain, the webhook signing key."""

    model_config = SettingsConfigDict(env_prefix="DISPATCH_MAILGUN_", extra="ignore")

    api_key: SecretStr
    domain: str
    base_url: str = "https://api.mailgun.net"  # "https://api.eu.mailgun.net" for EU domains
    webhook_signing_key: SecretStr | None = None  # Sending > Webhooks > HTTP webhook signing key
    webhook_tolerance: int = Field(default=300, gt=0)  # seconds a signature timestamp may differ from ours
    replay_cache_size: int = Field(default=10_000, ge=0)  # tokens remembered to refuse replays (0: off)
    reconcile_days: int = Field(default=3, ge=1, le=30)  # how far back lookups read the Events API
    reconcile_max_pages: int = Field(default=20, ge=1)  # bound on pages read by one lookup
    page_size: int = Field(default=300, ge=1, le=300)


class MailgunGateway(HttpEmailGateway[MailgunSettings]):
    """Mailgun's Messages API (one message per call)."""

    provider: ClassVar[str] = PROVIDER
    settings_class: ClassVar[type[BaseSettings]] = MailgunSettings
    # One signature block and one event-data object per POST, a few KB: headers and delivery status,
    # never the message body (user_manual.rst "Webhooks", api-events.rst).
    max_webhook_bytes: ClassVar[int] = 64 * 1024
    # Not documented: no request rate for the messages endpoint in Mailgun's documentation
    # (documentation.mailgun.com) that we found, only sending limits per plan; conservative.
    per_second: ClassVar[int] = 50
    in_flight: ClassVar[int] = 10

    def __init__(self, settings: BaseSettings, *, name: str | None = None, client: httpx.Client | None = None) -> None:
        super().__init__(settings, name=name, client=client)
        # Tokens seen recently, per process: another process (or a restart) will not know them, which
        # is why the timestamp window is checked as well.
        self._tokens: OrderedDict[str, None] = OrderedDict()
        self._tokens_lock = threading.Lock()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        auth = httpx.BasicAuth("api", self.config.api_key.get_secret_value())
        return super().call(method, path, auth=auth, **kwargs)

    def _domain_path(self, suffix: str) -> str:
        return f"/v3/{self.config.domain}/{suffix}"

    # -- the credential check at start-up -------------------------------------------------------

    def _check_credentials(self) -> None:
        """``GET /v3/domains/{domain}`` (``api-domains.rst``): the sending domain, nothing sent. A key that
        may only send (a domain sending key) is refused here, and by the Events API our lookups use too."""
        response = self.call("GET", f"/v3/domains/{self.config.domain}")
        if response.status_code == 404:
            raise ConfigurationFault.refused(self.setting("domain"), by=self.name, detail="HTTP 404", code="404")
        check_answer(response, name=self.name, setting=self.setting("api_key"))

    # -- sending ---------------------------------------------------------------------------------

    def _send_email(self, email: EmailMessage) -> Receipt:
        """``POST /v3/{domain}/messages`` as multipart form data; 200 "Queued. Thank you." is acceptance."""
        self.check_recipients(email)
        files = [("attachment", (a.filename, a.content, a.content_type)) for a in email.attachments]
        response = self.call("POST", self._domain_path("messages"), data=self.form(email), files=files or None)
        if not response.is_success:
            raise self._send_error(response)
        receipt = self._receipt(response)
        log.info("mailgun accepted %s for reference %s", receipt.provider_id, email.reference)
        return receipt

    def form(self, message: EmailMessage) -> dict[str, str | list[str]]:
        form: dict[str, str | list[str]] = {
            "from": message.sender,
            "to": list(message.to),
            "subject": message.subject,
            "text": message.text,
            "h:Message-Id": message.message_id,
            "v:reference": message.reference,
            # A letter to an official must arrive as written: no tracking pixel, no rewritten links.
            "o:tracking": "no",
        }
        if message.cc:
            form["cc"] = list(message.cc)
        if message.html is not None:
            form["html"] = message.html
        if message.reply_to:
            form["h:Reply-To"] = message.reply_to
        for name, value in message.headers.items():
            if name.lower() not in ("message-id", "reply-to"):
                form[f"h:{name}"] = value
        return form

    def _receipt(self, response: httpx.Response) -> Receipt:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        message_id = (text(obj(body).get("id")) or "").strip().strip("<>")
        if not message_id:
            raise Unknown(
                f"{PROVIDER}: HTTP {response.status_code} without a message id", code="no_id", raw=response.text[:2000]
            )
        return Receipt(
            provider=PROVIDER, provider_id=message_id, accepted_at=datetime.now(UTC), status="accepted", raw=body
        )

    def _send_error(self, response: httpx.Response) -> DeliveryError:
        status, explanation = response.status_code, _message(response)
        if status in (401, 403):
            return ConfigurationFault(
                f"{PROVIDER}: HTTP {status} {explanation}: check {self.setting('api_key')}",
                code=str(status),
                raw=explanation,
                setting=self.setting("api_key"),
            )
        if status == 404:
            return ConfigurationFault(
                f"{PROVIDER}: HTTP 404 {explanation}: check {self.setting('domain')} and "
                f"{self.setting('base_url')} (US or EU region)",
                code="404",
                raw=explanation,
                setting=self.setting("domain"),
            )
        if status == 429:
            return Transient(
                f"{PROVIDER}: HTTP 429 {explanation}",
                code="429",
                raw=explanation,
                retry_after=retry_after_seconds(response.headers) or _try_again_after(explanation),
            )
        if 400 <= status < 500:
            # 400 invalid address or parameter, 402 account, 413 too large: resending cannot help.
            code = "invalid_address" if "not a valid address" in explanation else str(status)
            return Permanent(f"{PROVIDER}: HTTP {status} {explanation}", code=code, raw=explanation)
        return error_for_status(response, provider=PROVIDER, detail=explanation)

    # -- Events API lookups ----------------------------------------------------------------------

    def _fetch_status(self, provider_id: str) -> StatusEvent:
        """The newest tracked event of this message (``GET /v3/{domain}/events?message-id=``)."""
        events = [e for e in self._events({"message-id": provider_id}) if text(e.get("event")) in TRACKED]
        if not events:
            raise StatusLookupError(f"{PROVIDER}: no events for {provider_id} (yet)")
        event = _event_from_data(_newest(events), unreadable=StatusLookupError)
        if event is None:
            raise StatusLookupError(f"{PROVIDER}: the newest event of {provider_id} is not tracked")
        return event

    def _find_by_reference(self, reference: str, *, to: str | None, sent_after: datetime | None) -> StatusEvent | None:
        """Our message by ``user-variables.reference``, narrowed by ``recipient`` = ``to`` and ``begin`` =
        ``sent_after`` (else the last ``reconcile_days``).

        User variables are not a documented Events API filter, so pages are read and matched here. None
        only after every page was read; too many pages -> StatusLookupError.
        """
        filters = {"recipient": to} if to else {}
        ours = [e for e in self._events(filters, since=sent_after) if _reference(e) == reference]
        ours = [e for e in ours if text(e.get("event")) in TRACKED]
        if not ours:
            return None
        ids = {_message_id(e) for e in ours}
        if len(ids) > 1:
            log.warning("mailgun: %d messages carry reference %s", len(ids), reference)
        return _event_from_data(_newest(ours), unreadable=StatusLookupError)

    def _events(self, filters: Mapping[str, str], *, since: datetime | None = None) -> list[dict[str, Any]]:
        begin = since or datetime.now(UTC) - timedelta(days=self.config.reconcile_days)
        params: dict[str, str | int] = {
            "begin": int(begin.timestamp()),
            "ascending": "yes",
            "limit": self.config.page_size,
            **filters,
        }
        return list(self._pages(params))

    def _pages(self, params: Mapping[str, str | int]) -> Iterator[dict[str, Any]]:
        path: str | None = self._domain_path("events")
        query: Mapping[str, str | int] | None = params
        for _ in range(self.config.reconcile_max_pages):
            assert path is not None
            body = lookup_object(self._lookup_ok(path, query), provider=PROVIDER)
            items = body.get("items")
            if not isinstance(items, list):
                raise StatusLookupError(f"{PROVIDER}: events page without items")
            if not items:
                return
            yield from objects(items)
            path, query = self._next_page(body), None
            if path is None:  # events listed, and no way to the rest: "never sent" would be a guess
                raise StatusLookupError(f"{PROVIDER}: events page without paging.next")
        raise StatusLookupError(
            f"{PROVIDER}: more than {self.config.reconcile_max_pages} pages of events; "
            "cannot conclude the message was never sent"
        )

    def _lookup_ok(self, path: str, params: Mapping[str, str | int] | None) -> httpx.Response:
        response = self.lookup("GET", path, params=params)
        if response.status_code == 404:
            raise StatusLookupError(f"{PROVIDER}: HTTP 404 on {path}: check {self.setting('domain')}")
        return response

    def _next_page(self, body: Mapping[str, Any]) -> str | None:
        """``paging.next`` as a path under our base URL; the page token travels in the URL."""
        url = text(obj(body.get("paging")).get("next"))
        if not url:
            return None
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as err:
            raise StatusLookupError(f"{PROVIDER}: unreadable paging.next") from err
        if parsed.scheme not in ("http", "https") or not parsed.raw_path.startswith(b"/"):
            raise StatusLookupError(f"{PROVIDER}: paging.next is not a URL: {url[:100]!r}")
        return parsed.raw_path.decode("ascii")

    # -- webhooks --------------------------------------------------------------------------------

    def _parse_webhook(self, request: WebhookRequest) -> list[StatusEvent]:
        """Verify the signature block (HMAC, timestamp window, token reuse), then decode event-data."""
        payload = webhook_json(request.body, provider=PROVIDER)
        if not isinstance(payload, dict):
            raise WebhookFormatError(
                f"{PROVIDER}: webhook body is not a JSON object (legacy form webhooks are not supported)"
            )
        self._verify(payload.get("signature"), request)
        data = payload.get("event-data")
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            raise WebhookFormatError(f"{PROVIDER}: webhook without event-data.event")
        if data["event"] not in TRACKED:
            return []  # opened, clicked, unsubscribed: authentic, not tracked
        event = _event_from_data(data, raw=payload)
        return [] if event is None else [event]

    def _verify(self, block: object, request: WebhookRequest) -> None:
        key = self.config.webhook_signing_key
        if key is None:
            raise WebhookAuthError(f"{PROVIDER}: webhooks refused until {self.setting('webhook_signing_key')} is set")
        if not isinstance(block, dict) or not all(
            isinstance(block.get(k), str | int) for k in ("timestamp", "token", "signature")
        ):
            raise WebhookAuthError(f"{PROVIDER}: webhook without a signature block")
        timestamp, token, signature = str(block["timestamp"]), str(block["token"]), str(block["signature"])
        expected = hmac.new(key.get_secret_value().encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise WebhookAuthError(f"{PROVIDER}: webhook signature does not verify")
        try:
            signed_at = float(timestamp)
        except ValueError as err:
            raise WebhookAuthError(f"{PROVIDER}: unreadable webhook timestamp") from err
        check_fresh(
            signed_at, received_at=request.received_at, tolerance=self.config.webhook_tolerance, provider=PROVIDER
        )
        self._remember(token)

    def _remember(self, token: str) -> None:
        """Refuse a token seen before (a replayed, correctly signed request)."""
        if self.config.replay_cache_size == 0:
            return
        with self._tokens_lock:
            if token in self._tokens:
                raise WebhookAuthError(f"{PROVIDER}: webhook token already used: replay refused")
            self._tokens[token] = None
            while len(self._tokens) > self.config.replay_cache_size:
                self._tokens.popitem(last=False)


def event_kind(data: Mapping[str, Any]) -> tuple[EventKind, ErrorClass | None] | None:
    """(kind, class) of one event-data object (see :data:`EVENT_KINDS` and :data:`SEVERITIES`)."""
    mapped = EVENT_KINDS.get(str(data.get("event")))
    if mapped is not None and data.get("event") == "failed":
        return SEVERITIES.get(str(data.get("severity")), mapped)
    return mapped


def event_suppress(data: Mapping[str, Any]) -> Suppress | None:
    """The suppression one event-data object calls for (see :data:`FAILED_SUPPRESS`), or None."""
    if data.get("event") == "complained":
        return "complaint"
    if data.get("event") == "failed" and data.get("severity") == "permanent":
        return FAILED_SUPPRESS.get(str(data.get("reason")))
    return None


def _event_from_data(
    data: Mapping[str, Any], *, raw: Any = None, unreadable: type[GatewayError] = WebhookFormatError
) -> StatusEvent | None:
    """The StatusEvent of one event-data object (webhook or Events API item); ``unreadable`` is raised
    when it lacks a message-id or timestamp."""
    mapped = event_kind(data)
    if mapped is None:
        return None
    kind, error_class = mapped
    message_id, when = _message_id(data), parse_time(data.get("timestamp"))
    if not message_id or when is None:
        raise unreadable(f"{PROVIDER}: {data.get('event')} event without message-id or timestamp")
    status, reject = obj(data.get("delivery-status")), obj(data.get("reject"))
    code = None
    if error_class is not None:
        code = str(data.get("reason") or status.get("code") or data.get("event"))
    detail = text(status.get("description")) or text(status.get("message")) or text(reject.get("reason"))
    return StatusEvent(
        provider=PROVIDER,
        provider_id=message_id,
        kind=kind,
        occurred_at=when,
        reference=_reference(data),
        error_class=error_class,
        error_code=code,
        detail=detail or None,
        event_id=text(data.get("id")),
        suppress=event_suppress(data),
        raw=raw if raw is not None else dict(data),
    )


def _message_id(data: Mapping[str, Any]) -> str | None:
    headers = (data.get("message") or {}).get("headers") if isinstance(data.get("message"), dict) else None
    value = text(headers.get("message-id")) if isinstance(headers, dict) else None
    return value.strip().strip("<>") or None if value else None


def _reference(data: Mapping[str, Any]) -> str | None:
    variables = data.get("user-variables")
    value = variables.get("reference") if isinstance(variables, dict) else None
    return value if isinstance(value, str) else None


def _newest(events: list[dict[str, Any]]) -> dict[str, Any]:
    return max(events, key=lambda e: number(e.get("timestamp")) or 0.0)


def _message(response: httpx.Response) -> str:
    """Mailgun's explanation: ``{"message": ...}`` JSON, or the plain text body ("Forbidden")."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.reason_phrase


def _try_again_after(explanation: str) -> float | None:
    """Seconds until the date in "... try again after Mon, 20 Dec 2021 20:33:21 UTC" (api-sending.rst)."""
    _, found, when = explanation.partition("try again after ")
    if not found:
        return None
    try:
        at = parsedate_to_datetime(when.strip().replace("UTC", "+0000"))
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:  # "-0000": UTC (RFC 5322 3.3)
        at = at.replace(tzinfo=UTC)
    return max(0.0, (at - datetime.now(UTC)).total_seconds())
