"""Sinch Fax API v3 gateway: send, look up, reconcile and authenticate status callbacks.

Followed (checked against developers.sinch.com and the official sinch-sdk-node ``packages/fax``):

- Send a fax, ``POST /v3/projects/{projectId}/faxes`` with Basic ``keyId:keySecret``:
  https://developers.sinch.com/docs/fax/api-reference/fax/tag/Faxes/ . Of the two documented bodies
  (multipart ``file`` or JSON ``files: [{file: <base64>, fileType: "PDF"}]``) we use JSON, as the SDK
  does whenever ``files`` is given (``rest/v3/faxes/faxes-api.ts``, ``models/v3/fax-request``): one
  body type for send and callbacks, and labels stay a real JSON object. A single ``to`` answers with
  one Fax object (``models/v3/fax/fax.ts``).
- Get a fax, ``GET .../faxes/{id}``; list faxes ``GET .../faxes`` with ``direction``, ``status``,
  ``to``, ``from``, ``pageSize`` (<= 1000), ``page`` (https://developers.sinch.com/docs/fax/api-reference/fax/faxes/getfaxes.md).
  The SDK also sends a ``labels`` filter as a JSON string (``faxes-request-data.ts``); the public
  page we could read does not list it, so matches are checked again here. The list defaults to the
  prior week and answers ``{faxes, page, totalPages, ...}`` (SDK pagination ``PAGE3``).
- Callbacks: ``FAX_COMPLETED`` with ``event``, ``eventTime``, ``fax`` (and the fax content as
  ``file``); JSON when we ask for ``callbackUrlContentType: application/json``; a 200 is expected
  within 60 s, failures are retried 16 times (https://developers.sinch.com/docs/fax/api-reference/fax/tag/Notifications).
- Authentication of callbacks: Sinch documents no signature for fax callbacks, and the SDK says so
  ("No header validation is implemented for Fax API", ``rest/v3/callbacks/callbacks-webhook.ts``).
  Sinch does call a callback URL that carries basic-auth credentials (the Fax object notes that such
  credentials are masked when read back). So this gateway embeds ``callback_username`` and
  ``callback_password`` in the callback URL it sends, and refuses any callback without exactly those
  HTTP Basic credentials (constant-time comparison).
- Status ``QUEUED | IN_PROGRESS | COMPLETED | FAILURE``; ``errorType`` and ``errorCode`` from
  https://developers.sinch.com/docs/fax/api-reference/fax/tag/Error-Messages and the SDK's
  ``models/v3/errors`` (Sinch's own list; see :data:`ERROR_CLASSES`).
- Our configuration, not the route (``ConfigurationFault``, the gateway is paused): 401/403 (the key id
  and secret, or the key's access to the project), 404 on the project path (the project id), and
  errorCode 54 "Could not access the url you provided" (the provider could not fetch a document).
- Error bodies: we read ``message`` and, where present, ``details[].fieldViolations[]``
  (``{field, description}``), and fall back to the HTTP status; the exact error body of the fax API is
  not fully published, so nothing depends on more than that.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.domain.messages import EventKind, FaxMessage, Receipt, StatusEvent, WebhookRequest
from dispatcher.domain.states import Channel
from workers.gateways.errors import (
    ConfigurationFault,
    DeliveryError,
    GatewayConfigError,
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


REFERENCE_LABEL = "reference"  # labels.reference = our idempotency key; echoed in every Fax object
LOOKUP_PAGE_SIZE = 100
LOOKUP_MAX_PAGES = 5  # bounded; the list covers the prior week unless told otherwise

STATUS_KINDS: dict[str, EventKind] = {
    "QUEUED": EventKind.QUEUED,
    "IN_PROGRESS": EventKind.SENDING,
    "COMPLETED": EventKind.DELIVERED,
    "FAILURE": EventKind.FAILED,
}

# Failure of one attempt, by errorCode: the codes Sinch documents for Fax API v3, and no other --
# https://developers.sinch.com/docs/fax/api-reference/fax/tag/Error-Messages and sinch-sdk-node
# ``packages/fax/src/models/v3/errors/{document-conversion-error,call-error,fax-error}``. The numbers
# came from Phaxio, but the list is Sinch's own: it is shorter (no CALL_ERROR 50, 52, 73, 87, ...),
# and 69 means something else here (Phaxio: converting and merging files). Phaxio's table stays in
# phaxio.py. "transient": the same number may work later (RetryPolicy in dispatcher/domain/outcomes.py
# retries the route, up to max_attempts and the campaign deadline); "permanent": move to the next route.
ERROR_CLASSES: dict[int, ErrorClass] = {
    # DOCUMENT_CONVERSION_ERROR: our document; sending it again changes nothing, but storage is Sinch's
    4: "permanent",  # there was a problem in converting and merging files ... contact support
    54: "configuration",  # could not access the url you provided: a document URL, ours to fix
    55: "permanent",  # the string_data URL you provided is invalid
    57: "transient",  # there was a problem storing the file you provided
    69: "transient",  # Sinch: "there was a problem storing the file you provided" (as 57)
    122: "permanent",  # user simulated document conversion error
    128: "permanent",  # could not determine mimetype for file
    129: "permanent",  # mimetype not supported
    130: "permanent",  # mimetype not supported: application/xml
    # 133 is both DOCUMENT_CONVERSION_ERROR "failed to normalize PDF document" and FAX_ERROR "phone
    # number is not permitted": permanent either way (row below)
    # CALL_ERROR: the call could not be placed
    11: "transient",  # the call dropped prematurely
    15: "transient",  # congestion
    16: "transient",  # ring timeout
    17: "transient",  # busy
    19: "transient",  # immediate hangup
    30: "transient",  # no answer from a fax machine
    32: "permanent",  # incompatible destination
    34: "permanent",  # phone number not operational
    43: "transient",  # problem establishing connection
    49: "permanent",  # the destination phone number is not active
    # FAX_ERROR: the fax session failed; mostly line quality, so worth another call
    6: "transient",  # there was an error communicating with the far side
    7: "permanent",  # far end cannot receive at the size of image
    8: "transient",  # no response after sending a page
    10: "transient",  # disconnected after permitted retries
    12: "transient",  # received no response to DCS or TCF
    13: "transient",  # timed out waiting for the first message
    14: "transient",  # timed out waiting for initial communication
    18: "transient",  # unexpected message received
    20: "transient",  # the HDLC carrier did not stop in a timely manner
    21: "transient",  # received a DCN from remote after sending a page
    22: "transient",  # received bad response to DCS or training
    25: "permanent",  # far end cannot receive at the resolution of the image
    26: "transient",  # the remote fax machine failed to respond
    28: "transient",  # failed to train with any of the compatible modems
    29: "transient",  # invalid response after sending a page
    31: "permanent",  # fax machine incompatibility
    38: "transient",  # the remote fax machine hung up before receiving fax
    40: "transient",  # telephony error
    41: "transient",  # unexpected DCN while waiting for DCS or DIS
    44: "transient",  # telephony error
    46: "transient",  # insufficient funds: the account, not the number
    48: "transient",  # no answer (the receiving machine may be out of paper)
    53: "transient",  # unexpected DCN after EOM or MPS sequence
    60: "transient",  # transmission error after page break
    63: "transient",  # fax protocol error
    68: "permanent",  # far end is not compatible
    75: "permanent",  # manually canceled by user: an operator decided, do not undo it
    76: "transient",  # canceled automatically because timeout exceeded
    77: "transient",  # timed out waiting for receiver ready (ECM mode)
    79: "transient",  # can't cancel the fax, it's already complete (not a verdict on the number)
    80: "transient",  # received a DCN while waiting for a DIS
    82: "transient",  # there was an error communicating with the far side
    84: "transient",  # unexpected command after page received
    113: "permanent",  # the file for this fax has been deleted or is not accessible
    117: "transient",  # no pages received
    119: "transient",  # user requested simulated faxError
    131: "transient",  # incomplete transmission
    132: "transient",  # no fax tone detected (a voice line answered)
    133: "permanent",  # phone number is not permitted / failed to normalize PDF document
}

NO_FAX_TONE_CODES = frozenset({132})  # "no fax tone detected": counted by DISPATCH_NO_FAX_TONE_LIMIT

# errorType decides when the code is not in the table.
ERROR_TYPE_CLASSES: dict[str, ErrorClass] = {
    "DOCUMENT_CONVERSION_ERROR": "permanent",
    "CALL_ERROR": "transient",
    "LINE_ERROR": "transient",
    "FAX_ERROR": "transient",
    "FATAL_ERROR": "transient",
    "GENERAL_ERROR": "transient",
}


class SinchSettings(BaseSettings):
    """``DISPATCH_<NAME>_PROJECT_ID``, ``..._KEY_ID``, ``..._KEY_SECRET``; callback credentials optional."""

    model_config = SettingsConfigDict(env_prefix="DISPATCH_SINCH_", extra="ignore")

    project_id: str
    key_id: str
    key_secret: SecretStr
    base_url: str = "https://fax.api.sinch.com"
    callback_url: str | None = None
    callback_username: str | None = None
    # validated even when absent: a callback URL without credentials could never be authenticated
    callback_password: SecretStr | None = Field(default=None, validate_default=True)

    @field_validator("callback_password")
    @classmethod
    def _credentials_with_callback(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        has_user = bool(info.data.get("callback_username"))
        if info.data.get("callback_url") and not (has_user and value):
            raise ValueError(
                "callback_url needs callback_username and callback_password: Sinch does "
                "not sign fax callbacks, so they are authenticated with HTTP Basic"
            )
        if has_user != bool(value):
            raise ValueError("set both callback_username and callback_password, or neither")
        return value


def classify_error(error_type: str | None, error_code: int | None) -> ErrorClass:
    """Transient or permanent, by errorCode first, then errorType; unknown means transient."""
    if error_code is not None and error_code in ERROR_CLASSES:
        return ERROR_CLASSES[error_code]
    return ERROR_TYPE_CLASSES.get(error_type or "", "transient")


def url_with_credentials(url: str, username: str, password: str) -> str:
    """``https://user:pass@host/path``: Sinch then calls the URL with those Basic credentials."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class SinchGateway(HttpGateway[SinchSettings]):
    provider: ClassVar[str] = "sinch"
    channel: ClassVar[Channel] = Channel.FAX
    settings_class: ClassVar[type[BaseSettings]] = SinchSettings
    # An application/json FAX_COMPLETED callback carries the fax itself as base64 in ``file``
    # (Notifications page); Sinch takes files up to 20 MB (developers.sinch.com/docs/functions/cli/
    # commands/fax), so 4/3 of that plus the Fax object.
    max_webhook_bytes: ClassVar[int] = 28 * 1024 * 1024
    # Not documented as a number: the Fax API answers 429 "Rate limit exceeded, please back off"
    # (developers.sinch.com/docs/fax/api-reference, errors); conservative.
    per_second: ClassVar[int] = 5
    in_flight: ClassVar[int] = 4

    # -- the credential check at start-up -----------------------------------------------------

    def _check_credentials(self) -> None:
        """``GET .../services?pageSize=1`` (ListServices, sinch-sdk-node ``rest/v3/services``): project-scoped,
        sends nothing; 404 names the project id."""
        env = env_prefix(self.name)
        response = request(
            self.client,
            "GET",
            self._url("/services"),
            provider=self.provider,
            auth=self._auth(),
            params={"pageSize": 1},
        )
        if response.status_code == 404:
            raise ConfigurationFault.refused(f"{env}PROJECT_ID", by=self.name, detail="HTTP 404", code="404")
        check_answer(response, name=self.name, setting=f"{env}KEY_ID and {env}KEY_SECRET")

    # -- sending -------------------------------------------------------------------------------

    def _send_fax(self, fax: FaxMessage) -> Receipt:
        response = request(
            self.client,
            "POST",
            self._url("/faxes"),
            provider=self.provider,
            auth=self._auth(),
            json=self._send_body(fax),
        )
        if not response.is_success:
            raise _error_for_response(response, env=env_prefix(self.name))
        return self._receipt(response)

    def _send_body(self, message: FaxMessage) -> dict[str, Any]:
        body: dict[str, Any] = {
            "to": message.to,
            "from": message.from_number,
            "files": [{"file": base64.b64encode(message.pdf).decode("ascii"), "fileType": "PDF"}],
            "labels": {REFERENCE_LABEL: message.reference},
            # Our engine owns retries: it knows the campaign deadline, the minimum gap between faxes to
            # one number (DISPATCH_FAX_GAP_SECONDS) and the other routes. Provider-side retries would be
            # invisible to it and could deliver a letter after we moved on to another route: a
            # duplicate to the same office.
            "maxRetries": 0,
        }
        if message.header_text:
            body["headerText"] = message.header_text
        if self.config.callback_url:
            body["callbackUrl"] = self._callback_url()
            body["callbackUrlContentType"] = "application/json"
        return body

    def _callback_url(self) -> str:
        url, user, password = self.config.callback_url, self.config.callback_username, self.config.callback_password
        if not (url and user and password):  # the settings validator makes this unreachable
            raise GatewayConfigError(f"{self.provider}: callback_url needs callback credentials")
        return url_with_credentials(url, user, password.get_secret_value())

    def _receipt(self, response: httpx.Response) -> Receipt:
        body = _json(response)
        fax_id = body.get("id")
        if not isinstance(fax_id, str) or not fax_id:
            # A 2xx we cannot read may still be an accepted fax: reconcile, never resend blindly.
            raise Unknown(f"{self.provider}: HTTP {response.status_code} without a fax id", code="unreadable", raw=body)
        log.debug("sinch accepted fax %s", fax_id)
        return Receipt(
            provider=self.provider,
            provider_id=fax_id,
            accepted_at=datetime.now(UTC),
            status=text(body.get("status")) or "QUEUED",
            raw=_without_file(body),
        )

    # -- looking up ----------------------------------------------------------------------------

    def _fetch_status(self, provider_id: str) -> StatusEvent:
        fax = _json(self._lookup(f"/faxes/{quote(provider_id, safe='')}"))
        fax_id = text(fax.get("id"))
        if not fax_id:
            raise StatusLookupError(f"{self.provider}: fax {provider_id} came back without an id")
        return self._event(fax_id, fax, event="fetch", received_at=datetime.now(UTC))

    def _find_by_reference(self, reference: str, *, to: str | None, sent_after: datetime | None) -> StatusEvent | None:
        """By ``labels.reference``, narrowed to ``to``; the listing covers Sinch's default range (the prior
        week), so ``sent_after`` narrows nothing here."""
        params = {
            "direction": "OUTBOUND",
            "labels": json.dumps({REFERENCE_LABEL: reference}),
            "pageSize": str(LOOKUP_PAGE_SIZE),
        }
        if to is not None:
            params["to"] = to
        for page in range(1, LOOKUP_MAX_PAGES + 1):
            body = _json(self._lookup("/faxes", params={**params, "page": str(page)}))
            faxes, total_pages = body.get("faxes"), integer(body.get("totalPages"))
            if not isinstance(faxes, list) or total_pages is None:  # cannot tell what the listing holds
                raise StatusLookupError(f"{self.provider}: fax list without faxes or totalPages")
            for fax in objects(faxes):
                if _reference(fax) == reference:
                    return self._found(fax)
            if page >= total_pages:
                return None  # every page read: the provider has no such fax
        # more pages than we read: "not found" would be a guess, and a guess may send a second fax
        raise StatusLookupError(f"{self.provider}: reference not in the first {LOOKUP_MAX_PAGES} pages; cannot tell")

    def _found(self, fax: Mapping[str, Any]) -> StatusEvent:
        fax_id = text(fax.get("id"))
        if not fax_id:
            raise StatusLookupError(f"{self.provider}: a listed fax carries our reference but no id")
        return self._event(fax_id, fax, event="lookup", received_at=datetime.now(UTC))

    def _lookup(self, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = request(self.client, "GET", self._url(path), provider=self.provider, auth=self._auth(), **kwargs)
        except DeliveryError as err:
            raise StatusLookupError(f"{self.provider}: lookup failed: {err}") from err
        if not response.is_success:
            raise StatusLookupError(
                f"{self.provider}: lookup HTTP {response.status_code}: {_error_message(_json(response))}"
            )
        return response

    # -- webhooks ------------------------------------------------------------------------------

    def _parse_webhook(self, request: WebhookRequest) -> list[StatusEvent]:
        self._authenticate(request)
        payload = _read_json(request)
        event = payload.get("event")
        fax = obj(payload.get("fax"))
        fax_id = text(fax.get("id"))
        if not isinstance(event, str) or not fax_id:
            raise WebhookFormatError(f"{self.provider}: callback without event or fax id")
        if event != "FAX_COMPLETED":
            return []  # INCOMING_FAX and future events change none of our deliveries
        occurred = parse_time(payload.get("eventTime")) or request.received_at
        return [self._event(fax_id, fax, event=event, received_at=occurred)]

    def _authenticate(self, request: WebhookRequest) -> None:
        username, password = self.config.callback_username, self.config.callback_password
        if not username or password is None:
            # Not a WebhookError: the web layer answers 5xx, Sinch retries for days, and the
            # operator sees a configuration error instead of silently dropped callbacks.
            env = env_prefix(self.name)
            raise GatewayConfigError(
                f"sinch callbacks cannot be authenticated: set {env}CALLBACK_USERNAME and {env}CALLBACK_PASSWORD"
            )
        given_user, given_password = _basic_credentials(request.headers.get("authorization", ""))
        user_ok = hmac.compare_digest(given_user, username.encode())
        password_ok = hmac.compare_digest(given_password, password.get_secret_value().encode())
        if not (user_ok & password_ok):  # both compared, always: no early exit to time
            raise WebhookAuthError(f"{self.provider}: callback credentials do not match")

    # -- mapping -------------------------------------------------------------------------------

    def _event(self, fax_id: str, fax: Mapping[str, Any], *, event: str, received_at: datetime) -> StatusEvent:
        status = text(fax.get("status")) or ""
        kind = STATUS_KINDS.get(status, EventKind.QUEUED)
        error_type, error_code = text(fax.get("errorType")), integer(fax.get("errorCode"))
        failed = kind is EventKind.FAILED
        return StatusEvent(
            provider=self.provider,
            provider_id=fax_id,
            kind=kind,
            occurred_at=parse_time(fax.get("completedTime")) or received_at,
            reference=_reference(fax),
            error_class=classify_error(error_type, error_code) if failed else None,
            error_code=str(error_code) if failed and error_code is not None else None,
            no_fax_tone=failed and error_code in NO_FAX_TONE_CODES,
            detail=_detail(error_type, text(fax.get("errorMessage"))),
            pages=integer(fax.get("pagesSentSuccessfully") if failed else fax.get("numberOfPages")),
            event_id=f"{fax_id}:{event}:{status}:{fax.get('completedTime') or ''}",
            raw=_without_file(fax),
        )

    def _url(self, path: str) -> str:
        project = quote(self.config.project_id, safe="")
        return f"{self.config.base_url.rstrip('/')}/v3/projects/{project}{path}"

    def _auth(self) -> tuple[str, str]:
        return (self.config.key_id, self.config.key_secret.get_secret_value())


def _error_for_response(response: httpx.Response, *, env: str) -> DeliveryError:
    """Map a non-2xx answer to send."""
    body = _json(response)
    message = _error_message(body)
    status = response.status_code
    if status in (401, 403):
        keys = f"{env}KEY_ID and {env}KEY_SECRET"
        return ConfigurationFault(
            f"sinch: HTTP {status} {message}; check {keys} (and the key's access to the project)".replace("  ", " "),
            code=str(status),
            raw=body,
            setting=keys,
        )
    if status == 402:
        # Insufficient funds: nothing was sent and the number is fine. A permanent error would move a
        # letter on to a weaker route because of our billing; retry later while an operator tops up.
        return Transient(f"sinch: payment required: {message}", code="insufficient_funds", raw=body)
    if status == 404:
        return ConfigurationFault(
            f"sinch: not found; check {env}PROJECT_ID and {env}BASE_URL: {message}",
            code="404",
            raw=body,
            setting=f"{env}PROJECT_ID",
        )
    if status in (400, 422):
        invalid_number = "to" in _violated_fields(body)
        return Permanent(
            f"sinch: request refused: {message}", raw=body, code="invalid_number" if invalid_number else str(status)
        )
    return error_for_status(response, provider="sinch", detail=message)


def _violations(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``details[].fieldViolations[]`` of an error body."""
    return [v for detail in objects(body.get("details")) for v in objects(detail.get("fieldViolations"))]


def _violated_fields(body: Mapping[str, Any]) -> set[str]:
    return {field for v in _violations(body) if (field := text(v.get("field")))}


def _error_message(body: Mapping[str, Any]) -> str:
    message = text(body.get("message")) or text(body.get("error")) or ""
    violations = [f"{v.get('field')}: {v.get('description')}" for v in _violations(body)]
    return "; ".join([message, *violations]) if violations else message


def _basic_credentials(header: str) -> tuple[bytes, bytes]:
    """(username, password) from an ``Authorization: Basic`` header; empty when absent or unreadable."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return b"", b""
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b"", b""
    username, _, password = decoded.partition(b":")
    return username, password


def _read_json(request: WebhookRequest) -> dict[str, Any]:
    if request.method.upper() != "POST":
        raise WebhookFormatError(f"sinch: callback must be a POST, not {request.method}")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise WebhookFormatError(f"sinch: callback must be application/json, not {content_type or 'none'}")
    try:
        payload = json.loads(request.body)
    except ValueError as err:
        raise WebhookFormatError("sinch: callback body is not JSON") from err
    if not isinstance(payload, dict):
        raise WebhookFormatError("sinch: callback body is not a JSON object")
    return payload


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _without_file(data: Mapping[str, Any]) -> dict[str, Any]:
    """Evidence without the base64 fax content (we keep our own PDF and its hash)."""
    return {key: value for key, value in data.items() if key != "file"}


def _reference(fax: Mapping[str, Any]) -> str | None:
    return text(obj(fax.get("labels")).get(REFERENCE_LABEL))


def _detail(error_type: str | None, message: str | None) -> str | None:
    if not error_type and not message:
        return None
    return f"{error_type}: {message}" if error_type else message
