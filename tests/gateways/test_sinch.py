"""SinchGateway against the Sinch Fax v3 emulator on real localhost ports, callbacks included."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dispatcher.domain.messages import EventKind, FaxMessage, WebhookRequest
from workers.gateways.errors import (
    ConfigurationFault,
    GatewayConfigError,
    Permanent,
    Transient,
    WebhookFormatError,
)
from workers.gateways.fax import sinch
from workers.gateways.fax.sinch import SinchGateway, SinchSettings, classify_error, url_with_credentials
from workers.gateways.registry import build_gateway
from workers.sandbox.core import SandboxState
from workers.sandbox.server import ThreadedServer, serve
from workers.sandbox.sinch import create_app

from .contract import HttpContract, WebhookContract
from .receivers import Receiver, receiving

PROJECT, KEY_ID, KEY_SECRET = "tinyfrog-jump-high-over-lilypadbasin", "key-id", "key-secret"
HOOK_USER, HOOK_PASSWORD = "dispatch", "p@ss:w/rd"  # characters that need quoting inside a URL
PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Pages /Kids [2 0 R 3 0 R] >>\n2 0 obj << /Type /Page >>\n"
    b"3 0 obj << /Type /Page >>\n%%EOF"
)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    with receiving("/hooks/sinch") as pair:
        yield pair


@pytest.fixture(scope="module")
def state() -> SandboxState:
    return SandboxState(provider="sinch", webhook_delay=0.02)


@pytest.fixture(scope="module")
def emulator(state: SandboxState) -> Iterator[ThreadedServer]:
    with serve(create_app(state, project_id=PROJECT, key_id=KEY_ID, key_secret=KEY_SECRET)) as server:
        yield server


@pytest.fixture
def gateway(emulator: ThreadedServer, receiver: tuple[Receiver, str]) -> SinchGateway:
    return SinchGateway(_settings(emulator.url, receiver[1]))


@pytest.fixture
def make_gateway(receiver: tuple[Receiver, str]) -> Iterator[Callable[..., SinchGateway]]:
    clients: list[httpx.Client] = []

    def make(address: str, *, read_timeout: float = 5.0, transport: httpx.BaseTransport | None = None) -> SinchGateway:
        clients.append(httpx.Client(timeout=httpx.Timeout(5.0, read=read_timeout), transport=transport))
        return SinchGateway(_settings(address, receiver[1]), client=clients[-1])

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def new_message() -> Callable[[], FaxMessage]:
    return _message


def _settings(
    base_url: str,
    callback_url: str | None = "https://example.org/cb",
    *,
    password: str = HOOK_PASSWORD,
    key_id: str = KEY_ID,
) -> SinchSettings:
    return SinchSettings(
        project_id=PROJECT,
        key_id=key_id,
        key_secret=SecretStr(KEY_SECRET),
        base_url=base_url,
        callback_url=callback_url,
        callback_username=HOOK_USER,
        callback_password=SecretStr(password),
    )


def _message() -> FaxMessage:
    return FaxMessage(
        to=f"+1555{uuid.uuid4().int % 10**7:07d}",
        from_number="+15551230000",
        pdf=PDF,
        page_count=2,
        reference=f"ref-{uuid.uuid4().hex}",
        header_text="Amnesty campaign",
    )


def _oracle(state: SandboxState, reference: str) -> list[str]:
    return [entry.provider_id for entry in state.oracle() if entry.reference == reference]


def _completed(receiver: Receiver, fax_id: str) -> WebhookRequest:
    return receiver.wait_for(lambda r: json.loads(r.body)["fax"]["id"] == fax_id)


# -- sending --------------------------------------------------------------------------------------


def test_send_success_returns_receipt_and_records_the_reference(gateway: SinchGateway, state: SandboxState) -> None:
    message = _message()
    receipt = gateway.send(message)
    assert receipt.provider == "sinch" and receipt.status == "QUEUED" and len(receipt.provider_id) == 26
    assert receipt.raw["labels"] == {"reference": message.reference} and receipt.raw["maxRetries"] == 0
    assert receipt.raw["numberOfPages"] == 2 and "****" in receipt.raw["callbackUrl"]  # masked
    assert _oracle(state, message.reference) == [receipt.provider_id]


def test_send_sends_the_documented_json() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "01W4FFL35P4NC4K35CR3P35M1N1", "status": "QUEUED"})

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        gateway = SinchGateway(_settings("https://fax.sinch.test"), client=client)
        message = _message()
        gateway.send(message)
    body = json.loads(seen[0].read())
    assert seen[0].url == f"https://fax.sinch.test/v3/projects/{PROJECT}/faxes"
    assert seen[0].headers["authorization"] == "Basic " + base64.b64encode(b"key-id:key-secret").decode()
    assert body["files"] == [{"file": base64.b64encode(PDF).decode(), "fileType": "PDF"}]
    assert (body["to"], body["from"], body["headerText"]) == (message.to, "+15551230000", "Amnesty campaign")
    assert body["labels"] == {"reference": message.reference} and body["maxRetries"] == 0
    assert body["callbackUrl"] == "https://dispatch:p%40ss%3Aw%2Frd@example.org/cb"
    assert body["callbackUrlContentType"] == "application/json"


def test_invalid_number_is_permanent_and_nothing_is_accepted(gateway: SinchGateway, state: SandboxState) -> None:
    message = _message()
    state.script(message.to, ["invalid_number"])
    with pytest.raises(Permanent) as caught:
        gateway.send(message)
    assert type(caught.value) is Permanent and caught.value.code == "invalid_number"
    assert _oracle(state, message.reference) == []


def test_malformed_number_is_permanent(gateway: SinchGateway, state: SandboxState) -> None:
    message = FaxMessage(
        to="0800-not-e164", from_number="+15551230000", pdf=PDF, page_count=2, reference=f"ref-{uuid.uuid4().hex}"
    )
    with pytest.raises(Permanent) as caught:
        gateway.send(message)
    assert caught.value.code == "invalid_number" and "E.164" in str(caught.value)
    assert _oracle(state, message.reference) == []


@pytest.mark.parametrize(
    ("outcome", "code", "error_class", "no_fax_tone"),
    [
        ("busy", "17", "transient", False),
        ("no_answer", "30", "transient", False),
        ("no_fax_tone", "132", "transient", True),
    ],
)
def test_call_failures_arrive_as_callbacks(
    gateway: SinchGateway,
    state: SandboxState,
    receiver: tuple[Receiver, str],
    outcome: str,
    code: str,
    error_class: str,
    no_fax_tone: bool,
) -> None:
    message = _message()
    state.script(message.to, [outcome])
    receipt = gateway.send(message)
    [event] = gateway.parse_webhook(_completed(receiver[0], receipt.provider_id))
    assert (event.kind, event.error_code, event.error_class) == (EventKind.FAILED, code, error_class)
    assert event.no_fax_tone is no_fax_tone
    assert event.reference == message.reference


def test_wrong_credentials_are_a_configuration_fault_naming_the_setting(emulator: ThreadedServer) -> None:
    with pytest.raises(ConfigurationFault) as caught:
        SinchGateway(_settings(emulator.url, key_id="wrong"), name="sinch").send(_message())
    assert caught.value.setting == "DISPATCH_SINCH_KEY_ID and DISPATCH_SINCH_KEY_SECRET"
    assert "DISPATCH_SINCH_KEY_ID" in str(caught.value) and caught.value.code == "401"


def test_refused_keys_fail_the_credential_check_naming_the_settings(emulator: ThreadedServer) -> None:
    """GET /v3/projects/{projectId}/services?pageSize=1: project-scoped, sends nothing."""
    with pytest.raises(ConfigurationFault) as caught:
        SinchGateway(_settings(emulator.url, key_id="wrong"), name="sinch").check_credentials()
    assert str(caught.value) == "DISPATCH_SINCH_KEY_ID and DISPATCH_SINCH_KEY_SECRET were refused by sinch (HTTP 401)"
    settings = _settings(emulator.url).model_copy(update={"project_id": "another-project"})
    with pytest.raises(ConfigurationFault) as caught:
        SinchGateway(settings, name="sinch").check_credentials()
    assert caught.value.setting == "DISPATCH_SINCH_PROJECT_ID"


def test_scripted_unauthorized_is_a_configuration_fault(gateway: SinchGateway, state: SandboxState) -> None:
    message = _message()
    state.script(message.to, ["unauthorized"])
    with pytest.raises(ConfigurationFault) as caught:
        gateway.send(message)
    assert caught.value.code == "401" and _oracle(state, message.reference) == []


def test_a_project_sinch_does_not_know_is_a_configuration_fault(emulator: ThreadedServer) -> None:
    settings = _settings(emulator.url).model_copy(update={"project_id": "another-project"})
    with pytest.raises(ConfigurationFault) as caught:
        SinchGateway(settings, name="sinch").send(_message())
    assert (caught.value.code, caught.value.setting) == ("404", "DISPATCH_SINCH_PROJECT_ID")


def test_forbidden_is_a_configuration_fault() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"})

    with httpx.Client(transport=httpx.MockTransport(answer)) as client, pytest.raises(ConfigurationFault) as caught:
        SinchGateway(_settings("https://fax.sinch.test"), client=client).send(_message())
    assert caught.value.code == "403"


def test_scripted_media_fetch_failure_is_a_configuration_fault_by_callback(
    gateway: SinchGateway, state: SandboxState, receiver: tuple[Receiver, str]
) -> None:
    message = _message()
    state.script(message.to, ["media_fetch_failed"])
    receipt = gateway.send(message)
    [event] = gateway.parse_webhook(_completed(receiver[0], receipt.provider_id))
    assert (event.kind, event.error_code, event.error_class) == (EventKind.FAILED, "54", "configuration")


def test_payment_required_is_transient() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, json={"code": 402, "message": "Insufficient funds", "status": "FAILED_PRECONDITION"})

    with httpx.Client(transport=httpx.MockTransport(answer)) as client, pytest.raises(Transient) as caught:
        SinchGateway(_settings("https://fax.sinch.test"), client=client).send(_message())
    assert caught.value.code == "insufficient_funds"


def test_settings_require_callback_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [
        ("PROJECT_ID", PROJECT),
        ("KEY_ID", KEY_ID),
        ("KEY_SECRET", KEY_SECRET),
        ("CALLBACK_URL", "https://example.org/cb"),
    ]:
        monkeypatch.setenv(f"DISPATCH_SINCH_{name}", value)
    with pytest.raises(GatewayConfigError, match="DISPATCH_SINCH_CALLBACK_PASSWORD"):
        build_gateway("sinch")
    monkeypatch.setenv("DISPATCH_SINCH_CALLBACK_USERNAME", HOOK_USER)
    monkeypatch.setenv("DISPATCH_SINCH_CALLBACK_PASSWORD", HOOK_PASSWORD)
    gateway = build_gateway("sinch")
    assert isinstance(gateway, SinchGateway) and gateway.config.base_url == "https://fax.api.sinch.com"


# -- looking up -----------------------------------------------------------------------------------


def test_fetch_status_follows_the_fax(gateway: SinchGateway, receiver: tuple[Receiver, str]) -> None:
    receipt = gateway.send(_message())
    _completed(receiver[0], receipt.provider_id)
    event = gateway.fetch_status(receipt.provider_id)
    assert event.kind is EventKind.DELIVERED and event.provider_id == receipt.provider_id and event.pages == 2


def test_find_by_reference_pages_through_a_list_that_ignores_labels() -> None:
    pages = {
        1: [{"id": "A", "status": "QUEUED", "labels": {"reference": "other"}}],
        2: [{"id": "B", "status": "COMPLETED", "labels": {"reference": "wanted"}}],
    }

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        return httpx.Response(200, json={"faxes": pages.get(page, []), "page": page, "totalPages": 2})

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        gateway = SinchGateway(_settings("https://fax.sinch.test"), client=client)
        found = gateway.find_by_reference("wanted")
        assert found is not None and found.provider_id == "B" and found.kind is EventKind.DELIVERED
        assert gateway.find_by_reference("nowhere") is None


# -- callbacks ------------------------------------------------------------------------------------


def test_callback_from_the_emulator_authenticates(gateway: SinchGateway, receiver: tuple[Receiver, str]) -> None:
    message = _message()
    receipt = gateway.send(message)
    request = _completed(receiver[0], receipt.provider_id)
    assert request.headers["authorization"].startswith("Basic ")  # from the credentials in the URL
    [event] = gateway.parse_webhook(request)
    assert event.kind is EventKind.DELIVERED and event.reference == message.reference
    assert event.raw is not None and "file" not in event.raw


FAX = {
    "id": "01W4FFL35P4NC4K35CR3P35M1N1",
    "direction": "OUTBOUND",
    "status": "FAILURE",
    "errorType": "CALL_ERROR",
    "errorCode": 34,
    "errorMessage": "Phone number not operational",
    "labels": {"reference": "r-1"},
    "completedTime": "2024-02-27T12:28:09Z",
    "pagesSentSuccessfully": 0,
}


def _callback(
    payload: object, *, password: str = HOOK_PASSWORD, content_type: str = "application/json", auth: bool = True
) -> WebhookRequest:
    token = base64.b64encode(f"{HOOK_USER}:{password}".encode()).decode()
    headers = {"content-type": content_type, **({"authorization": f"Basic {token}"} if auth else {})}
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return WebhookRequest(
        method="POST", url="https://example.org/cb", headers=headers, body=body, received_at=datetime.now(UTC)
    )


def _hook_gateway() -> SinchGateway:
    return SinchGateway(_settings("https://fax.sinch.test"))


def test_handmade_callback_maps_the_error() -> None:
    [event] = _hook_gateway().parse_webhook(
        _callback(
            {
                "event": "FAX_COMPLETED",
                "eventTime": "2024-02-27T12:28:10Z",
                "fax": FAX,
                "file": "JVBERi0=",
                "fileType": "PDF",
            }
        )
    )
    assert (event.kind, event.error_class, event.error_code) == (EventKind.FAILED, "permanent", "34")
    assert event.occurred_at == datetime(2024, 2, 27, 12, 28, 9, tzinfo=UTC) and event.reference == "r-1"


def test_callbacks_without_configured_credentials_fail_loudly() -> None:
    settings = SinchSettings(project_id=PROJECT, key_id=KEY_ID, key_secret=SecretStr(KEY_SECRET))
    with pytest.raises(GatewayConfigError, match="CALLBACK_USERNAME"):
        SinchGateway(settings).parse_webhook(_callback({"event": "FAX_COMPLETED", "fax": FAX}))


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"[1, 2]", {"event": "FAX_COMPLETED"}, {"event": "FAX_COMPLETED", "fax": {"status": "COMPLETED"}}],
)
def test_malformed_callback_is_a_format_error(payload: object) -> None:
    with pytest.raises(WebhookFormatError):
        _hook_gateway().parse_webhook(_callback(payload))


def test_multipart_callback_is_a_format_error() -> None:
    with pytest.raises(WebhookFormatError):
        _hook_gateway().parse_webhook(
            _callback({"event": "FAX_COMPLETED", "fax": FAX}, content_type="multipart/form-data; boundary=x")
        )


def test_url_with_credentials_replaces_existing_userinfo() -> None:
    assert url_with_credentials("https://old:x@host/p?q=1", "u", "p w") == "https://u:p%20w@host/p?q=1"


@pytest.fixture
def signed_document() -> Callable[[Any], WebhookRequest]:
    """A JSON callback with the Basic credentials Sinch takes from our callback URL."""
    return _callback


@pytest.fixture
def signed_raw() -> Callable[[bytes], WebhookRequest]:
    return _callback


@pytest.fixture
def webhook_sample() -> dict[str, Any]:
    return {
        "event": "FAX_COMPLETED",
        "eventTime": "2024-02-27T12:28:10Z",
        "fax": FAX,
        "file": "JVBERi0=",
        "fileType": "PDF",
    }


@pytest.fixture
def other_event_sample() -> dict[str, Any]:
    return {"event": "INCOMING_FAX", "fax": FAX}


@pytest.fixture
def forged_webhooks() -> list[WebhookRequest]:
    payload = {"event": "FAX_COMPLETED", "fax": FAX}
    request = _callback(payload)
    return [
        _callback(payload, password="guess"),
        _callback(payload, auth=False),
        WebhookRequest(
            method="POST",
            url=request.url,
            headers={**request.headers, "authorization": "Basic ***not-base64***"},
            body=request.body,
            received_at=request.received_at,
        ),
    ]


class TestContract(HttpContract, WebhookContract):
    """The behaviour every gateway shares (contract.py), for Sinch."""

    unknown_id = "01NOTAFAX"


# -- tables ---------------------------------------------------------------------------------------

# Sinch's own error list for Fax API v3 (developers.sinch.com/docs/fax/api-reference/fax/tag/Error-Messages;
# sinch-sdk-node packages/fax/src/models/v3/errors) -- (errorType, errorCode, message) -- and our routing
# decision for each. Written out by hand, not read from the module: changing the table must change this.
DOCUMENTED_ERRORS: list[tuple[str, int, str, str]] = [
    ("DOCUMENT_CONVERSION_ERROR", 4, "There was a problem in converting and merging files ...", "permanent"),
    # the provider could not fetch a document URL it was given: ours to fix, not the number's
    ("DOCUMENT_CONVERSION_ERROR", 54, "Could not access the url you provided.", "configuration"),
    ("DOCUMENT_CONVERSION_ERROR", 55, "The string_data URL you provided is invalid", "permanent"),
    ("DOCUMENT_CONVERSION_ERROR", 57, "There was a problem storing the file you provided.", "transient"),
    ("DOCUMENT_CONVERSION_ERROR", 69, "There was a problem storing the file you provided.", "transient"),
    ("DOCUMENT_CONVERSION_ERROR", 122, "User simulated Document Conversion Error", "permanent"),
    ("DOCUMENT_CONVERSION_ERROR", 128, "Could not determine mimetype for file.", "permanent"),
    ("DOCUMENT_CONVERSION_ERROR", 129, "Mimetype not supported.", "permanent"),
    ("DOCUMENT_CONVERSION_ERROR", 130, "Mimetype not supported: application/xml", "permanent"),
    ("DOCUMENT_CONVERSION_ERROR", 133, "Failed to normalize PDF document", "permanent"),
    ("CALL_ERROR", 11, "The call dropped prematurely", "transient"),
    ("CALL_ERROR", 15, "Congestion", "transient"),
    ("CALL_ERROR", 16, "Ring Timeout", "transient"),
    ("CALL_ERROR", 17, "Busy", "transient"),
    ("CALL_ERROR", 19, "Immediate Hangup", "transient"),
    ("CALL_ERROR", 30, "No answer from a fax machine.", "transient"),
    ("CALL_ERROR", 32, "Incompatible destination", "permanent"),
    ("CALL_ERROR", 34, "Phone number not operational", "permanent"),
    ("CALL_ERROR", 43, "Problem establishing connection", "transient"),
    ("CALL_ERROR", 49, "The destination phone number Is Not active", "permanent"),
    ("FAX_ERROR", 6, "There was an error communicating with the far side.", "transient"),
    ("FAX_ERROR", 7, "Far end cannot receive at the size of image", "permanent"),
    ("FAX_ERROR", 8, "No response after sending a page", "transient"),
    ("FAX_ERROR", 10, "Disconnected after permitted retries", "transient"),
    ("FAX_ERROR", 12, "Received no response to DCS or TCF", "transient"),
    ("FAX_ERROR", 13, "Timed out waiting for the first message", "transient"),
    ("FAX_ERROR", 14, "Timed out waiting for initial communication", "transient"),
    ("FAX_ERROR", 18, "Unexpected message received", "transient"),
    ("FAX_ERROR", 20, "The HDLC carrier did not stop in a timely manner", "transient"),
    ("FAX_ERROR", 21, "Received a DCN from remote after sending a page", "transient"),
    ("FAX_ERROR", 22, "Received bad response to DCS or training", "transient"),
    ("FAX_ERROR", 25, "Far end cannot receive at the resolution of the image", "permanent"),
    ("FAX_ERROR", 26, "The remote fax machine failed to respond", "transient"),
    ("FAX_ERROR", 28, "Failed to train with any of the compatible modems", "transient"),
    ("FAX_ERROR", 29, "Invalid response after sending a page", "transient"),
    ("FAX_ERROR", 31, "Fax machine incompatibility", "permanent"),
    ("FAX_ERROR", 38, "The remote fax machine hung up before receiving fax", "transient"),
    ("FAX_ERROR", 40, "Telephony error", "transient"),
    ("FAX_ERROR", 41, "Unexpected DCN while waiting for DCS or DIS", "transient"),
    ("FAX_ERROR", 44, "Telephony Error", "transient"),
    ("FAX_ERROR", 46, "Insufficient funds to send fax and not able to auto recharge; ...", "transient"),
    ("FAX_ERROR", 48, "No answer (The Receiving Machine May Be Out Of Paper)", "transient"),
    ("FAX_ERROR", 53, "Unexpected DCN after EOM or MPS sequence", "transient"),
    ("FAX_ERROR", 60, "Transmission error after page break", "transient"),
    ("FAX_ERROR", 63, "Fax protocol error", "transient"),
    ("FAX_ERROR", 68, "Far end is not compatible", "permanent"),
    ("FAX_ERROR", 75, "Manually canceled by user", "permanent"),
    ("FAX_ERROR", 76, "Canceled automatically because timeout exceeded", "transient"),
    ("FAX_ERROR", 77, "Timed out waiting for receiver ready (ECM mode)", "transient"),
    ("FAX_ERROR", 79, "Can't cancel the fax, it's already complete!", "transient"),
    ("FAX_ERROR", 80, "Received a DCN while waiting for a DIS", "transient"),
    ("FAX_ERROR", 82, "There was an error communicating with the far side", "transient"),
    ("FAX_ERROR", 84, "Unexpected command after page received", "transient"),
    ("FAX_ERROR", 113, "The file for this fax has been deleted or is not accessible.", "permanent"),
    ("FAX_ERROR", 117, "No pages received", "transient"),
    ("FAX_ERROR", 119, "User requested simulated faxError", "transient"),
    ("FAX_ERROR", 131, "Incomplete transmission", "transient"),
    ("FAX_ERROR", 132, "No fax tone detected", "transient"),
    ("FAX_ERROR", 133, "Phone number is not permitted", "permanent"),
]


@pytest.mark.parametrize(("error_type", "code", "message", "expected"), DOCUMENTED_ERRORS)
def test_every_documented_error_code_routes_as_decided(error_type: str, code: int, message: str, expected: str) -> None:
    fax = {**FAX, "errorType": error_type, "errorCode": code, "errorMessage": message}
    [event] = _hook_gateway().parse_webhook(_callback({"event": "FAX_COMPLETED", "fax": fax}))
    assert (event.kind, event.error_code, event.error_class) == (EventKind.FAILED, str(code), expected)
    assert event.detail == f"{error_type}: {message}"


def test_the_table_holds_sinchs_codes_and_no_others() -> None:
    assert set(sinch.ERROR_CLASSES) == {code for _, code, _, _ in DOCUMENTED_ERRORS}


def test_code_69_is_sinchs_storage_failure_not_phaxios_conversion_failure() -> None:
    # Sinch: 69 "There was a problem storing the file you provided." (Error Messages page and
    # sinch-sdk-node DocumentConversionErrorCodeEnum); Phaxio's 69 is a conversion failure (test_phaxio.py).
    assert classify_error("DOCUMENT_CONVERSION_ERROR", 69) == "transient"


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("DOCUMENT_CONVERSION_ERROR", "permanent"),
        ("CALL_ERROR", "transient"),
        ("LINE_ERROR", "transient"),
        ("FAX_ERROR", "transient"),
        ("FATAL_ERROR", "transient"),
        ("GENERAL_ERROR", "transient"),
        (None, "transient"),
    ],
)
def test_unlisted_codes_fall_back_to_the_type(error_type: str | None, expected: str) -> None:
    assert classify_error(error_type, 9999) == expected


# Fax status (sinch-sdk-node FaxStatus; developers.sinch.com Faxes): QUEUED, IN_PROGRESS, COMPLETED, FAILURE.
DOCUMENTED_STATUSES: list[tuple[str, EventKind]] = [
    ("QUEUED", EventKind.QUEUED),
    ("IN_PROGRESS", EventKind.SENDING),
    ("COMPLETED", EventKind.DELIVERED),
    ("FAILURE", EventKind.FAILED),
]


@pytest.mark.parametrize(("status", "kind"), DOCUMENTED_STATUSES)
def test_every_documented_status_maps_as_decided(status: str, kind: EventKind) -> None:
    fax = {"id": "01W4FFL35P4NC4K35CR3P35M1N1", "status": status}
    [event] = _hook_gateway().parse_webhook(_callback({"event": "FAX_COMPLETED", "fax": fax}))
    assert event.kind is kind


def test_the_status_table_holds_the_documented_statuses() -> None:
    assert dict(DOCUMENTED_STATUSES) == sinch.STATUS_KINDS
