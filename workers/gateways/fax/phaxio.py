"""Phaxio API v2.1 fax gateway: send, look up, reconcile and verify signed status webhooks.

Followed (checked against the provider's own pages and its official Ruby library):

- Create and send a fax, ``POST /v2.1/faxes`` (multipart: ``to``, ``file``, ``caller_id``,
  ``header_text``, ``callback_url``, ``tag[NAME]``):
  https://www.phaxio.com/docs/api/v2.1/faxes/create_and_send_fax ; success body from the phaxio-ruby
  cassette ``spec/support/cassettes/fax/create.yml``:
  ``{"success":true,"message":"Fax queued for sending","data":{"id":323034811}}``.
- Get a fax, ``GET /v2.1/faxes/{id}`` (phaxio-ruby cassette ``fax/get.yml``); the Fax and Recipient
  objects: https://www.phaxio.com/docs/api/v2/intro/objects ; statuses: https://www.phaxio.com/docs/statuses
- List faxes, ``GET /v2.1/faxes`` with ``tag[NAME]``, ``direction``, ``created_after``, paging
  (``page``, ``per_page`` <= 1000): https://www.phaxio.com/docs/api/v2/faxes/list_faxes and
  phaxio-ruby ``Fax.list``. The default date range is the last week, so reconciliation looks back
  ``LOOKUP_WINDOW`` explicitly.
- Send webhooks (multipart ``fax`` JSON + ``event_type`` fax_completed / transmitting_page /
  retry_scheduled): https://www.phaxio.com/docs/api/v2.1/faxes/send_webhooks
- Signature ``X-Phaxio-Signature``: https://www.phaxio.com/docs/security/callbacks and phaxio-ruby
  ``lib/phaxio/resources/webhook.rb``: hex HMAC-SHA1, keyed with the callback token, over the callback
  URL as submitted + each POST parameter sorted by name (name + value) + each file part sorted by name
  (name + SHA1 hex of its content). The library's own test vector (``spec/resources/webhook_spec.rb``)
  is in tests/gateways/test_phaxio.py.
- Error types and ids: https://www.phaxio.com/docs/errorMessages (the copy we could read lists the
  faxError ids up to 12; see :data:`ERROR_CLASSES`).
- HTTP errors: phaxio-ruby ``Client#handle_response`` maps 401, 404, 422, 429, 503; 402 is handled
  defensively (see :func:`_error_for_response`). 401/403 (the API key and secret) and error id 54
  "Could not access the url you provided" are our configuration, not the route: ``ConfigurationFault``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from dispatcher.domain.messages import EventKind, FaxMessage, Receipt, StatusEvent, WebhookRequest
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
from workers.gateways.values import ErrorClass, integer, obj, objects, parse_time, text

log = logging.getLogger(__name__)


API = "/v2.1"
REFERENCE_TAG = "reference"  # sent as tag[reference]; Phaxio echoes tags in every Fax object
LOOKUP_WINDOW = timedelta(days=30)  # how far back find_by_reference searches
LOOKUP_PAGE_SIZE = 100
LOOKUP_MAX_PAGES = 5  # bounded: the tag filter normally returns at most one fax

# Fax and recipient statuses (https://www.phaxio.com/docs/statuses) -> our vocabulary.
STATUS_KINDS: dict[str, EventKind] = {
    "queued": EventKind.QUEUED,
    "pendingbatch": EventKind.QUEUED,
    "inprogress": EventKind.SENDING,
    "ringing": EventKind.SENDING,
    "callactive": EventKind.SENDING,
    "willretry": EventKind.DEFERRED,
    "success": EventKind.DELIVERED,
    "failure": EventKind.FAILED,
    # one recipient per fax here, so "some recipients failed" cannot mean "delivered"
    "partialsuccess": EventKind.FAILED,
}

# Failure of one attempt, by Phaxio error id: the ids of https://www.phaxio.com/docs/errorMessages and
# no other (Sinch publishes its own list for its own API; sinch.py keeps that one). The copy of that
# page we could read ends its faxError list at id 12; a later faxError id falls to the type below.
# "transient": the same number may work later (RetryPolicy in dispatcher/domain/outcomes.py retries
# the route, up to max_attempts and the campaign deadline). "permanent": this number, or this
# document, will not work; move to the next route.
ERROR_CLASSES: dict[int, ErrorClass] = {
    # documentConversionError: our document or its URL; sending it again changes nothing
    4: "permanent",  # there was a problem in converting and merging files ... contact support
    54: "configuration",  # could not access the url you provided: a document URL, ours to fix
    55: "permanent",  # the string_data URL you provided is invalid
    57: "transient",  # there was a problem storing the file you provided (Phaxio's storage)
    69: "permanent",  # "there was a problem in converting and merging files to the output file format"
    122: "permanent",  # user simulated document conversion error
    128: "permanent",  # could not determine mimetype for file
    129: "permanent",  # mimetype not supported
    130: "permanent",  # mimetype not supported: application/xml
    133: "permanent",  # failed to normalize PDF document
    # lineError: the call could not be placed
    11: "transient",  # the call dropped prematurely
    15: "transient",  # congestion
    16: "transient",  # ring timeout
    17: "transient",  # busy
    19: "transient",  # immediate hangup
    30: "transient",  # no answer from the fax machine
    32: "permanent",  # incompatible destination
    34: "permanent",  # phone number not operational
    43: "transient",  # problem establishing connection
    49: "permanent",  # the receiving phone number is not operational
    50: "permanent",  # call rejected: the far end refuses the call; retrying hammers a refusal
    52: "permanent",  # no route available (the number is not reachable through the network)
    73: "permanent",  # number changed
    87: "transient",  # no answer from the fax machine
    88: "transient",  # network error
    100: "transient",  # problem with remote carrier
    110: "transient",  # network error
    112: "transient",  # no answer
    115: "permanent",  # the phone number has been changed
    121: "transient",  # user requested simulated lineError
    # faxError: the fax session failed; mostly line quality, so worth another call
    6: "transient",  # there was an error communicating with the far side
    7: "permanent",  # far end cannot receive at the size of image
    8: "transient",  # no response after sending a page
    10: "transient",  # disconnected after permitted retries
    12: "transient",  # received no response to DCS or TCF
}

# When an id is not in the table, its type decides.
ERROR_TYPE_CLASSES: dict[str, ErrorClass] = {
    "documentConversionError": "permanent",
    "lineError": "transient",
    "faxError": "transient",
    "fatalError": "transient",  # Phaxio's side failed
    "generalError": "transient",
}


class PhaxioSettings(BaseSettings):
    """``DISPATCH_<NAME>_API_KEY``, ``..._API_SECRET``, ``..._CALLBACK_TOKEN`` (API Callbacks page)."""

    model_config = SettingsConfigDict(env_prefix="DISPATCH_PHAXIO_", extra="ignore")

    api_key: str
    api_secret: SecretStr
    callback_token: SecretStr
    base_url: str = "https://api.phaxio.com"
    callback_url: str | None = None


def classify_error(error_type: str | None, error_id: int | None) -> ErrorClass:
    """Transient or permanent, by error id first, then by error type; unknown means transient."""
    if error_id is not None and error_id in ERROR_CLASSES:
        return ERROR_CLASSES[error_id]
    return ERROR_TYPE_CLASSES.get(error_type or "", "transient")


def signature(token: str, url: str, params: Iterable[tuple[str, str]], files: Iterable[tuple[str, bytes]] = ()) -> str:
    """The X-Phaxio-Signature Phaxio computes for a callback (algorithm of phaxio-ruby's Webhook)."""
    signed = url
    signed += "".join(name + value for name, value in sorted(params, key=lambda item: item[0]))
    signed += "".join(
        name + hashlib.sha1(content).hexdigest()  # noqa: S324 - Phaxio's scheme, not our choice
        for name, content in sorted(files, key=lambda item: item[0])
    )
    return hmac.new(token.encode(), signed.encode(), hashlib.sha1).hexdigest()


class PhaxioGateway(HttpGateway[PhaxioSettings]):
    provider: ClassVar[str] = "phaxio"
    channel: ClassVar[Channel] = Channel.FAX
    settings_class: ClassVar[type[BaseSettings]] = PhaxioSettings
    # Send webhooks are form fields only -- the Fax object as JSON, event_type, page, retry_count -- and
    # no file (phaxio.com/docs/api/v2.1/faxes/send_webhooks): a few KB. Received-fax webhooks carry the
    # PDF but are none of ours.
    max_webhook_bytes: ClassVar[int] = 256 * 1024
    # Not documented: no request rate in the v2.1 API documentation (phaxio.com/docs) that we found;
    # conservative.
    per_second: ClassVar[int] = 5
    in_flight: ClassVar[int] = 4

    # -- the credential check at start-up -----------------------------------------------------

    def _check_credentials(self) -> None:
        """``GET /v2.1/account/status`` (phaxio-ruby ``Account.get``, cassette ``account/get.yml``): the
        account's balance, nothing sent."""
        env = env_prefix(self.name)
        response = request(self.client, "GET", self._url("/account/status"), provider=self.provider, auth=self._auth())
        check_answer(response, name=self.name, setting=f"{env}API_KEY and {env}API_SECRET")

    # -- sending -------------------------------------------------------------------------------

    def _send_fax(self, fax: FaxMessage) -> Receipt:
        response = request(
            self.client,
            "POST",
            self._url("/faxes"),
            provider=self.provider,
            auth=self._auth(),
            data=self._send_fields(fax),
            files={"file": (f"{fax.reference}.pdf", fax.pdf, "application/pdf")},
        )
        if not response.is_success:
            raise _error_for_response(response, env=env_prefix(self.name))
        return self._receipt(response)

    def _send_fields(self, message: FaxMessage) -> dict[str, str]:
        fields = {"to": message.to, "caller_id": message.from_number, f"tag[{REFERENCE_TAG}]": message.reference}
        if message.header_text:
            fields["header_text"] = message.header_text
        if self.config.callback_url:
            fields["callback_url"] = self.config.callback_url
        return fields

    def _receipt(self, response: httpx.Response) -> Receipt:
        body = _json(response)
        fax_id = _fax_id(body.get("data")) if body.get("success") is True else None
        if fax_id is None:
            # A 2xx we cannot read may still be an accepted fax: reconcile, never resend blindly.
            raise Unknown(f"{self.provider}: HTTP {response.status_code} without a fax id", code="unreadable", raw=body)
        log.debug("phaxio accepted fax %s", fax_id)
        return Receipt(
            provider=self.provider, provider_id=fax_id, accepted_at=datetime.now(UTC), status="queued", raw=body
        )

    # -- looking up ----------------------------------------------------------------------------

    def _fetch_status(self, provider_id: str) -> StatusEvent:
        response = self._lookup("GET", f"/faxes/{provider_id}")
        fax = _json(response).get("data")
        fax_id = _fax_id(fax)
        if not isinstance(fax, dict) or fax_id is None:
            raise StatusLookupError(f"{self.provider}: fax {provider_id} came back without data or id")
        return self._event(fax_id, fax, kind=None, event_type="fetch", received_at=datetime.now(UTC))

    def _find_by_reference(self, reference: str, *, to: str | None, sent_after: datetime | None) -> StatusEvent | None:
        """By ``tag[reference]``, narrowed to ``phone_number`` = ``to`` and ``created_after`` = ``sent_after``."""
        since = sent_after or datetime.now(UTC) - LOOKUP_WINDOW
        params = {
            f"tag[{REFERENCE_TAG}]": reference,
            "direction": "sent",
            "created_after": since.astimezone(UTC).isoformat(timespec="seconds"),
            "per_page": str(LOOKUP_PAGE_SIZE),
        }
        if to is not None:
            params["phone_number"] = to
        for page in range(1, LOOKUP_MAX_PAGES + 1):
            faxes = _json(self._lookup("GET", "/faxes", params={**params, "page": str(page)})).get("data")
            if not isinstance(faxes, list):
                raise StatusLookupError(f"{self.provider}: fax list without data")
            for fax in objects(faxes):  # newest first; the filter is checked again in case it was ignored
                if _reference(fax) == reference:
                    return self._found(fax)
            if len(faxes) < LOOKUP_PAGE_SIZE:
                return None  # every page read: the provider has no such fax
        # more pages than we read: "not found" would be a guess, and a guess may send a second fax
        raise StatusLookupError(f"{self.provider}: reference not in the first {LOOKUP_MAX_PAGES} pages; cannot tell")

    def _found(self, fax: Mapping[str, Any]) -> StatusEvent:
        fax_id = _fax_id(fax)
        if fax_id is None:
            raise StatusLookupError(f"{self.provider}: a listed fax carries our reference but no id")
        return self._event(fax_id, fax, kind=None, event_type="lookup", received_at=datetime.now(UTC))

    def _lookup(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = request(
                self.client, method, self._url(path), provider=self.provider, auth=self._auth(), **kwargs
            )
        except DeliveryError as err:
            raise StatusLookupError(f"{self.provider}: lookup failed: {err}") from err
        if not response.is_success:
            message = text(_json(response).get("message")) or ""
            raise StatusLookupError(f"{self.provider}: lookup HTTP {response.status_code}: {message}")
        return response

    # -- webhooks ------------------------------------------------------------------------------

    def _parse_webhook(self, request: WebhookRequest) -> list[StatusEvent]:
        fields, files = _read_form(request)
        self._verify(request, fields, files)
        values = dict(fields)
        event_type = values.get("event_type")
        try:
            fax = json.loads(values["fax"])
        except (KeyError, ValueError) as err:
            raise WebhookFormatError(f"{self.provider}: webhook without a readable 'fax' field") from err
        fax_id = _fax_id(fax)
        if not isinstance(fax, dict) or fax_id is None or not event_type:
            raise WebhookFormatError(f"{self.provider}: webhook without a fax id or event_type")
        kind = WEBHOOK_KINDS.get(event_type)
        if event_type not in WEBHOOK_KINDS:
            return []  # e.g. events of received faxes: nothing of ours changes
        received = request.received_at
        return [self._event(fax_id, fax, kind=kind, event_type=event_type, received_at=received, extra=values)]

    def _verify(self, request: WebhookRequest, fields: list[tuple[str, str]], files: list[tuple[str, bytes]]) -> None:
        given = request.headers.get("x-phaxio-signature", "")
        if not given:
            raise WebhookAuthError(f"{self.provider}: webhook without X-Phaxio-Signature")
        # Phaxio signs the URL string we submitted; behind a proxy the received URL may differ.
        url = self.config.callback_url or request.url
        expected = signature(self.config.callback_token.get_secret_value(), url, fields, files)
        if not hmac.compare_digest(expected.encode(), given.strip().lower().encode("utf-8", "replace")):
            raise WebhookAuthError(f"{self.provider}: webhook signature does not match")

    # -- mapping -------------------------------------------------------------------------------

    def _event(
        self,
        fax_id: str,
        fax: Mapping[str, Any],
        *,
        kind: EventKind | None,
        event_type: str,
        received_at: datetime,
        extra: Mapping[str, str] | None = None,
    ) -> StatusEvent:
        """One StatusEvent from a Fax object; ``kind`` None means "from its status"."""
        recipient = _first_recipient(fax)
        status = text(fax.get("status")) or ""
        if kind is None:
            kind = STATUS_KINDS.get(text(recipient.get("status")) or status, STATUS_KINDS.get(status, EventKind.QUEUED))
        error_type, error_id = _error_of(recipient, fax)
        failed = kind in (EventKind.FAILED, EventKind.DEFERRED)
        marker = (extra or {}).get("page") or (extra or {}).get("retry_count") or fax.get("completed_at")
        return StatusEvent(
            provider=self.provider,
            provider_id=fax_id,
            kind=kind,
            occurred_at=parse_time(fax.get("completed_at")) or received_at,
            reference=_reference(fax),
            error_class=classify_error(error_type, error_id) if failed else None,
            error_code=str(error_id) if failed and error_id is not None else None,
            detail=_detail(error_type, text(recipient.get("error_message")) or text(fax.get("error_message"))),
            pages=integer(fax.get("num_pages")),
            event_id=f"{fax_id}:{event_type}:{status}:{marker or ''}",
            raw=dict(fax),
        )

    def _url(self, path: str) -> str:
        return self.config.base_url.rstrip("/") + API + path

    def _auth(self) -> tuple[str, str]:
        return (self.config.api_key, self.config.api_secret.get_secret_value())


# event_type -> kind; fax_completed takes the kind from the fax's final status (None).
WEBHOOK_KINDS: dict[str, EventKind | None] = {
    "fax_completed": None,
    "transmitting_page": EventKind.SENDING,
    "retry_scheduled": EventKind.DEFERRED,
}


def _error_for_response(response: httpx.Response, *, env: str) -> DeliveryError:
    """Map a non-2xx answer to send; Phaxio's body is ``{"success": false, "message": ...}``."""
    body = _json(response)
    message = text(body.get("message")) or ""
    status = response.status_code
    if status in (401, 403):
        keys = f"{env}API_KEY and {env}API_SECRET"
        return ConfigurationFault(
            f"phaxio: HTTP {status}, authentication failed; check {keys}", code=str(status), raw=body, setting=keys
        )
    if status == 402:
        # Insufficient funds. Nothing was sent and the number is fine: a permanent error would move
        # a letter to a head of state on to a weaker route because of our billing. Retry later while
        # an operator tops the account up; RetryPolicy's backoff and max_attempts bound the retries.
        return Transient(f"phaxio: payment required: {message}", code="insufficient_funds", raw=body)
    if status == 422:  # invalid request, e.g. an invalid or unsupported number: this route is dead
        return Permanent(f"phaxio: request refused: {message}", code="422", raw=body)
    return error_for_status(response, provider="phaxio", detail=message)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _fax_id(fax: object) -> str | None:
    """A Fax object's id (an integer), as text; None when it has none."""
    fax_id = integer(obj(fax).get("id"))
    return None if fax_id is None else str(fax_id)


def _reference(fax: Mapping[str, Any]) -> str | None:
    return text(obj(fax.get("tags")).get(REFERENCE_TAG))


def _first_recipient(fax: Mapping[str, Any]) -> Mapping[str, Any]:
    recipients = fax.get("recipients")
    if isinstance(recipients, list) and recipients and isinstance(recipients[0], dict):
        return recipients[0]
    return {}


def _error_of(recipient: Mapping[str, Any], fax: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """The recipient's error if it has one (it is the more precise), else the fax's."""
    source = recipient if recipient.get("error_type") or recipient.get("error_id") else fax
    return text(source.get("error_type")), integer(source.get("error_id"))


def _detail(error_type: str | None, message: str | None) -> str | None:
    if not error_type and not message:
        return None
    return f"{error_type}: {message}" if error_type else message


def _read_form(request: WebhookRequest) -> tuple[list[tuple[str, str]], list[tuple[str, bytes]]]:
    """Fields and file parts of a multipart/form-data body, byte-exact (the signature covers them)."""
    if request.method.upper() != "POST":
        raise WebhookFormatError(f"phaxio: webhook must be a POST, not {request.method}")
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise WebhookFormatError("phaxio: webhook must be multipart/form-data")
    parts = _MultipartCollector(boundary)
    try:
        parts.feed(request.body)
    except (MultipartParseError, UnicodeDecodeError) as err:
        raise WebhookFormatError(f"phaxio: malformed multipart body ({type(err).__name__})") from err
    return parts.fields, parts.files


class _MultipartCollector:
    """Collects parts with python-multipart's streaming parser (the one Starlette uses)."""

    def __init__(self, boundary: bytes) -> None:
        self.fields: list[tuple[str, str]] = []
        self.files: list[tuple[str, bytes]] = []
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._data = bytearray()
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            {  # type: ignore[arg-type]
                "on_part_begin": self._begin,
                "on_part_data": self._part_data,
                "on_part_end": self._end_part,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_end": self._end,
            },
        )

    def feed(self, body: bytes) -> None:
        self._parser.write(body)
        self._parser.finalize()
        if not self._ended:
            raise MultipartParseError("body ends before the closing boundary")

    def _begin(self) -> None:
        self._headers, self._data = {}, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]

    def _end_part(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8")
        if b"filename" in options:
            self.files.append((name, bytes(self._data)))
        else:
            self.fields.append((name, bytes(self._data).decode("utf-8")))

    def _end(self) -> None:
        self._ended = True
