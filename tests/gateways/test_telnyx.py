"""Telnyx fax gateway against the Telnyx emulator on a real localhost port, and the emulator against the SDK.

Servers: the emulator (``workers.sandbox.telnyx``), a document server for ``media_url`` and a webhook
sink that keeps every signed webhook byte for byte. Destinations are unique per test, so scripted
outcomes and oracle entries never leak between tests.
"""

from __future__ import annotations

import base64
import inspect
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nacl.signing
import pytest
import telnyx
import telnyx.types.fax
from fastapi import FastAPI, Response
from telnyx.types import Fax, FaxDelivered, FaxFailed

from dispatcher.domain.messages import EventKind, FaxMessage, Receipt, StatusEvent, WebhookRequest
from workers.gateways.errors import (
    ConfigurationFault,
    GatewayConfigError,
    Permanent,
    StatusLookupError,
    Transient,
    Unknown,
    WebhookFormatError,
)
from workers.gateways.fax import telnyx as telnyx_module
from workers.gateways.fax.telnyx import (
    FAILURE_CLASSES,
    TelnyxGateway,
    TelnyxSettings,
    encode_reference,
    failure_class,
)
from workers.gateways.registry import build_gateway
from workers.sandbox.core import SandboxState
from workers.sandbox.server import ThreadedServer, serve
from workers.sandbox.telnyx import count_pdf_pages, create_app

from .contract import HttpContract, ReplayContract, WebhookContract
from .receivers import RawSink, serving, wait_until

pytestmark = pytest.mark.timeout(60)

API_KEY = "KEY01234567890_sandbox"
CONNECTION_ID = "1684641123236054244"
FROM = "+13125790015"
_numbers = itertools.count(1)


def make_pdf(pages: int) -> bytes:
    """A small, well-formed PDF with ``pages`` blank A4 pages."""
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>"]
    objects += ["<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>"] * pages
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


PDF = make_pdf(2)


def new_number() -> str:
    return f"+4930{next(_numbers):08d}"


# -- servers ---------------------------------------------------------------------------------------


class Sink(RawSink):
    """Webhooks received, raw: (headers, body bytes)."""

    def for_fax(self, fax_id: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for h, b in self.received if json.loads(b)["data"]["payload"]["fax_id"] == fax_id]

    def wait_for_final(self, fax_id: str) -> list[tuple[dict[str, str], bytes]]:
        def final() -> list[tuple[dict[str, str], bytes]]:
            hooks = self.for_fax(fax_id)
            done = any(json.loads(b)["data"]["event_type"] in ("fax.delivered", "fax.failed") for _, b in hooks)
            return hooks if done else []

        result: list[tuple[dict[str, str], bytes]] = wait_until(final)
        return result


@pytest.fixture(scope="module")
def media_url() -> Iterator[str]:
    app = FastAPI()

    @app.get("/letter.pdf")
    def letter() -> Response:
        return Response(PDF, media_type="application/pdf")

    with serve(app) as server:
        yield f"{server.url}/letter.pdf"


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with serving(Sink(), "/webhooks/telnyx") as received:
        yield received


@pytest.fixture
def signing_key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey.generate()


@pytest.fixture
def state() -> SandboxState:
    return SandboxState(provider="telnyx", webhook_delay=0.01)


@pytest.fixture
def emulator(state: SandboxState, signing_key: nacl.signing.SigningKey) -> Iterator[ThreadedServer]:
    with serve(create_app(state, api_key=API_KEY, signing_key=signing_key)) as server:
        yield server


def public_key_b64(key: nacl.signing.SigningKey) -> str:
    return base64.b64encode(bytes(key.verify_key)).decode()


def telnyx_gateway(
    base_url: str,
    key: nacl.signing.SigningKey,
    *,
    read_timeout: float = 5.0,
    transport: httpx.BaseTransport | None = None,
    **settings: Any,
) -> TelnyxGateway:
    values: dict[str, Any] = {
        "api_key": API_KEY,
        "connection_id": CONNECTION_ID,
        "public_key": public_key_b64(key),
        "base_url": base_url,
        **settings,
    }
    timeout = httpx.Timeout(connect=2.0, read=read_timeout, write=5.0, pool=2.0)
    return TelnyxGateway(TelnyxSettings(**values), client=httpx.Client(timeout=timeout, transport=transport))


@pytest.fixture
def gateway(emulator: ThreadedServer, signing_key: nacl.signing.SigningKey, sink: Sink) -> Iterator[TelnyxGateway]:
    gw = telnyx_gateway(emulator.url, signing_key, webhook_url=sink.url)
    yield gw
    gw.close()


def fax(to: str, media_url: str | None, reference: str | None = None) -> FaxMessage:
    return FaxMessage(
        to=to,
        from_number=FROM,
        pdf=PDF,
        page_count=2,
        media_url=media_url,
        reference=reference or f"dlv-{to[1:]}-{time.monotonic_ns()}",
        from_name="Campaign Desk",
    )


def as_request(headers: dict[str, str], body: bytes, *, received_at: datetime | None = None) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="https://dispatch.example/webhooks/telnyx",
        headers={k.lower(): v for k, v in headers.items()},
        body=body,
        received_at=received_at or datetime.now(UTC),
    )


def signed(key: nacl.signing.SigningKey, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(stamp.encode() + b"|" + body).signature
    return {
        "Telnyx-Signature-Ed25519": base64.b64encode(signature).decode(),
        "Telnyx-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def fax_event(
    event_type: str, *, fax_id: str = "c62be5bc-9b13-4b6c-abda-34dd8b541287", reference: str = "dlv-42", **payload: Any
) -> bytes:
    """A webhook body in Telnyx's documented shape (developers.telnyx.com, types/fax_*.py)."""
    status = event_type.removeprefix("fax.").replace(".started", "")
    body = {
        "data": {
            "event_type": event_type,
            "id": "3320554f-6b74-4138-a74b-a1e2ec7eaf8b",
            "occurred_at": "2022-01-07T10:01:43.677850Z",
            "record_type": "event",
            "payload": {
                "connection_id": CONNECTION_ID,
                "direction": "outbound",
                "fax_id": fax_id,
                "from": FROM,
                "to": "+13129457420",
                "client_state": encode_reference(reference),
                "original_media_url": "https://example.org/letter.pdf",
                "status": status,
                "user_id": "bdaa1f9f-1018-4156-867d-6c4ac9f556eb",
                **payload,
            },
        },
        "meta": {"attempt": 1, "delivered_to": "https://dispatch.example/webhooks/telnyx"},
    }
    return json.dumps(body).encode()


# -- sending ---------------------------------------------------------------------------------------


def test_send_success_then_signed_webhooks_tell_the_story(
    gateway: TelnyxGateway, state: SandboxState, media_url: str, sink: Sink
) -> None:
    message = fax(new_number(), media_url)
    receipt = gateway.send(message)

    assert isinstance(receipt, Receipt)
    assert (receipt.provider, receipt.status) == ("telnyx", "queued")
    assert receipt.raw["data"]["client_state"] == encode_reference(message.reference)
    assert [(e.provider_id, e.reference) for e in state.oracle()] == [(receipt.provider_id, message.reference)]

    hooks = sink.wait_for_final(receipt.provider_id)
    events = [e for h, b in hooks for e in gateway.parse_webhook(as_request(h, b))]
    assert [e.kind for e in events] == [EventKind.QUEUED, EventKind.QUEUED, EventKind.SENDING, EventKind.DELIVERED]
    assert {e.reference for e in events} == {message.reference}
    assert len({e.event_id for e in events}) == 4
    delivered = events[-1]
    assert (delivered.pages, delivered.error_class, delivered.error_code) == (2, None, None)
    assert delivered.duration_secs and delivered.duration_secs > 0


@pytest.mark.parametrize(
    ("outcome", "reason", "no_fax_tone"),
    [
        ("busy", "user_busy", False),
        ("no_answer", "receiver_no_answer", False),
        ("no_fax_tone", "fax_initial_communication_timeout", True),
    ],
)
def test_failed_calls_are_accepted_then_fail_transiently(
    gateway: TelnyxGateway,
    state: SandboxState,
    media_url: str,
    sink: Sink,
    outcome: str,
    reason: str,
    no_fax_tone: bool,
) -> None:
    to = new_number()
    state.script(to, [outcome])
    receipt = gateway.send(fax(to, media_url))

    final = gateway.parse_webhook(as_request(*sink.wait_for_final(receipt.provider_id)[-1]))[0]
    assert (final.kind, final.error_code, final.error_class) == (EventKind.FAILED, reason, "transient")
    assert final.no_fax_tone is no_fax_tone  # the call was answered, but not by a fax machine
    status = gateway.fetch_status(receipt.provider_id)
    assert (status.kind, status.error_code, status.error_class) == (EventKind.FAILED, reason, "transient")
    assert status.no_fax_tone is no_fax_tone


def test_invalid_number_is_permanent_and_nothing_is_accepted(
    gateway: TelnyxGateway, state: SandboxState, media_url: str
) -> None:
    to = new_number()
    state.script(to, ["invalid_number"])
    with pytest.raises(Permanent) as caught:
        gateway.send(fax(to, media_url))
    assert caught.value.code == "10002"
    assert "Invalid phone number" in str(caught.value)
    assert state.oracle() == []


def test_number_not_in_e164_is_refused_by_validation(gateway: TelnyxGateway, media_url: str) -> None:
    with pytest.raises(Permanent) as caught:
        gateway.send(fax("0049301234567", media_url))
    assert caught.value.code == "10016"
    assert "(/to)" in str(caught.value)


def test_wrong_api_key_is_a_configuration_fault_naming_the_setting(
    emulator: ThreadedServer, signing_key: nacl.signing.SigningKey, media_url: str, state: SandboxState
) -> None:
    gw = telnyx_gateway(emulator.url, signing_key, api_key="KEY_wrong")
    with pytest.raises(ConfigurationFault) as caught:
        gw.send(fax(new_number(), media_url))
    assert caught.value.code == "10009"
    assert caught.value.setting == "DISPATCH_TELNYX_API_KEY"
    assert "DISPATCH_TELNYX_API_KEY" in str(caught.value) and "KEY_wrong" not in str(caught.value)
    assert state.oracle() == []


def test_a_refused_key_fails_the_credential_check_naming_the_setting(
    emulator: ThreadedServer, signing_key: nacl.signing.SigningKey
) -> None:
    """GET /v2/faxes?page[size]=1 (the SDK's faxes.list): the cheapest call the key must be good for."""
    with pytest.raises(ConfigurationFault) as caught:
        telnyx_gateway(emulator.url, signing_key, api_key="KEY_wrong").check_credentials()
    assert str(caught.value) == "DISPATCH_TELNYX_API_KEY was refused by telnyx (HTTP 401)"
    assert caught.value.setting == "DISPATCH_TELNYX_API_KEY"


def test_scripted_unauthorized_is_a_configuration_fault(
    gateway: TelnyxGateway, state: SandboxState, media_url: str
) -> None:
    to = new_number()
    state.script(to, ["unauthorized"])
    with pytest.raises(ConfigurationFault) as caught:
        gateway.send(fax(to, media_url))
    assert (caught.value.code, caught.value.setting) == ("10009", "DISPATCH_TELNYX_API_KEY")
    assert state.oracle() == []


def test_missing_media_url_is_refused_before_any_request(gateway: TelnyxGateway, state: SandboxState) -> None:
    with pytest.raises(ConfigurationFault, match="media_url") as caught:
        gateway.send(fax(new_number(), None))
    assert caught.value.setting == "DISPATCH_SECRET_KEY"
    assert state.oracle() == []


def test_a_media_url_telnyx_refuses_names_the_public_base_url(gateway: TelnyxGateway, state: SandboxState) -> None:
    """10003 on /media_url: the URL we built from DISPATCH_PUBLIC_BASE_URL is not one Telnyx can use."""
    with pytest.raises(ConfigurationFault) as caught:
        gateway.send(fax(new_number(), "ftp://dispatch.example/media/x.pdf"))
    assert (caught.value.code, caught.value.setting) == ("10003", "DISPATCH_PUBLIC_BASE_URL")
    assert state.oracle() == []


def test_unreachable_document_is_a_configuration_fault_naming_the_public_base_url(
    gateway: TelnyxGateway, media_url: str, sink: Sink
) -> None:
    """Telnyx fetches the PDF itself and reports file_download_failed: our URL, not the number, is wrong."""
    receipt = gateway.send(fax(new_number(), media_url.replace("letter.pdf", "missing.pdf")))
    hooks = sink.wait_for_final(receipt.provider_id)
    events = [e for h, b in hooks for e in gateway.parse_webhook(as_request(h, b))]
    assert [e.kind for e in events] == [EventKind.QUEUED, EventKind.FAILED]
    assert (events[-1].error_code, events[-1].error_class) == ("file_download_failed", "configuration")
    assert events[-1].setting == "DISPATCH_PUBLIC_BASE_URL"
    status = gateway.fetch_status(receipt.provider_id)
    assert (status.error_class, status.setting) == ("configuration", "DISPATCH_PUBLIC_BASE_URL")


def test_scripted_media_fetch_failure_arrives_as_file_download_failed(
    gateway: TelnyxGateway, state: SandboxState, media_url: str, sink: Sink
) -> None:
    to = new_number()
    state.script(to, ["media_fetch_failed"])
    receipt = gateway.send(fax(to, media_url))
    final = gateway.parse_webhook(as_request(*sink.wait_for_final(receipt.provider_id)[-1]))[0]
    assert (final.kind, final.error_code, final.error_class) == (
        EventKind.FAILED,
        "file_download_failed",
        "configuration",
    )


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        # 402's error code is illustrative: Telnyx's balance error code is not in the sources we checked.
        (
            402,
            {"errors": [{"code": "10038", "title": "Insufficient balance", "detail": "Top up."}]},
            Transient,
            "10038",
        ),
        (
            408,
            {"errors": [{"code": "10008", "title": "Request timeout", "detail": "The request timed out."}]},
            Transient,
            "10008",
        ),
        (
            403,
            {"errors": [{"code": "10010", "title": "Authorization failed", "detail": "No permission."}]},
            ConfigurationFault,
            "10010",
        ),
        (202, {"data": {"status": "queued"}}, Unknown, "no_id"),
    ],
)
def test_answers_the_emulator_cannot_script(
    signing_key: nacl.signing.SigningKey, status: int, body: Any, expected: type[Exception], code: str
) -> None:
    """Faked at the transport (httpx.MockTransport): 402 balance, 408, 403, 503, 504, 2xx without an id."""

    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body) if isinstance(body, dict) else httpx.Response(status, text=body)

    gw = telnyx_gateway("https://api.telnyx.test", signing_key, transport=httpx.MockTransport(answer))
    with pytest.raises(expected) as caught:
        gw.send(fax(new_number(), "https://docs.example/letter.pdf"))
    assert getattr(caught.value, "code", None) == code
    if status == 403:
        assert "DISPATCH_TELNYX_API_KEY" in str(caught.value)


# -- status lookups --------------------------------------------------------------------------------


def test_fetch_status_follows_the_fax(gateway: TelnyxGateway, media_url: str) -> None:
    message = fax(new_number(), media_url)
    receipt = gateway.send(message)
    final = wait_until(lambda: (s := gateway.fetch_status(receipt.provider_id)).kind is EventKind.DELIVERED and s)
    assert isinstance(final, StatusEvent)
    assert (final.provider_id, final.reference, final.error_class) == (receipt.provider_id, message.reference, None)


def test_find_by_reference_pages_through_the_list(
    emulator: ThreadedServer, signing_key: nacl.signing.SigningKey, media_url: str
) -> None:
    gw = telnyx_gateway(emulator.url, signing_key, page_size=1)
    messages = [fax(new_number(), media_url) for _ in range(3)]
    receipts = [gw.send(m) for m in messages]
    # Newest first: the first fax sits on the last page.
    found = gw.find_by_reference(messages[0].reference)
    assert found is not None and found.provider_id == receipts[0].provider_id
    assert gw.find_by_reference("never-sent") is None


def test_find_by_reference_refuses_to_say_never_when_the_listing_is_too_long(
    emulator: ThreadedServer, signing_key: nacl.signing.SigningKey, media_url: str
) -> None:
    gw = telnyx_gateway(emulator.url, signing_key, page_size=1, reconcile_max_pages=2)
    for _ in range(3):
        gw.send(fax(new_number(), media_url))
    with pytest.raises(StatusLookupError, match="pages"):
        gw.find_by_reference("never-sent")


def test_find_by_reference_filters_by_destination_and_time(gateway: TelnyxGateway, media_url: str) -> None:
    message = fax(new_number(), media_url)
    gateway.send(message)
    assert gateway.find_by_reference(message.reference, to=message.to) is not None
    assert gateway.find_by_reference(message.reference, to=new_number()) is None
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert gateway.find_by_reference(message.reference, sent_after=later) is None


# -- webhooks --------------------------------------------------------------------------------------


@pytest.fixture
def offline_gateway(signing_key: nacl.signing.SigningKey) -> TelnyxGateway:
    return telnyx_gateway("http://127.0.0.1:9", signing_key)


def test_webhook_verifies_and_decodes(offline_gateway: TelnyxGateway, signing_key: nacl.signing.SigningKey) -> None:
    body = fax_event("fax.delivered", page_count=3, call_duration_secs=79)
    [event] = offline_gateway.parse_webhook(as_request(signed(signing_key, body), body))
    assert event.kind is EventKind.DELIVERED
    assert (event.provider_id, event.reference, event.pages, event.duration_secs) == (
        "c62be5bc-9b13-4b6c-abda-34dd8b541287",
        "dlv-42",
        3,
        79.0,
    )
    assert event.event_id == "3320554f-6b74-4138-a74b-a1e2ec7eaf8b"
    assert event.occurred_at == datetime(2022, 1, 7, 10, 1, 43, 677850, tzinfo=UTC)


def test_an_old_webhook_received_in_time_still_verifies(
    offline_gateway: TelnyxGateway, signing_key: nacl.signing.SigningKey
) -> None:
    body = fax_event("fax.delivered")
    signed_at = datetime(2024, 5, 1, tzinfo=UTC)
    headers = signed(signing_key, body, timestamp=int(signed_at.timestamp()))
    received = as_request(headers, body, received_at=signed_at + timedelta(seconds=299))
    assert offline_gateway.parse_webhook(received)[0].kind is EventKind.DELIVERED


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"data": "x"}',
        b'{"meta": {}}',
        json.dumps({"data": {"event_type": "fax.failed", "payload": {}}}).encode(),
        fax_event("fax.queued").replace(b"2022-01-07T10:01:43.677850Z", b"yesterday"),
    ],
)
def test_malformed_bodies_are_format_errors(
    offline_gateway: TelnyxGateway, signing_key: nacl.signing.SigningKey, body: bytes
) -> None:
    with pytest.raises(WebhookFormatError):
        offline_gateway.parse_webhook(as_request(signed(signing_key, body), body))


def test_duplicate_and_out_of_order_webhooks_all_parse(
    offline_gateway: TelnyxGateway, signing_key: nacl.signing.SigningKey
) -> None:
    bodies = [
        fax_event("fax.delivered", page_count=1),
        fax_event("fax.queued"),
        fax_event("fax.delivered", page_count=1),
        fax_event("fax.sending.started"),
    ]
    kinds = [offline_gateway.parse_webhook(as_request(signed(signing_key, b), b))[0].kind for b in bodies]
    assert kinds == [EventKind.DELIVERED, EventKind.QUEUED, EventKind.DELIVERED, EventKind.SENDING]


@pytest.fixture
def make_gateway(signing_key: nacl.signing.SigningKey, sink: Sink) -> Iterator[Callable[..., TelnyxGateway]]:
    made: list[TelnyxGateway] = []

    def make(address: str, *, read_timeout: float = 5.0, transport: httpx.BaseTransport | None = None) -> TelnyxGateway:
        made.append(
            telnyx_gateway(address, signing_key, read_timeout=read_timeout, transport=transport, webhook_url=sink.url)
        )
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()


@pytest.fixture
def new_message(media_url: str) -> Callable[[], FaxMessage]:
    return lambda: fax(new_number(), media_url)


@pytest.fixture
def signed_document(signing_key: nacl.signing.SigningKey) -> Callable[[Any], WebhookRequest]:
    def sign(document: Any) -> WebhookRequest:
        body = json.dumps(document).encode()
        return as_request(signed(signing_key, body), body)

    return sign


@pytest.fixture
def signed_raw(signing_key: nacl.signing.SigningKey) -> Callable[[bytes], WebhookRequest]:
    return lambda body: as_request(signed(signing_key, body), body)


@pytest.fixture
def webhook_sample() -> Any:
    failed = fax_event(
        "fax.failed", failure_reason="user_busy", internal_failure_reason="busy", page_count=0, call_duration_secs=12
    )
    return json.loads(failed)


@pytest.fixture
def other_event_sample() -> Any:
    return json.loads(fax_event("fax.receiving.started"))


@pytest.fixture
def forged_webhooks(signing_key: nacl.signing.SigningKey) -> list[WebhookRequest]:
    body = fax_event("fax.delivered")
    return [
        as_request(signed(signing_key, body), body.replace(b'"fax.delivered"', b'"fax.failed"')),
        as_request(signed(nacl.signing.SigningKey.generate(), body), body),
        as_request({}, body),
        as_request({"Telnyx-Timestamp": "1700000000"}, body),
        as_request({"Telnyx-Signature-Ed25519": "AAAA", "Telnyx-Timestamp": "soon"}, body),
        as_request({"Telnyx-Signature-Ed25519": "not base64!", "Telnyx-Timestamp": "1"}, body),
    ]


@pytest.fixture
def stale_webhooks(signing_key: nacl.signing.SigningKey) -> list[WebhookRequest]:
    body = fax_event("fax.delivered")
    return [
        as_request(signed(signing_key, body, timestamp=int(time.time()) + skew), body) for skew in (-301, 301, -3600)
    ]


class TestContract(HttpContract, WebhookContract, ReplayContract):
    """The behaviour every gateway shares (contract.py), for Telnyx."""

    unknown_id = "00000000-0000-0000-0000-000000000000"


# The routing decision for every documented failure_reason, pinned here on purpose: changing the module
# table must change this test too.
EXPECTED_FAILURE_CLASSES = {
    "user_busy": "transient",
    "receiver_no_answer": "transient",
    "receiver_no_response": "transient",
    "receiver_decline": "transient",
    "receiver_call_dropped": "transient",
    "sender_call_dropped": "transient",
    "carrier_lost": "transient",
    "receiver_recovery_on_timer_expire": "transient",
    "receiver_communication_error": "transient",
    "sender_communication_error": "transient",
    "destination_unreachable": "transient",
    "fax_initial_communication_timeout": "transient",
    "fax_signaling_error": "transient",
    "invalid_ecm_response_from_receiver": "transient",
    "service_unavailable": "transient",
    "user_channel_limit_exceeded": "transient",
    "outbound_profile_channel_limit_exceeded": "transient",
    "connection_channel_limit_exceeded": "transient",
    "outbound_profile_daily_spend_limit_exceeded": "transient",
    "file_download_failed": "configuration",  # our media URL (DISPATCH_PUBLIC_BASE_URL), not the number
    "media_processing_exception": "transient",
    "receiver_invalid_number_format": "permanent",
    "receiver_unallocated_number": "permanent",
    "receiver_incompatible_destination": "permanent",
    "destination_invalid": "permanent",
    "destination_not_in_service_plan": "permanent",
    "destination_not_in_countries_whitelist": "permanent",
    "unverified_destination_not_allowed": "permanent",
    "file_format_invalid": "permanent",
    "file_size_limit_exceeded": "permanent",
    "page_count_limit_exceeded": "permanent",
    "account_disabled": "configuration",
    "no_outbound_profile": "configuration",
    "unverified_origination_number": "permanent",
    "sender_canceled": "permanent",
}


@pytest.mark.parametrize(("reason", "expected"), sorted(EXPECTED_FAILURE_CLASSES.items()))
def test_failure_reason_table(
    offline_gateway: TelnyxGateway, signing_key: nacl.signing.SigningKey, reason: str, expected: str
) -> None:
    body = fax_event("fax.failed", failure_reason=reason)
    [event] = offline_gateway.parse_webhook(as_request(signed(signing_key, body), body))
    assert (event.kind, event.error_code, event.error_class) == (EventKind.FAILED, reason, expected)


def test_failure_table_covers_every_reason_the_sdk_documents() -> None:
    # The list lives in the docstring under ``Fax.failure_reason`` in telnyx/types/fax.py.
    source = inspect.getsource(telnyx.types.fax)
    docstring = source.split("failure_reason: Optional[str] = None", 1)[1].split('"""')[1]
    documented = set(re.findall(r"`([a-z_]+)`", docstring)) - {"internal_failure_reason"}
    assert documented, "the SDK no longer documents failure reasons on Fax.failure_reason"
    assert documented <= set(FAILURE_CLASSES)
    assert set(FAILURE_CLASSES) == set(EXPECTED_FAILURE_CLASSES)
    assert failure_class("a_reason_added_next_year") == "transient"


# The outbound values of ``Fax.status`` (telnyx-python types/fax.py) and the fax webhook event types
# (types/fax_{queued,media_processed,sending_started,delivered,failed}.py), with our kinds. Inbound
# statuses (initiated, receiving, media.processing, received) are no delivery of ours.
DOCUMENTED_STATUSES: list[tuple[str, EventKind]] = [
    ("queued", EventKind.QUEUED),
    ("media.processed", EventKind.QUEUED),  # the document was fetched and converted; not dialled yet
    ("originated", EventKind.SENDING),
    ("sending", EventKind.SENDING),
    ("delivered", EventKind.DELIVERED),
    ("failed", EventKind.FAILED),
]
DOCUMENTED_EVENTS: list[tuple[str, EventKind]] = [
    ("fax.queued", EventKind.QUEUED),
    ("fax.media.processed", EventKind.QUEUED),
    ("fax.sending.started", EventKind.SENDING),
    ("fax.delivered", EventKind.DELIVERED),
    ("fax.failed", EventKind.FAILED),
]


def _fetched(signing_key: nacl.signing.SigningKey, status: str) -> StatusEvent:
    fax_object = {"id": "c62be5bc-9b13-4b6c-abda-34dd8b541287", "status": status, "direction": "outbound"}
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json={"data": fax_object}))
    return telnyx_gateway("https://api.telnyx.test", signing_key, transport=transport).fetch_status("c62be5bc")


@pytest.mark.parametrize(("status", "kind"), DOCUMENTED_STATUSES)
def test_every_outbound_status_maps_as_decided(
    signing_key: nacl.signing.SigningKey, status: str, kind: EventKind
) -> None:
    assert _fetched(signing_key, status).kind is kind


@pytest.mark.parametrize("status", ["initiated", "receiving", "media.processing", "received"])
def test_inbound_statuses_are_no_delivery_of_ours(signing_key: nacl.signing.SigningKey, status: str) -> None:
    with pytest.raises(StatusLookupError):
        _fetched(signing_key, status)


@pytest.mark.parametrize(("event_type", "kind"), DOCUMENTED_EVENTS)
def test_every_fax_event_maps_as_decided(
    offline_gateway: TelnyxGateway, signing_key: nacl.signing.SigningKey, event_type: str, kind: EventKind
) -> None:
    body = fax_event(event_type)
    assert [e.kind for e in offline_gateway.parse_webhook(as_request(signed(signing_key, body), body))] == [kind]


def test_the_status_and_event_tables_hold_the_documented_values() -> None:
    assert dict(DOCUMENTED_STATUSES) == telnyx_module.STATUS_KINDS
    assert dict(DOCUMENTED_EVENTS) == telnyx_module.EVENT_KINDS


# -- settings ----------------------------------------------------------------------------------------


def test_a_malformed_public_key_fails_at_start_up_naming_the_variable() -> None:
    with pytest.raises(GatewayConfigError, match="DISPATCH_TELNYX_PUBLIC_KEY"):
        build_gateway("telnyx", api_key="KEY", connection_id="1", public_key="bm90IGEga2V5")


def test_build_gateway_from_settings(signing_key: nacl.signing.SigningKey) -> None:
    gw = build_gateway("telnyx", api_key="KEY", connection_id="1", public_key=public_key_b64(signing_key))
    assert isinstance(gw, TelnyxGateway)
    assert (gw.provider, gw.channel, gw.config.base_url, gw.config.webhook_tolerance) == (
        "telnyx",
        "fax",
        "https://api.telnyx.com",
        300,
    )


def test_emulator_counts_pdf_pages() -> None:
    assert [count_pdf_pages(make_pdf(n)) for n in (1, 2, 5)] == [1, 2, 5]


# -- the official SDK drives the emulator -----------------------------------------------------------


@pytest.fixture
def sdk(emulator: ThreadedServer, signing_key: nacl.signing.SigningKey) -> Iterator[telnyx.Telnyx]:
    # Strict validation: any answer that does not fit the SDK's models raises APIResponseValidationError.
    client = telnyx.Telnyx(
        api_key=API_KEY,
        public_key=public_key_b64(signing_key),
        base_url=f"{emulator.url}/v2",
        max_retries=0,
        timeout=5.0,
        _strict_response_validation=True,
    )
    yield client
    client.close()


def test_sdk_creates_retrieves_and_lists_faxes(
    sdk: telnyx.Telnyx, media_url: str, sink: Sink, state: SandboxState
) -> None:
    to = new_number()
    created = sdk.faxes.create(
        connection_id=CONNECTION_ID,
        from_=FROM,
        to=to,
        media_url=media_url,
        client_state=encode_reference("dlv-sdk"),
        quality="high",
        webhook_url=sink.url,
    )
    assert isinstance(created.data, Fax)
    fax_id = created.data.id
    assert fax_id and created.data.status == "queued"
    assert (created.data.to, created.data.from_, created.data.connection_id) == (to, FROM, CONNECTION_ID)
    assert (created.data.direction, created.data.record_type, created.data.quality) == ("outbound", "fax", "high")
    assert isinstance(created.data.created_at, datetime)
    assert state.sends_per_reference() == {"dlv-sdk": 1}

    retrieved = sdk.faxes.retrieve(fax_id)
    assert isinstance(retrieved.data, Fax) and retrieved.data.id == fax_id

    for _ in range(2):
        sdk.faxes.create(connection_id=CONNECTION_ID, from_=FROM, to=to, media_url=media_url)
    listed = sdk.faxes.list(filter={"to": {"eq": to}, "direction": {"eq": "outbound"}}, page_size=1)
    ids = [f.id for f in listed]  # auto-paging follows meta.page_number / meta.total_pages
    assert len(ids) == 3 and fax_id in ids
    assert all(isinstance(f, Fax) for f in listed.data)


def test_sdk_maps_emulator_errors(sdk: telnyx.Telnyx, media_url: str, emulator: ThreadedServer) -> None:
    with pytest.raises(telnyx.UnprocessableEntityError) as caught:
        sdk.faxes.create(connection_id=CONNECTION_ID, from_=FROM, to="12345", media_url=media_url)
    assert caught.value.body["errors"][0]["code"] == "10016"  # type: ignore[index]

    wrong = telnyx.Telnyx(api_key="KEY_wrong", base_url=f"{emulator.url}/v2", max_retries=0, timeout=5.0)
    with pytest.raises(telnyx.AuthenticationError):
        wrong.faxes.retrieve("00000000-0000-0000-0000-000000000000")
    wrong.close()
    with pytest.raises(telnyx.NotFoundError):
        sdk.faxes.retrieve("00000000-0000-0000-0000-000000000000")


def test_sdk_verifies_emulator_webhooks(
    sdk: telnyx.Telnyx, gateway: TelnyxGateway, media_url: str, sink: Sink, state: SandboxState
) -> None:
    to = new_number()
    state.script(to, ["busy"])
    failed = gateway.send(fax(to, media_url))
    delivered = gateway.send(fax(new_number(), media_url))
    for receipt, model in ((failed, FaxFailed), (delivered, FaxDelivered)):
        headers, body = sink.wait_for_final(receipt.provider_id)[-1]
        event = sdk.webhooks.unwrap(body.decode(), headers=headers)  # Ed25519 with the client's public_key
        assert isinstance(event, model)
        assert event.data is not None and event.data.payload is not None
        assert event.data.payload.fax_id == receipt.provider_id
    with pytest.raises(ValueError, match=r"[Ss]ignature"):
        sdk.webhooks.unwrap(body.decode().replace("delivered", "failed"), headers=headers)
