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
    ("outcome", "code", "error_class"),
    [
        ("busy", "17", "transient"),
        ("no_answer", "30", "transient"),
        ("no_fax_tone", "132", "transient"),
    ],
)
def test_call_failures_arrive_as_callbacks(
    gateway: SinchGateway,
    state: SandboxState,
    receiver: tuple[Receiver, str],
    outcome: str,
    code: str,
    error_class: str,
) -> None:
    message = _message()
    state.script(message.to, [outcome])
    receipt = gateway.send(message)
    [event] = gateway.parse_webhook(_completed(receiver[0], receipt.provider_id))
    assert (event.kind, event.error_code, event.error_class) == (EventKind.FAILED, code, error_class)
    assert event.reference == message.reference


def test_wrong_credentials_name_the_setting(emulator: ThreadedServer) -> None:
    with pytest.raises(Permanent) as caught:
        SinchGateway(_settings(emulator.url, key_id="wrong"), name="sinch").send(_message())
    assert "DISPATCH_SINCH_KEY_ID" in str(caught.value) and caught.value.code == "401"


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


@pytest.mark.parametrize(("code", "expected"), sorted(sinch.ERROR_CLASSES.items()))
def test_error_table_rows(code: int, expected: str) -> None:
    assert classify_error("CALL_ERROR", code) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (17, "transient"),
        (16, "transient"),
        (15, "transient"),
        (30, "transient"),
        (132, "transient"),
        (14, "transient"),
        (34, "permanent"),
        (49, "permanent"),
        (133, "permanent"),
        (129, "permanent"),
    ],
)
def test_error_table_decisions(code: int, expected: str) -> None:
    assert sinch.ERROR_CLASSES[code] == expected


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


@pytest.mark.parametrize(("status", "kind"), sorted(sinch.STATUS_KINDS.items()))
def test_status_table_rows(status: str, kind: EventKind) -> None:
    event = _hook_gateway()._event("X", {"id": "X", "status": status}, event="t", received_at=datetime.now(UTC))
    assert event.kind is kind
