"""Telnyx Programmable Fax: send by ``media_url``, reconcile by ``client_state``, Ed25519 webhooks.

Followed, field by field:

- telnyx-python v4 (the official SDK, Stainless-generated from Telnyx's OpenAPI spec):
  ``src/telnyx/resources/faxes/faxes.py`` (``POST /faxes``, ``GET /faxes/{id}``, ``GET /faxes`` under the
  ``https://api.telnyx.com/v2`` base), ``types/fax_create_params.py``, ``types/fax.py`` (the Fax object, its
  status values and the documented ``failure_reason`` list), ``types/fax_list_params.py`` (deepObject
  filters ``filter[to][eq]``, ``filter[direction][eq]``, ``filter[created_at][gte]``, ``page[number]``,
  ``page[size]``), ``pagination.py`` (``SyncDefaultFlatPagination``: ``meta.page_number``/``total_pages``),
  ``types/fax_{queued,media_processed,sending_started,delivered,failed}.py`` (webhook envelopes) and
  ``lib/webhook_verification.py`` / ``resources/webhooks.py`` (Ed25519 over ``"{timestamp}|{body}"``,
  headers ``telnyx-signature-ed25519`` and ``telnyx-timestamp``, 300 s tolerance).
- developers.telnyx.com: "Send a Fax via API" and "Sending Commands" (202 on acceptance; 403, 404, 422;
  429 past 2000 faxes in progress), "Receiving Webhooks for Programmable Fax" (out-of-order and
  duplicate deliveries happen), "API error codes" (``errors[].code/title/detail/source``: 10009
  authentication failed, 10003 invalid URL, 10016 not +E.164, 10002 invalid phone number, 10005 not found).
- support.telnyx.com "Fax API - Error List" (meaning of each outbound ``failure_reason``;
  ``file_download_failed``: "The non-telephony service responsible for downloading the customer's PDF
  prior to initiating the fax was unable to download the file ... only 2XX HTTP responses will ensure we
  download your file"). That failure, 401/403 and a ``media_url`` refused with 10003 are our
  configuration (the key, or the URL built from DISPATCH_PUBLIC_BASE_URL): ``ConfigurationFault``.

Telnyx has no idempotency key for faxes and never retries a failed fax: our reference travels in
``client_state`` (base64), comes back in every webhook and fax object, and is how an Unknown outcome
is reconciled (:meth:`TelnyxGateway.find_by_reference`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import httpx
import nacl.exceptions
import nacl.signing
from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.domain.messages import (
    EventKind,
    FaxMessage,
    Receipt,
    StatusEvent,
    WebhookRequest,
)
from dispatcher.domain.states import Channel
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
from workers.gateways.http import HttpGateway, check_answer, error_for_status, request
from workers.gateways.registry import env_prefix
from workers.gateways.values import ErrorClass, integer, number, obj, parse_time, text

log = logging.getLogger(__name__)

PROVIDER = "telnyx"
PUBLIC_BASE_URL = "DISPATCH_PUBLIC_BASE_URL"  # the media URLs Telnyx fetches are built on it
SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"

Quality = Literal["normal", "high", "very_high", "ultra_light", "ultra_dark"]

# Webhook event types of an outbound fax (types/fax_*.py). ``media.processed`` means Telnyx has fetched
# and converted our document but not dialled yet: still queued from our point of view.
EVENT_KINDS: dict[str, EventKind] = {
    "fax.queued": EventKind.QUEUED,
    "fax.media.processed": EventKind.QUEUED,
    "fax.sending.started": EventKind.SENDING,
    "fax.delivered": EventKind.DELIVERED,
    "fax.failed": EventKind.FAILED,
}

# ``status`` of an outbound Fax object (types/fax.py); inbound-only values are deliberately absent.
STATUS_KINDS: dict[str, EventKind] = {
    "queued": EventKind.QUEUED,
    "media.processed": EventKind.QUEUED,
    "originated": EventKind.SENDING,
    "sending": EventKind.SENDING,
    "delivered": EventKind.DELIVERED,
    "failed": EventKind.FAILED,
}

# Every ``failure_reason`` documented on the Fax object (types/fax.py), classified for the router.
# "transient": the same number may take the fax later (line busy, no answer, a call or carrier fault,
# our own media server or a channel limit) -- retried with backoff until the campaign deadline.
# "permanent": this number (or this document, or our account) will not work however often we try --
# move to the next route. ``fax_initial_communication_timeout`` (no fax tone) is transient per
# attempt: a fax machine may be switched off or answered by a person; it is marked ``no_fax_tone``, and
# DISPATCH_NO_FAX_TONE_LIMIT such answers in a row give the route up (dispatcher/domain/outcomes.py).
# "configuration": our settings or account, not the number: the gateway is paused and the delivery
# waits on its route.
FAILURE_CLASSES: dict[str, ErrorClass] = {
    # the line or the call
    "user_busy": "transient",
    "receiver_no_answer": "transient",
    "receiver_no_response": "transient",
    "receiver_decline": "transient",  # a person or a PBX rejected this call; another call may pass
    "receiver_call_dropped": "transient",
    "sender_call_dropped": "transient",
    "carrier_lost": "transient",
    "receiver_recovery_on_timer_expire": "transient",
    "receiver_communication_error": "transient",
    "sender_communication_error": "transient",
    "destination_unreachable": "transient",  # routing fault on the way, not a verdict on the number
    "fax_initial_communication_timeout": "transient",
    "fax_signaling_error": "transient",
    "invalid_ecm_response_from_receiver": "transient",
    "service_unavailable": "transient",
    # capacity limits: wait, never move on
    "user_channel_limit_exceeded": "transient",
    "outbound_profile_channel_limit_exceeded": "transient",
    "connection_channel_limit_exceeded": "transient",
    "outbound_profile_daily_spend_limit_exceeded": "transient",  # resets daily
    # Telnyx could not download our document: our media URL (DISPATCH_PUBLIC_BASE_URL) is wrong or
    # `dispatch web` is not reachable there; the number is fine
    "file_download_failed": "configuration",
    # Telnyx's converter hiccuped: the number is fine
    "media_processing_exception": "transient",
    # the number itself
    "receiver_invalid_number_format": "permanent",
    "receiver_unallocated_number": "permanent",
    "receiver_incompatible_destination": "permanent",
    "destination_invalid": "permanent",
    "destination_not_in_service_plan": "permanent",
    "destination_not_in_countries_whitelist": "permanent",
    "unverified_destination_not_allowed": "permanent",
    # the document
    "file_format_invalid": "permanent",
    "file_size_limit_exceeded": "permanent",
    "page_count_limit_exceeded": "permanent",
    # our account or configuration: retrying cannot help until an operator acts, and no number is at fault
    "account_disabled": "configuration",
    "no_outbound_profile": "configuration",
    # the campaign's caller id (its sender's fax_caller_id), not the gateway: this route gives up
    "unverified_origination_number": "permanent",
    "sender_canceled": "permanent",  # someone cancelled it on purpose: never resend automatically
}
# "the call did not connect to a valid fax machine/the destination is not sending fax tones" (Telnyx
# support, "Fax API - Error List")
NO_FAX_TONE_REASONS = frozenset({"fax_initial_communication_timeout"})
# A reason Telnyx adds later is treated as transient: nothing was delivered, and the campaign
# deadline bounds the retries; the reason itself is kept in ``error_code`` for the operator.
DEFAULT_FAILURE_CLASS: ErrorClass = "transient"


def failure_class(reason: str | None) -> ErrorClass:
    """Transient, permanent or configuration, for a Telnyx ``failure_reason`` (see :data:`FAILURE_CLASSES`)."""
    return FAILURE_CLASSES.get(reason or "", DEFAULT_FAILURE_CLASS)


def failure_setting(reason: str | None, *, prefix: str) -> str | None:
    """The variable to check for a configuration ``failure_reason``; None where it is the account itself."""
    return {"file_download_failed": PUBLIC_BASE_URL, "no_outbound_profile": f"{prefix}CONNECTION_ID"}.get(reason or "")


class TelnyxSettings(BaseSettings):
    """``DISPATCH_<NAME>_*``: API key, fax connection, the webhook public key from Mission Control."""

    model_config = SettingsConfigDict(env_prefix="DISPATCH_TELNYX_", extra="ignore")

    api_key: SecretStr
    connection_id: str
    public_key: str  # base64 Ed25519 public key (Mission Control portal > Keys & Credentials)
    base_url: str = "https://api.telnyx.com"
    webhook_url: str | None = None  # overrides the fax application's webhook URL per fax
    webhook_tolerance: int = 300  # seconds a webhook timestamp may differ from our clock
    quality: Quality = "high"
    reconcile_days: int = 7  # how far back find_by_reference looks
    reconcile_max_pages: int = 20  # bound on list pages read by find_by_reference
    page_size: int = 100

    @field_validator("public_key")
    @classmethod
    def _ed25519_key(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ValueError("must be the base64 Ed25519 public key from the Telnyx portal") from err
        if len(raw) != 32:
            raise ValueError(f"must decode to 32 bytes (an Ed25519 public key), got {len(raw)}")
        return value


def encode_reference(reference: str) -> str:
    """Our reference as Telnyx's ``client_state`` (must be valid base64)."""
    return base64.b64encode(reference.encode("utf-8")).decode("ascii")


def decode_reference(client_state: object) -> str | None:
    """The reference carried in ``client_state``; None when absent or not ours."""
    if not isinstance(client_state, str) or not client_state:
        return None
    try:
        return base64.b64decode(client_state, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


class TelnyxGateway(HttpGateway[TelnyxSettings]):
    """Telnyx Programmable Fax v2."""

    provider: ClassVar[str] = PROVIDER
    channel: ClassVar[Channel] = Channel.FAX
    settings_class: ClassVar[type[BaseSettings]] = TelnyxSettings
    needs_media_url: ClassVar[bool] = True  # Telnyx downloads the PDF from media_url
    # One JSON envelope per event, a few KB: ids, numbers, status and reason, no media (types/fax_*.py).
    max_webhook_bytes: ClassVar[int] = 64 * 1024
    # Not documented as a number: api.telnyx.com limits are told in x-ratelimit-* headers and a 429
    # (developers.telnyx.com/development/api-fundamentals/reliability/rate-limiting); Programmable Fax
    # answers 429 once an account has 2,000 faxes in progress (/work/shared/research/fax-providers.md),
    # and Telnyx dials at most 30 calls a second per account by default
    # (developers.telnyx.com/docs/voice/programmable-voice/dials-per-second-limit). Conservative: a
    # third of that dial rate.
    per_second: ClassVar[int] = 10
    in_flight: ClassVar[int] = 8

    def __init__(self, settings: BaseSettings, *, name: str | None = None, client: httpx.Client | None = None) -> None:
        super().__init__(settings, name=name, client=client)
        self._verify_key = nacl.signing.VerifyKey(base64.b64decode(self.config.public_key))

    # -- HTTP plumbing ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.config.api_key.get_secret_value()}",
            "Accept": "application/json",
        }

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self.config.base_url.rstrip("/") + path
        return request(self.client, method, url, provider=PROVIDER, headers=self._headers(), **kwargs)

    # -- the credential check at start-up -------------------------------------------------------

    def _check_credentials(self) -> None:
        """``GET /v2/faxes?page[size]=1`` (the SDK's ``faxes.list``): one page of one fax, nothing sent."""
        response = self._call("GET", "/v2/faxes", params={"page[size]": 1})
        check_answer(response, name=self.name, setting=f"{env_prefix(self.name)}API_KEY")

    # -- sending ---------------------------------------------------------------------------------

    def _send_fax(self, fax: FaxMessage) -> Receipt:
        """``POST /v2/faxes``; Telnyx fetches the document from ``fax.media_url`` itself."""
        if fax.media_url is None:
            raise ConfigurationFault(
                f"{PROVIDER}: no media_url: Telnyx downloads the document from a URL, so the PDF must be "
                "served (2xx, no redirect) by `dispatch web` and signed with DISPATCH_SECRET_KEY",
                code="media_url_missing",
                setting="DISPATCH_SECRET_KEY",
            )
        response = self._call("POST", "/v2/faxes", json=self._send_body(fax))
        if not response.is_success:
            raise self._send_error(response)
        receipt = self._receipt(response)
        log.info("telnyx accepted fax %s for reference %s", receipt.provider_id, fax.reference)
        return receipt

    def _send_body(self, message: FaxMessage) -> dict[str, Any]:
        # Telnyx has no header-text field (the header line is the carrier's), so header_text is not sent.
        body: dict[str, Any] = {
            "connection_id": self.config.connection_id,
            "from": message.from_number,
            "to": message.to,
            "media_url": message.media_url,
            "client_state": encode_reference(message.reference),
            "quality": self.config.quality,
        }
        if message.from_name:
            body["from_display_name"] = message.from_name[:128]
        if self.config.webhook_url:
            body["webhook_url"] = self.config.webhook_url
        return body

    def _receipt(self, response: httpx.Response) -> Receipt:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        data = obj(obj(body).get("data"))
        fax_id = text(data.get("id"))
        if not fax_id:
            # 2xx means accepted, but without an id we cannot follow it: reconcile by reference.
            raise Unknown(
                f"{PROVIDER}: HTTP {response.status_code} without a fax id", code="no_id", raw=response.text[:2000]
            )
        return Receipt(
            provider=PROVIDER,
            provider_id=fax_id,
            accepted_at=datetime.now(UTC),
            status=text(data.get("status")) or "queued",
            raw=body,
        )

    def _send_error(self, response: httpx.Response) -> DeliveryError:
        """Map a refused send; Telnyx explains itself in ``errors[].code/title/detail``."""
        status = response.status_code
        code, detail, body = _telnyx_error(response)
        if status in (401, 403):
            variable = f"{env_prefix(self.name)}API_KEY"
            return ConfigurationFault(
                f"{PROVIDER}: HTTP {status} {detail}: check {variable} (and that the key "
                "may send faxes on this connection)",
                code=code or str(status),
                raw=body,
                setting=variable,
            )
        if status == 422 and "/media_url" in _pointers(body):
            # our media URL, built on DISPATCH_PUBLIC_BASE_URL, is not one Telnyx can use (10003)
            return ConfigurationFault(
                f"{PROVIDER}: HTTP 422 {detail}: check {PUBLIC_BASE_URL}",
                code=code or "422",
                raw=body,
                setting=PUBLIC_BASE_URL,
            )
        if status == 402:
            # Nothing was sent and the number is fine: the account needs money. Retry the same route
            # (the operator tops up, the campaign deadline bounds the wait) rather than abandon it.
            return Transient(
                f"{PROVIDER}: HTTP 402 {detail}: top up the Telnyx account balance", code=code or "402", raw=body
            )
        if status == 408:
            # Telnyx gave up waiting for our request body (10008): nothing was accepted.
            return Transient(f"{PROVIDER}: HTTP 408 {detail}", code=code or "408", raw=body)
        if 400 <= status < 500 and status != 429:
            # 422 covers an invalid/unroutable ``to`` (10016, 10002) and any other invalid parameter:
            # resending the same request cannot succeed.
            return Permanent(f"{PROVIDER}: HTTP {status} {detail}", code=code or str(status), raw=body)
        return error_for_status(response, provider=PROVIDER, detail=detail)

    # -- status lookups --------------------------------------------------------------------------

    def _fetch_status(self, provider_id: str) -> StatusEvent:
        """``GET /v2/faxes/{id}``: the fax's current state."""
        response = self._lookup("GET", f"/v2/faxes/{provider_id}")
        if response.status_code == 404:
            raise StatusLookupError(f"{PROVIDER}: no fax {provider_id}")
        data = _json_or_lookup_error(response).get("data")
        if not isinstance(data, dict):
            raise StatusLookupError(f"{PROVIDER}: fax {provider_id}: answer without data")
        return self._fax_event(data)

    def _find_by_reference(self, reference: str, *, to: str | None, sent_after: datetime | None) -> StatusEvent | None:
        """Find our outbound fax by ``client_state``; ``to``/``sent_after`` narrow the listing.

        Returns None only after reading every matching page; a listing too long to read within
        ``reconcile_max_pages`` raises StatusLookupError, since None would invite a duplicate send.
        """
        wanted = encode_reference(reference)
        for fax in self._list_outbound(to=to, sent_after=sent_after):
            if fax.get("client_state") == wanted or decode_reference(fax.get("client_state")) == reference:
                return self._fax_event(fax)
        return None

    def _list_outbound(self, *, to: str | None, sent_after: datetime | None) -> Iterator[dict[str, Any]]:
        since = sent_after or datetime.now(UTC) - timedelta(days=self.config.reconcile_days)
        params: dict[str, str | int] = {
            "filter[direction][eq]": "outbound",
            "filter[created_at][gte]": since.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "page[size]": self.config.page_size,
        }
        if to is not None:
            params["filter[to][eq]"] = to
        for page_number in range(1, self.config.reconcile_max_pages + 1):
            response = self._lookup("GET", "/v2/faxes", params={**params, "page[number]": page_number})
            body = _json_or_lookup_error(response)
            page = body.get("data")
            if not isinstance(page, list):
                raise StatusLookupError(f"{PROVIDER}: fax list without data")
            yield from (fax for fax in page if isinstance(fax, dict))
            total_pages = integer(obj(body.get("meta")).get("total_pages"))
            if not page:
                return
            if total_pages is None:  # a page of faxes, and no telling whether more follow
                raise StatusLookupError(f"{PROVIDER}: fax list without meta.total_pages")
            if page_number >= total_pages:
                return
        raise StatusLookupError(
            f"{PROVIDER}: more than {self.config.reconcile_max_pages} pages of faxes; "
            "narrow the search (to=, sent_after=) before deciding it was never sent"
        )

    def _lookup(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._call(method, path, **kwargs)
        except DeliveryError as err:
            raise StatusLookupError(str(err)) from err
        if response.status_code != 404 and not response.is_success:
            _, detail, _ = _telnyx_error(response)
            raise StatusLookupError(f"{PROVIDER}: HTTP {response.status_code} {detail}".rstrip())
        return response

    def _fax_event(self, fax: Mapping[str, Any]) -> StatusEvent:
        fax_id, status = text(fax.get("id")), text(fax.get("status"))
        kind = STATUS_KINDS.get(status or "")
        if not fax_id or kind is None:
            raise StatusLookupError(f"{PROVIDER}: fax {fax_id!r} with status {fax.get('status')!r}")
        reason = text(fax.get("failure_reason")) if kind is EventKind.FAILED else None
        when = parse_time(fax.get("updated_at") or fax.get("created_at")) or datetime.now(UTC)
        return StatusEvent(
            provider=PROVIDER,
            provider_id=fax_id,
            kind=kind,
            occurred_at=when,
            reference=decode_reference(fax.get("client_state")),
            error_class=failure_class(reason) if kind is EventKind.FAILED else None,
            error_code=reason,
            setting=failure_setting(reason, prefix=env_prefix(self.name)),
            no_fax_tone=reason in NO_FAX_TONE_REASONS,
            detail=text(fax.get("internal_failure_reason")),
            raw=dict(fax),
        )

    # -- webhooks --------------------------------------------------------------------------------

    def _parse_webhook(self, request: WebhookRequest) -> list[StatusEvent]:
        """Verify Telnyx's Ed25519 signature, then decode one fax event (other event types: [])."""
        self._verify(request)
        envelope = _load_envelope(request.body)
        data = envelope["data"]
        kind = EVENT_KINDS.get(str(data.get("event_type")))
        if kind is None:
            return []  # a non-fax or inbound event on the same URL: authentic, but not ours to track
        return [self._webhook_event(kind, data, envelope)]

    def _verify(self, request: WebhookRequest) -> None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        signature, timestamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
        if not signature or not timestamp:
            raise WebhookAuthError(f"{PROVIDER}: missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
        try:
            signed_at = int(timestamp)
            raw_signature = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError) as err:
            raise WebhookAuthError(f"{PROVIDER}: unreadable signature headers") from err
        try:
            # PyNaCl verifies in constant time; the body is used byte for byte, never re-serialised.
            self._verify_key.verify(timestamp.encode("ascii") + b"|" + request.body, raw_signature)
        except (nacl.exceptions.BadSignatureError, ValueError) as err:
            raise WebhookAuthError(f"{PROVIDER}: webhook signature does not verify") from err
        skew = abs(request.received_at.timestamp() - signed_at)
        if skew > self.config.webhook_tolerance:
            raise WebhookAuthError(
                f"{PROVIDER}: webhook timestamp {skew:.0f}s away from our clock "
                f"(tolerance {self.config.webhook_tolerance}s): replay refused"
            )

    def _webhook_event(self, kind: EventKind, data: Mapping[str, Any], envelope: Any) -> StatusEvent:
        payload = obj(data.get("payload"))
        fax_id = text(payload.get("fax_id"))
        if not fax_id:
            raise WebhookFormatError(f"{PROVIDER}: {data.get('event_type')} without payload.fax_id")
        occurred_at = parse_time(data.get("occurred_at"))
        if occurred_at is None:
            raise WebhookFormatError(f"{PROVIDER}: {data.get('event_type')} without a valid occurred_at")
        reason = text(payload.get("failure_reason")) if kind is EventKind.FAILED else None
        return StatusEvent(
            provider=PROVIDER,
            provider_id=fax_id,
            kind=kind,
            occurred_at=occurred_at,
            reference=decode_reference(payload.get("client_state")),
            error_class=failure_class(reason) if kind is EventKind.FAILED else None,
            error_code=reason,
            setting=failure_setting(reason, prefix=env_prefix(self.name)),
            no_fax_tone=reason in NO_FAX_TONE_REASONS,
            detail=text(payload.get("internal_failure_reason")),
            pages=integer(payload.get("page_count")),
            duration_secs=number(payload.get("call_duration_secs")),
            remote_station_id=None,  # Telnyx's fax payloads carry no remote CSID (types/fax_*.py)
            event_id=text(data.get("id")) or None,
            raw=envelope,
        )


def _telnyx_error(response: httpx.Response) -> tuple[str | None, str, Any]:
    """(first error code, "title: detail; ..." text, decoded body) of a Telnyx error answer."""
    try:
        body: Any = response.json()
    except ValueError:
        return None, response.reason_phrase, response.text[:2000]
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return None, response.reason_phrase, body
    parts = [_error_text(e) for e in errors if isinstance(e, dict)]
    first = errors[0] if isinstance(errors[0], dict) else {}
    code = str(first["code"]) if first.get("code") is not None else None
    return code, "; ".join(p for p in parts if p), body


def _pointers(body: Any) -> set[str]:
    """The ``errors[].source.pointer`` values of a Telnyx error answer."""
    errors = body.get("errors") if isinstance(body, dict) else None
    return {
        pointer
        for error in (errors if isinstance(errors, list) else [])
        if isinstance(error, dict) and isinstance(pointer := obj(error.get("source")).get("pointer"), str)
    }


def _error_text(error: Mapping[str, Any]) -> str:
    pointer = (error.get("source") or {}).get("pointer") if isinstance(error.get("source"), dict) else None
    message = ": ".join(str(error[k]) for k in ("title", "detail") if error.get(k))
    return f"{error.get('code', '')} {message}".strip() + (f" ({pointer})" if pointer else "")


def _json_or_lookup_error(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as err:
        raise StatusLookupError(f"{PROVIDER}: HTTP {response.status_code}: not JSON") from err
    if not isinstance(body, dict):
        raise StatusLookupError(f"{PROVIDER}: HTTP {response.status_code}: unexpected body")
    return body


def _load_envelope(body: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise WebhookFormatError(f"{PROVIDER}: webhook body is not JSON") from err
    if not isinstance(envelope, dict) or not isinstance(envelope.get("data"), dict):
        raise WebhookFormatError(f"{PROVIDER}: webhook body has no data object")
    return envelope
