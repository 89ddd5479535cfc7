"""PhaxioGateway against the Phaxio emulator on real localhost ports, webhooks included."""

from __future__ import annotations

import hashlib
import hmac
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
from workers.gateways.fax import phaxio
from workers.gateways.fax.phaxio import PhaxioGateway, PhaxioSettings, classify_error, signature
from workers.gateways.registry import build_gateway
from workers.sandbox.core import SandboxState
from workers.sandbox.phaxio import create_app
from workers.sandbox.server import ThreadedServer, serve

from .contract import HttpContract, WebhookContract
from .receivers import Receiver, receiving

KEY, SECRET, TOKEN = "test-api-key", "test-api-secret", "test-webhook-token"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Pages /Kids [2 0 R] >>\n2 0 obj << /Type /Page >>\n%%EOF"


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    with receiving("/hooks/phaxio") as pair:
        yield pair


@pytest.fixture(scope="module")
def state() -> SandboxState:
    return SandboxState(provider="phaxio", webhook_delay=0.02)


@pytest.fixture(scope="module")
def emulator(state: SandboxState) -> Iterator[ThreadedServer]:
    with serve(create_app(state, api_key=KEY, api_secret=SECRET, callback_token=TOKEN)) as server:
        yield server


@pytest.fixture
def gateway(emulator: ThreadedServer, receiver: tuple[Receiver, str]) -> PhaxioGateway:
    return PhaxioGateway(_settings(emulator.url, receiver[1]))


@pytest.fixture
def make_gateway(receiver: tuple[Receiver, str]) -> Iterator[Callable[..., PhaxioGateway]]:
    clients: list[httpx.Client] = []

    def make(address: str, *, read_timeout: float = 5.0, transport: httpx.BaseTransport | None = None) -> PhaxioGateway:
        clients.append(httpx.Client(timeout=httpx.Timeout(5.0, read=read_timeout), transport=transport))
        return PhaxioGateway(_settings(address, receiver[1]), client=clients[-1])

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def new_message() -> Callable[[], FaxMessage]:
    return _message


def _settings(base_url: str, callback_url: str | None, token: str = TOKEN) -> PhaxioSettings:
    return PhaxioSettings(
        api_key=KEY,
        api_secret=SecretStr(SECRET),
        callback_token=SecretStr(token),
        base_url=base_url,
        callback_url=callback_url,
    )


def _message(to: str | None = None) -> FaxMessage:
    number = to or f"+1555{uuid.uuid4().int % 10**7:07d}"
    return FaxMessage(
        to=number,
        from_number="+15551230000",
        pdf=PDF,
        page_count=1,
        reference=f"ref-{uuid.uuid4().hex}",
        header_text="Amnesty campaign",
    )


def _oracle(state: SandboxState, reference: str) -> list[str]:
    return [entry.provider_id for entry in state.oracle() if entry.reference == reference]


def _completed(receiver: Receiver, fax_id: str) -> WebhookRequest:
    return receiver.wait_for(lambda r: f'"id": {fax_id},' in r.body.decode() and b"fax_completed" in r.body)


# -- sending --------------------------------------------------------------------------------------


def test_send_success_returns_receipt_and_records_the_reference(gateway: PhaxioGateway, state: SandboxState) -> None:
    message = _message()
    receipt = gateway.send(message)
    assert receipt.provider == "phaxio" and receipt.status == "queued"
    assert receipt.provider_id.isdigit() and receipt.raw["message"] == "Fax queued for sending"
    assert _oracle(state, message.reference) == [receipt.provider_id]
    fax = state_fax(gateway, receipt.provider_id)
    assert fax["tags"] == {"reference": message.reference}
    assert fax["caller_id"] == message.from_number


def state_fax(gateway: PhaxioGateway, fax_id: str) -> dict[str, object]:
    event = gateway.fetch_status(fax_id)
    assert isinstance(event.raw, dict)
    return event.raw


def test_invalid_number_is_permanent_and_nothing_is_accepted(gateway: PhaxioGateway, state: SandboxState) -> None:
    message = _message()
    state.script(message.to, ["invalid_number"])
    with pytest.raises(Permanent) as caught:
        gateway.send(message)
    assert type(caught.value) is Permanent and caught.value.code == "422"
    assert _oracle(state, message.reference) == []


@pytest.mark.parametrize(
    ("outcome", "error_id", "error_class"),
    [
        ("busy", "17", "transient"),
        ("no_answer", "112", "transient"),
        ("no_fax_tone", "14", "transient"),
    ],
)
def test_call_failures_arrive_as_signed_webhooks(
    gateway: PhaxioGateway,
    state: SandboxState,
    receiver: tuple[Receiver, str],
    outcome: str,
    error_id: str,
    error_class: str,
) -> None:
    message = _message()
    state.script(message.to, [outcome])
    receipt = gateway.send(message)  # accepted first, fails on the line afterwards
    [event] = gateway.parse_webhook(_completed(receiver[0], receipt.provider_id))
    assert (event.kind, event.error_code, event.error_class) == (EventKind.FAILED, error_id, error_class)
    assert event.reference == message.reference and event.provider_id == receipt.provider_id


def test_wrong_credentials_are_a_configuration_fault_naming_the_setting(emulator: ThreadedServer) -> None:
    settings = PhaxioSettings(
        api_key="wrong", api_secret=SecretStr(SECRET), callback_token=SecretStr(TOKEN), base_url=emulator.url
    )
    with pytest.raises(ConfigurationFault) as caught:
        PhaxioGateway(settings, name="phaxio-eu").send(_message())
    assert "DISPATCH_PHAXIO_EU_API_KEY" in str(caught.value) and caught.value.code == "401"
    assert caught.value.setting == "DISPATCH_PHAXIO_EU_API_KEY and DISPATCH_PHAXIO_EU_API_SECRET"


def test_refused_keys_fail_the_credential_check_naming_the_settings(emulator: ThreadedServer) -> None:
    """GET /v2.1/account/status (phaxio-ruby Account.get): the balance, sends nothing."""
    settings = PhaxioSettings(
        api_key="wrong", api_secret=SecretStr(SECRET), callback_token=SecretStr(TOKEN), base_url=emulator.url
    )
    with pytest.raises(ConfigurationFault) as caught:
        PhaxioGateway(settings, name="phaxio").check_credentials()
    assert (
        str(caught.value) == "DISPATCH_PHAXIO_API_KEY and DISPATCH_PHAXIO_API_SECRET were refused by phaxio (HTTP 401)"
    )


def test_scripted_unauthorized_is_a_configuration_fault(gateway: PhaxioGateway, state: SandboxState) -> None:
    message = _message()
    state.script(message.to, ["unauthorized"])
    with pytest.raises(ConfigurationFault) as caught:
        gateway.send(message)
    assert caught.value.code == "401" and _oracle(state, message.reference) == []


def test_scripted_media_fetch_failure_is_a_configuration_fault_by_webhook(
    gateway: PhaxioGateway, state: SandboxState, receiver: tuple[Receiver, str]
) -> None:
    message = _message()
    state.script(message.to, ["media_fetch_failed"])
    receipt = gateway.send(message)
    [event] = gateway.parse_webhook(_completed(receiver[0], receipt.provider_id))
    assert (event.kind, event.error_code, event.error_class) == (EventKind.FAILED, "54", "configuration")


def test_payment_required_is_transient() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, json={"success": False, "message": "Insufficient funds"})

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        gateway = PhaxioGateway(_settings("https://api.phaxio.test", None), client=client)
        with pytest.raises(Transient) as caught:
            gateway.send(_message())
    assert caught.value.code == "insufficient_funds"


def test_send_sends_the_documented_fields() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"success": True, "message": "Fax queued for sending", "data": {"id": 323034811}}
        )

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        gateway = PhaxioGateway(_settings("https://api.phaxio.test", "https://example.org/cb"), client=client)
        message = _message()
        assert gateway.send(message).provider_id == "323034811"
    body = seen[0].read()
    assert seen[0].url == "https://api.phaxio.test/v2.1/faxes"
    assert seen[0].headers["authorization"].startswith("Basic ")
    for name, value in [
        ("to", message.to),
        ("caller_id", message.from_number),
        ("header_text", "Amnesty campaign"),
        ("callback_url", "https://example.org/cb"),
        ("tag[reference]", message.reference),
    ]:
        assert f'name="{name}"\r\n\r\n{value}\r\n'.encode() in body
    assert b'name="file"; filename=' in body and PDF in body


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_PHAXIO_API_KEY", "k")
    monkeypatch.setenv("DISPATCH_PHAXIO_API_SECRET", "s")
    with pytest.raises(GatewayConfigError, match="DISPATCH_PHAXIO_CALLBACK_TOKEN"):
        build_gateway("phaxio")
    monkeypatch.setenv("DISPATCH_PHAXIO_CALLBACK_TOKEN", "t")
    gateway = build_gateway("phaxio")
    assert isinstance(gateway, PhaxioGateway) and gateway.config.base_url == "https://api.phaxio.com"


# -- looking up -----------------------------------------------------------------------------------


def test_fetch_status_follows_the_fax(gateway: PhaxioGateway, receiver: tuple[Receiver, str]) -> None:
    receipt = gateway.send(_message())
    _completed(receiver[0], receipt.provider_id)
    event = gateway.fetch_status(receipt.provider_id)
    assert event.kind is EventKind.DELIVERED and event.provider_id == receipt.provider_id
    assert event.pages == 1 and event.error_class is None


# -- webhooks -------------------------------------------------------------------------------------


def test_published_signature_example() -> None:
    # phaxio-ruby spec/resources/webhook_spec.rb: token "test-webhook-token", url "example.com",
    # params {test: true}, no files.
    assert signature("test-webhook-token", "example.com", [("test", "true")]) == (
        "64a735ef0c47a0ae671e381c046648f0966deb29"
    )


def test_signature_covers_sorted_params_and_file_digests() -> None:
    text = "https://x/cb" + "a1" + "b2" + "f" + hashlib.sha1(b"PDF").hexdigest() + "g" + hashlib.sha1(b"X").hexdigest()
    expected = hmac.new(b"tok", text.encode(), hashlib.sha1).hexdigest()
    assert signature("tok", "https://x/cb", [("b", "2"), ("a", "1")], [("g", b"X"), ("f", b"PDF")]) == expected


def test_webhook_from_the_emulator_verifies(gateway: PhaxioGateway, receiver: tuple[Receiver, str]) -> None:
    message = _message()
    receipt = gateway.send(message)
    [event] = gateway.parse_webhook(_completed(receiver[0], receipt.provider_id))
    assert event.kind is EventKind.DELIVERED and event.reference == message.reference
    assert event.event_id and event.event_id.startswith(f"{receipt.provider_id}:fax_completed:success")


def _signed(fields: dict[str, str], url: str = "https://example.org/cb", token: str = TOKEN) -> WebhookRequest:
    encoded = httpx.Request("POST", url, files={k: (None, v) for k, v in fields.items()}) if fields else None
    body = encoded.read() if encoded else b"--empty--\r\n"  # a multipart body without parts
    content_type = encoded.headers["content-type"] if encoded else "multipart/form-data; boundary=empty"
    text = url + "".join(k + v for k, v in sorted(fields.items()))
    digest = hmac.new(token.encode(), text.encode(), hashlib.sha1).hexdigest()
    return WebhookRequest(
        method="POST",
        url=url,
        body=body,
        received_at=datetime.now(UTC),
        headers={"content-type": content_type, "x-phaxio-signature": digest},
    )


FAX = {
    "id": 42,
    "status": "failure",
    "num_pages": 2,
    "tags": {"reference": "r-1"},
    "completed_at": "2021-11-04T16:28:30.000-05:00",
    "recipients": [
        {
            "phone_number": "+15558675309",
            "status": "failure",
            "error_type": "lineError",
            "error_id": 34,
            "error_message": "Phone number not operational",
        }
    ],
}


def _webhook_gateway(token: str = TOKEN) -> PhaxioGateway:
    return PhaxioGateway(_settings("https://api.phaxio.test", "https://example.org/cb", token=token))


def test_handmade_webhook_maps_recipient_error() -> None:
    [event] = _webhook_gateway().parse_webhook(_signed({"fax": json.dumps(FAX), "event_type": "fax_completed"}))
    assert (event.kind, event.error_class, event.error_code) == (EventKind.FAILED, "permanent", "34")
    assert event.occurred_at == datetime.fromisoformat("2021-11-04T16:28:30.000-05:00") and event.pages == 2


@pytest.mark.parametrize(
    "fields",
    [
        {"fax": "{not json", "event_type": "fax_completed"},
        {"event_type": "fax_completed"},
        {"fax": json.dumps({"status": "success"}), "event_type": "fax_completed"},
    ],
)
def test_malformed_signed_webhook_is_a_format_error(fields: dict[str, str]) -> None:
    with pytest.raises(WebhookFormatError):
        _webhook_gateway().parse_webhook(_signed(fields))


def test_truncated_multipart_is_a_format_error() -> None:
    request = _signed({"fax": json.dumps(FAX), "event_type": "fax_completed"})
    with pytest.raises(WebhookFormatError):
        _webhook_gateway().parse_webhook(_replace(request, body=request.body[:-20]))


def test_wrong_content_type_is_a_format_error() -> None:
    request = _signed({"fax": json.dumps(FAX), "event_type": "fax_completed"})
    with pytest.raises(WebhookFormatError):
        _webhook_gateway().parse_webhook(
            _replace(request, headers={**request.headers, "content-type": "application/json"})
        )


def test_retry_scheduled_is_deferred_and_transient() -> None:
    fax = {
        **FAX,
        "status": "inprogress",
        "recipients": [
            {
                **FAX["recipients"][0],
                "status": "willretry",  # type: ignore[index]
                "error_id": 17,
                "error_type": "lineError",
            }
        ],
    }
    fields = {
        "fax": json.dumps(fax),
        "event_type": "retry_scheduled",
        "retry_count": "1",
        "recipient_phone_number": "+15558675309",
    }
    [event] = _webhook_gateway().parse_webhook(_signed(fields))
    assert (event.kind, event.error_class, event.error_code) == (EventKind.DEFERRED, "transient", "17")


def _replace(request: WebhookRequest, **changes: object) -> WebhookRequest:
    values = {
        "method": request.method,
        "url": request.url,
        "headers": request.headers,
        "body": request.body,
        "received_at": request.received_at,
        **changes,
    }
    return WebhookRequest(**values)  # type: ignore[arg-type]


@pytest.fixture
def signed_document(receiver: tuple[Receiver, str]) -> Callable[[Any], WebhookRequest]:
    """A send webhook as Phaxio posts it: each field a form part (the fax as JSON), signed for our URL."""

    def sign(document: Any) -> WebhookRequest:
        items = document.items() if isinstance(document, dict) else [("fax", document)]
        return _signed({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in items}, url=receiver[1])

    return sign


@pytest.fixture
def signed_raw(receiver: tuple[Receiver, str]) -> Callable[[bytes], WebhookRequest]:
    """A raw body under a multipart content type, signed as a webhook without parameters would be."""
    signature = hmac.new(TOKEN.encode(), receiver[1].encode(), hashlib.sha1).hexdigest()
    headers = {"content-type": "multipart/form-data; boundary=contract", "x-phaxio-signature": signature}
    return lambda body: WebhookRequest(
        method="POST", url=receiver[1], headers=headers, body=body, received_at=datetime.now(UTC)
    )


@pytest.fixture
def webhook_sample() -> dict[str, Any]:
    return {"fax": FAX, "event_type": "fax_completed"}


@pytest.fixture
def other_event_sample() -> dict[str, Any]:
    return {"fax": FAX, "event_type": "fax_received"}  # a received fax's event on the same URL


@pytest.fixture
def forged_webhooks(receiver: tuple[Receiver, str]) -> list[WebhookRequest]:
    fields = {"fax": json.dumps(FAX), "event_type": "fax_completed"}
    request = _signed(fields, url=receiver[1])
    forged = request.body.replace(b'"status": "failure"', b'"status": "success"', 1)
    assert forged != request.body
    return [
        _replace(request, body=forged),
        _signed(fields, url=receiver[1], token="another-token"),
        _replace(request, headers={k: v for k, v in request.headers.items() if k != "x-phaxio-signature"}),
        _signed(fields, url="https://elsewhere.example/cb"),  # signed for a URL other than ours
    ]


class TestContract(HttpContract, WebhookContract):
    """The behaviour every gateway shares (contract.py), for Phaxio."""

    unknown_id = "999"


# -- tables ---------------------------------------------------------------------------------------

# https://www.phaxio.com/docs/errorMessages as published -- (error_type, id, message) -- and our routing
# decision for each. Written out by hand, not read from the module: changing the table must change this.
# The copy of the page that could be read ends its faxError list at id 12.
DOCUMENTED_ERRORS: list[tuple[str, int, str, str]] = [
    ("documentConversionError", 4, "There was a problem in converting and merging files ...", "permanent"),
    # the provider could not fetch a document URL it was given: ours to fix, not the number's
    ("documentConversionError", 54, "Could not access the url you provided.", "configuration"),
    ("documentConversionError", 55, "The string_data URL you provided is invalid", "permanent"),
    ("documentConversionError", 57, "There was a problem storing the file you provided.", "transient"),
    ("documentConversionError", 69, "There was a problem in converting and merging files ...", "permanent"),
    ("documentConversionError", 122, "User simulated Document Conversion Error", "permanent"),
    ("documentConversionError", 128, "Could not determine mimetype for file.", "permanent"),
    ("documentConversionError", 129, "Mimetype not supported.", "permanent"),
    ("documentConversionError", 130, "Mimetype not supported: application/xml", "permanent"),
    ("documentConversionError", 133, "Failed to normalize PDF document", "permanent"),
    ("lineError", 11, "The call dropped prematurely", "transient"),
    ("lineError", 15, "Congestion", "transient"),
    ("lineError", 16, "Ring Timeout", "transient"),
    ("lineError", 17, "Busy", "transient"),
    ("lineError", 19, "Immediate Hangup", "transient"),
    ("lineError", 30, "No answer from the fax machine.", "transient"),
    ("lineError", 32, "Incompatible destination", "permanent"),
    ("lineError", 34, "Phone number not operational", "permanent"),
    ("lineError", 43, "Problem establishing connection", "transient"),
    ("lineError", 49, "The Receiving Phone Number Is Not Operational", "permanent"),
    ("lineError", 50, "Call rejected", "permanent"),
    ("lineError", 52, "No route available", "permanent"),
    ("lineError", 73, "Number changed", "permanent"),
    ("lineError", 87, "No answer from the fax machine", "transient"),
    ("lineError", 88, "Network Error", "transient"),
    ("lineError", 100, "Problem with remote carrier", "transient"),
    ("lineError", 110, "Network error", "transient"),
    ("lineError", 112, "No answer", "transient"),
    ("lineError", 115, "The phone number has been changed", "permanent"),
    ("lineError", 121, "User requested simulated lineError", "transient"),
    ("faxError", 6, "There was an error communicating with the far side.", "transient"),
    ("faxError", 7, "Far end cannot receive at the size of image", "permanent"),
    ("faxError", 8, "No response after sending a page", "transient"),
    ("faxError", 10, "Disconnected after permitted retries", "transient"),
    ("faxError", 12, "Received no response to DCS or TCF", "transient"),
]


def _failed_with(error_type: str, error_id: int, message: str) -> WebhookRequest:
    recipient = {"phone_number": "+15558675309", "status": "failure", "error_type": error_type}
    recipient |= {"error_id": error_id, "error_message": message}
    return _signed({"fax": json.dumps({**FAX, "recipients": [recipient]}), "event_type": "fax_completed"})


@pytest.mark.parametrize(("error_type", "error_id", "message", "expected"), DOCUMENTED_ERRORS)
def test_every_documented_error_id_routes_as_decided(
    error_type: str, error_id: int, message: str, expected: str
) -> None:
    [event] = _webhook_gateway().parse_webhook(_failed_with(error_type, error_id, message))
    assert (event.kind, event.error_code, event.error_class) == (EventKind.FAILED, str(error_id), expected)
    assert event.detail == f"{error_type}: {message}"


def test_the_table_holds_phaxios_ids_and_no_others() -> None:
    assert set(phaxio.ERROR_CLASSES) == {error_id for _, error_id, _, _ in DOCUMENTED_ERRORS}


def test_code_69_is_phaxios_conversion_failure_not_sinchs_storage_failure() -> None:
    # Phaxio: 69 "There was a problem in converting and merging files to the output file format."
    # (https://www.phaxio.com/docs/errorMessages); Sinch's 69 is a storage problem (test_sinch.py).
    assert classify_error("documentConversionError", 69) == "permanent"


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("documentConversionError", "permanent"),
        ("lineError", "transient"),
        ("faxError", "transient"),
        ("fatalError", "transient"),
        ("generalError", "transient"),
        (None, "transient"),
    ],
)
def test_unlisted_ids_fall_back_to_the_type(error_type: str | None, expected: str) -> None:
    assert classify_error(error_type, 9999) == expected


# https://www.phaxio.com/docs/statuses: the fax's status and, more granular, the recipient's.
DOCUMENTED_STATUSES: list[tuple[str, EventKind]] = [
    ("queued", EventKind.QUEUED),
    ("pendingbatch", EventKind.QUEUED),
    ("inprogress", EventKind.SENDING),
    ("success", EventKind.DELIVERED),
    ("failure", EventKind.FAILED),
    ("partialsuccess", EventKind.FAILED),  # one recipient per fax: "some received it" cannot be ours
    ("ringing", EventKind.SENDING),  # recipient only
    ("callactive", EventKind.SENDING),  # recipient only
    ("willretry", EventKind.DEFERRED),  # recipient only
]


@pytest.mark.parametrize(("status", "kind"), DOCUMENTED_STATUSES)
def test_every_documented_status_maps_as_decided(status: str, kind: EventKind) -> None:
    fax = {"id": 1, "status": status, "recipients": [{"status": status}]}
    [event] = _webhook_gateway().parse_webhook(_signed({"fax": json.dumps(fax), "event_type": "fax_completed"}))
    assert event.kind is kind
    assert dict(DOCUMENTED_STATUSES) == phaxio.STATUS_KINDS


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [("transmitting_page", EventKind.SENDING), ("retry_scheduled", EventKind.DEFERRED)],
)
def test_inflight_webhooks_map_as_decided(event_type: str, kind: EventKind) -> None:
    # https://www.phaxio.com/docs/api/v2.1/faxes/send_webhooks: fax_completed takes the fax's status
    fax = {**FAX, "status": "inprogress", "recipients": [{"status": "inprogress"}]}
    [event] = _webhook_gateway().parse_webhook(_signed({"fax": json.dumps(fax), "event_type": event_type}))
    assert event.kind is kind
