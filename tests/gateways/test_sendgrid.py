"""SendGrid gateway against the SendGrid emulator on a real localhost port; the emulator against the SDK.

The official ``sendgrid`` package drives the emulator (mail send, Email Activity) and its ``EventWebhook``
helper verifies the emulator's signed webhooks, so both sides are held to SendGrid's real shapes.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from python_http_client.exceptions import BadRequestsError, UnauthorizedError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook, EventWebhookHeader
from sendgrid.helpers.mail import CustomArg, Mail

from dispatcher.domain.messages import Attachment, EmailMessage, EventKind, WebhookRequest
from workers.gateways.email.sendgrid import (
    BOUNCE_CLASSES,
    EVENT_KINDS,
    SendGridGateway,
    SendGridSettings,
    message_id_of,
)
from workers.gateways.errors import (
    ConfigurationFault,
    GatewayConfigError,
    Permanent,
    StatusLookupError,
    WebhookAuthError,
    WebhookFormatError,
)
from workers.gateways.registry import build_gateway
from workers.sandbox.core import SandboxState
from workers.sandbox.sendgrid import create_app, public_key_b64, sign
from workers.sandbox.server import ThreadedServer, serve

from .contract import HttpContract, ReplayContract, WebhookContract
from .receivers import RawSink, serving, wait_until

pytestmark = pytest.mark.timeout(60)

API_KEY = "SG.sandbox-key.0123456789"
_numbers = itertools.count(1)


def new_address() -> str:
    return f"official{next(_numbers)}-{time.monotonic_ns()}@ministry.example"


class Sink(RawSink):
    """Webhooks received, raw: (headers, body bytes)."""

    def batches_for(self, address: str, *, final: bool = True) -> list[tuple[dict[str, str], bytes]]:
        """Every batch mentioning ``address``, once one of them carries a final event."""

        def found() -> list[tuple[dict[str, str], bytes]]:
            with self.lock:
                hits = [(h, b) for h, b in self.received if any(e["email"] == address for e in json.loads(b))]
            done = any(e["event"] in ("delivered", "bounce") for _, b in hits for e in json.loads(b))
            return hits if done or not final else []

        result: list[tuple[dict[str, str], bytes]] = wait_until(found)
        return result


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with serving(Sink(), "/webhooks/sendgrid") as received:
        yield received


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def state() -> SandboxState:
    return SandboxState(provider="sendgrid", webhook_delay=0.01)


@pytest.fixture
def app(state: SandboxState, signing_key: ec.EllipticCurvePrivateKey, sink: Sink) -> FastAPI:
    return create_app(state, api_key=API_KEY, signing_key=signing_key, webhook_url=sink.url)


@pytest.fixture
def emulator(app: FastAPI) -> Iterator[ThreadedServer]:
    with serve(app) as server:
        yield server


def sendgrid_gateway(
    base_url: str,
    key: ec.EllipticCurvePrivateKey | None = None,
    *,
    read_timeout: float = 5.0,
    transport: httpx.BaseTransport | None = None,
    **settings: Any,
) -> SendGridGateway:
    values: dict[str, Any] = {"api_key": API_KEY, "base_url": base_url, **settings}
    if key is not None:
        values.setdefault("webhook_public_key", public_key_b64(key))
    timeout = httpx.Timeout(connect=2.0, read=read_timeout, write=5.0, pool=2.0)
    return SendGridGateway(SendGridSettings(**values), client=httpx.Client(timeout=timeout, transport=transport))


@pytest.fixture
def gateway(emulator: ThreadedServer, signing_key: ec.EllipticCurvePrivateKey) -> Iterator[SendGridGateway]:
    gw = sendgrid_gateway(emulator.url, signing_key)
    yield gw
    gw.close()


@pytest.fixture
def offline(signing_key: ec.EllipticCurvePrivateKey) -> SendGridGateway:
    return sendgrid_gateway("http://127.0.0.1:9", signing_key)


def letter(to: str | None = None, *, cc: tuple[str, ...] = ()) -> EmailMessage:
    reference = f"dlv-{time.monotonic_ns()}"
    return EmailMessage(
        sender="Campaign Desk <desk@advocacy.example>",
        to=[to or new_address()],
        cc=cc,
        subject="Urgent: release of detained journalists",
        text="Dear Minister,\n...",
        html="<p>Dear Minister,</p>",
        reference=reference,
        message_id=f"<{reference}@advocacy.example>",
        reply_to="replies@advocacy.example",
        attachments=[Attachment(filename="letter.pdf", content=b"%PDF-1.4 letter")],
    )


def as_request(headers: dict[str, str], body: bytes, *, received_at: datetime | None = None) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="https://dispatch.example/webhooks/sendgrid",
        headers={k.lower(): v for k, v in headers.items()},
        body=body,
        received_at=received_at or datetime.now(UTC),
    )


def event(name: str, **fields: Any) -> dict[str, Any]:
    """One event in SendGrid's shape (docs and django-anymail's captured payloads)."""
    return {
        "email": "recipient@example.com",
        "timestamp": 1461095250,
        "event": name,
        "smtp-id": "<wrfRRvF7Q0GgwUo2CvDmEA@ismtpd0006p1sjc2.sendgrid.net>",
        "sg_event_id": "lC0Rc-FuQmKbnxCWxX1jRQ",
        "sg_message_id": "Lli-03HcQ5-JLybO9fXsJg.filter0077p1las1.21536.5717FC482.0",
        "reference": "dlv-42",
        **fields,
    }


def batch(*events: dict[str, Any]) -> bytes:
    return json.dumps(list(events)).encode()


# -- sending ---------------------------------------------------------------------------------------


def test_send_success_and_signed_webhooks_tell_the_story(
    gateway: SendGridGateway, state: SandboxState, sink: Sink, app: FastAPI
) -> None:
    message = letter(cc=("copy@supporters.example",))
    receipt = gateway.send(message)
    assert (receipt.provider, receipt.status) == ("sendgrid", "processed")
    assert [(e.provider_id, e.reference) for e in state.oracle()] == [(receipt.provider_id, message.reference)]
    sent = app.state.emulator.requests[receipt.provider_id]
    assert sent["personalizations"] == [
        {
            "to": [{"email": message.to[0]}],
            "cc": [{"email": "copy@supporters.example"}],
            "custom_args": {"reference": message.reference},
        }
    ]
    assert sent["headers"]["Message-ID"] == message.message_id
    assert [c["type"] for c in sent["content"]] == ["text/plain", "text/html"]
    assert sent["from"] == {"email": "desk@advocacy.example", "name": "Campaign Desk"}

    events = [e for h, b in sink.batches_for(message.to[0]) for e in gateway.parse_webhook(as_request(h, b))]
    mine = [e for e in events if e.raw["email"] == message.to[0]]
    assert [e.kind for e in mine] == [EventKind.QUEUED, EventKind.DELIVERED]
    assert {(e.provider_id, e.reference) for e in mine} == {(receipt.provider_id, message.reference)}


def test_bounce_outcome_is_a_permanent_bounce(gateway: SendGridGateway, state: SandboxState, sink: Sink) -> None:
    message = letter()
    state.script(message.to[0], ["bounce"])
    receipt = gateway.send(message)
    headers, body = sink.batches_for(message.to[0])[-1]
    [bounced] = gateway.parse_webhook(as_request(headers, body))
    assert (bounced.kind, bounced.error_class, bounced.error_code, bounced.provider_id) == (
        EventKind.BOUNCED,
        "permanent",
        "bounce",
        receipt.provider_id,
    )
    status = gateway.fetch_status(receipt.provider_id)
    assert (status.kind, status.error_class, status.error_code) == (EventKind.BOUNCED, "permanent", "bounced")


def test_invalid_recipient_is_permanent_with_the_field(gateway: SendGridGateway, state: SandboxState) -> None:
    message = letter()
    state.script(message.to[0], ["invalid_number"])
    with pytest.raises(Permanent) as caught:
        gateway.send(message)
    assert caught.value.code == "personalizations.0.to.0.email"
    assert "Does not contain a valid address" in str(caught.value)
    assert state.oracle() == []


def test_malformed_address_is_refused_by_validation(gateway: SendGridGateway) -> None:
    with pytest.raises(Permanent) as caught:
        gateway.send(letter("not-an-address"))
    assert caught.value.code == "personalizations.0.to.0.email"


def test_wrong_key_is_a_configuration_fault_naming_the_setting(emulator: ThreadedServer, state: SandboxState) -> None:
    gw = sendgrid_gateway(emulator.url, api_key="SG.wrong")
    with pytest.raises(ConfigurationFault, match="DISPATCH_SENDGRID_API_KEY") as caught:
        gw.send(letter())
    assert (caught.value.code, caught.value.setting) == ("401", "DISPATCH_SENDGRID_API_KEY")
    assert state.oracle() == []


def test_a_refused_key_fails_the_credential_check_naming_the_setting(emulator: ThreadedServer) -> None:
    """GET /v3/scopes: the scopes of the key itself; it must hold mail.send."""
    with pytest.raises(ConfigurationFault) as caught:
        sendgrid_gateway(emulator.url, api_key="SG.wrong").check_credentials()
    assert str(caught.value) == "DISPATCH_SENDGRID_API_KEY was refused by sendgrid (HTTP 401)"


def test_a_key_without_mail_send_fails_the_credential_check() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v3/scopes"
        return httpx.Response(200, json={"scopes": ["messages.read", "stats.read"]})

    gw = sendgrid_gateway("https://api.sendgrid.test", transport=httpx.MockTransport(answer))
    with pytest.raises(ConfigurationFault) as caught:
        gw.check_credentials()
    assert str(caught.value) == "DISPATCH_SENDGRID_API_KEY was refused by sendgrid (the key has no mail.send scope)"


def test_scripted_unauthorized_is_a_configuration_fault(gateway: SendGridGateway, state: SandboxState) -> None:
    to = new_address()
    state.script(to, ["unauthorized"])
    with pytest.raises(ConfigurationFault) as caught:
        gateway.send(letter(to))
    assert caught.value.code == "401"
    assert state.oracle() == []


# -- Email Activity lookups ------------------------------------------------------------------------


def test_fetch_status_follows_the_message_to_delivered(gateway: SendGridGateway) -> None:
    receipt = gateway.send(letter())
    final = wait_until(lambda: (s := gateway.fetch_status(receipt.provider_id)).kind is EventKind.DELIVERED and s)
    assert final.provider_id == receipt.provider_id


def test_lookups_without_the_paid_add_on_are_lookup_errors(
    state: SandboxState, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    app = create_app(state, api_key=API_KEY, signing_key=signing_key, activity_api=False)
    with serve(app) as server:
        gw = sendgrid_gateway(server.url)
        receipt = gw.send(letter())
        with pytest.raises(StatusLookupError, match="403"):
            gw.fetch_status(receipt.provider_id)
        with pytest.raises(StatusLookupError):
            gw.find_by_reference(state.oracle()[0].reference or "")


# -- the Signed Event Webhook ----------------------------------------------------------------------


def test_captured_events_map_and_carry_our_reference(
    offline: SendGridGateway, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    body = batch(
        event("processed"),
        event("delivered", response="250 2.0.0 OK"),
        event("open", useragent="Mozilla"),
        event("bounce", type="blocked", reason="421 try later"),
    )
    events = offline.parse_webhook(as_request(sign(signing_key, body), body))
    assert [(e.kind, e.error_class) for e in events] == [
        (EventKind.QUEUED, None),
        (EventKind.DELIVERED, None),
        (EventKind.BOUNCED, "transient"),
    ]
    assert {(e.provider_id, e.reference) for e in events} == {("Lli-03HcQ5-JLybO9fXsJg", "dlv-42")}
    assert events[0].occurred_at == datetime.fromtimestamp(1461095250, tz=UTC)
    assert events[2].detail == "421 try later"


def test_an_old_webhook_received_in_time_still_verifies(
    offline: SendGridGateway, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    body, signed_at = batch(event("delivered")), datetime(2024, 5, 1, tzinfo=UTC)
    headers = sign(signing_key, body, int(signed_at.timestamp()))
    received = as_request(headers, body, received_at=signed_at + timedelta(seconds=299))
    assert offline.parse_webhook(received)[0].kind is EventKind.DELIVERED


def test_webhooks_are_refused_without_a_configured_key() -> None:
    gw = sendgrid_gateway("http://127.0.0.1:9")
    with pytest.raises(WebhookAuthError, match="DISPATCH_SENDGRID_WEBHOOK_PUBLIC_KEY"):
        gw.parse_webhook(as_request({}, batch(event("delivered"))))


@pytest.mark.parametrize(
    "body",
    [
        b'{"event": "delivered"}',
        b"[1]",
        batch({"email": "x"}),
        batch(event("delivered", timestamp="yesterday")),
        batch({k: v for k, v in event("delivered").items() if k != "sg_message_id"}),
    ],
)
def test_malformed_bodies_are_format_errors(
    offline: SendGridGateway, signing_key: ec.EllipticCurvePrivateKey, body: bytes
) -> None:
    with pytest.raises(WebhookFormatError):
        offline.parse_webhook(as_request(sign(signing_key, body), body))


@pytest.fixture
def make_gateway(signing_key: ec.EllipticCurvePrivateKey) -> Iterator[Callable[..., SendGridGateway]]:
    made: list[SendGridGateway] = []

    def make(
        address: str, *, read_timeout: float = 5.0, transport: httpx.BaseTransport | None = None
    ) -> SendGridGateway:
        made.append(sendgrid_gateway(address, signing_key, read_timeout=read_timeout, transport=transport))
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()


@pytest.fixture
def new_message() -> Callable[[], EmailMessage]:
    return letter


@pytest.fixture
def signed_document(signing_key: ec.EllipticCurvePrivateKey) -> Callable[[Any], WebhookRequest]:
    def sign_document(document: Any) -> WebhookRequest:
        body = json.dumps(document).encode()
        return as_request(sign(signing_key, body), body)

    return sign_document


@pytest.fixture
def signed_raw(signing_key: ec.EllipticCurvePrivateKey) -> Callable[[bytes], WebhookRequest]:
    return lambda body: as_request(sign(signing_key, body), body)


@pytest.fixture
def webhook_sample() -> list[dict[str, Any]]:
    return [event("processed"), event("delivered", response="250 2.0.0 OK"), event("bounce", type="bounce")]


@pytest.fixture
def other_event_sample() -> list[dict[str, Any]]:
    return [event("open", useragent="Mozilla"), event("click", url="https://example.org")]


@pytest.fixture
def forged_webhooks(signing_key: ec.EllipticCurvePrivateKey) -> list[WebhookRequest]:
    bounce, delivered = batch(event("bounce", type="bounce")), batch(event("delivered"))
    return [
        as_request(sign(signing_key, bounce), bounce.replace(b"bounce", b"delivered")),
        as_request(sign(ec.generate_private_key(ec.SECP256R1()), delivered), delivered),
        as_request({}, delivered),
        as_request({EventWebhookHeader.SIGNATURE: "AAAA"}, delivered),
        as_request({EventWebhookHeader.SIGNATURE: "not base64!", EventWebhookHeader.TIMESTAMP: "1"}, delivered),
        as_request({EventWebhookHeader.SIGNATURE: "AAAA", EventWebhookHeader.TIMESTAMP: "soon"}, delivered),
    ]


@pytest.fixture
def stale_webhooks(signing_key: ec.EllipticCurvePrivateKey) -> list[WebhookRequest]:
    body = batch(event("delivered"))
    return [as_request(sign(signing_key, body, int(time.time()) + skew), body) for skew in (-301, 301, -86400)]


class TestContract(HttpContract, WebhookContract, ReplayContract):
    """The behaviour every gateway shares (contract.py), for SendGrid."""

    unknown_id = "NoSuchMessageId0000000"
    retry_after_exact = False  # from X-RateLimit-Reset: whole seconds


EXPECTED_EVENTS: dict[str, tuple[EventKind, str | None] | None] = {
    "processed": (EventKind.QUEUED, None),
    "deferred": (EventKind.DEFERRED, "transient"),
    "delivered": (EventKind.DELIVERED, None),
    "bounce": (EventKind.BOUNCED, "permanent"),
    "dropped": (EventKind.FAILED, "permanent"),
    "spamreport": (EventKind.COMPLAINED, "permanent"),
    "open": None,
    "click": None,
    "unsubscribe": None,
    "group_unsubscribe": None,
    "group_resubscribe": None,
}


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED_EVENTS.items()))
def test_event_table(
    offline: SendGridGateway,
    signing_key: ec.EllipticCurvePrivateKey,
    name: str,
    expected: tuple[EventKind, str | None] | None,
) -> None:
    body = batch(event(name))
    events = offline.parse_webhook(as_request(sign(signing_key, body), body))
    assert [(e.kind, e.error_class) for e in events] == ([] if expected is None else [expected])
    assert set(EVENT_KINDS) == {k for k, v in EXPECTED_EVENTS.items() if v is not None}


@pytest.mark.parametrize(("bounce_type", "expected"), [("bounce", "permanent"), ("blocked", "transient")])
def test_bounce_type_table(
    offline: SendGridGateway, signing_key: ec.EllipticCurvePrivateKey, bounce_type: str, expected: str
) -> None:
    body = batch(event("bounce", type=bounce_type))
    [bounced] = offline.parse_webhook(as_request(sign(signing_key, body), body))
    assert (bounced.kind, bounced.error_class, bounced.error_code) == (EventKind.BOUNCED, expected, bounce_type)
    assert BOUNCE_CLASSES[bounce_type] == expected


def test_message_id_of_sg_message_id() -> None:
    assert message_id_of("wrfRRvF7Q0GgwUo2CvDmEA.filter0425p1mdw1.13037.57168B4A1D.0") == "wrfRRvF7Q0GgwUo2CvDmEA"
    assert message_id_of("wrfRRvF7Q0GgwUo2CvDmEA") == "wrfRRvF7Q0GgwUo2CvDmEA"


# -- settings --------------------------------------------------------------------------------------


def test_a_key_that_is_not_p256_fails_at_start_up() -> None:
    with pytest.raises(GatewayConfigError, match="DISPATCH_SENDGRID_WEBHOOK_PUBLIC_KEY"):
        build_gateway("sendgrid", api_key="k", webhook_public_key=base64.b64encode(b"nonsense").decode())


def test_build_gateway_defaults_to_the_real_api(signing_key: ec.EllipticCurvePrivateKey) -> None:
    gw = build_gateway("sendgrid", api_key="k", webhook_public_key=public_key_b64(signing_key))
    assert isinstance(gw, SendGridGateway)
    assert (gw.channel, gw.config.base_url) == ("email", "https://api.sendgrid.com")


# -- the official SDK drives the emulator and verifies its webhooks -------------------------------------


@pytest.fixture
def sdk(emulator: ThreadedServer) -> SendGridAPIClient:
    return SendGridAPIClient(API_KEY, host=emulator.url)


def test_sdk_sends_and_gets_a_202_with_a_message_id(sdk: SendGridAPIClient, state: SandboxState) -> None:
    to = new_address()
    mail = Mail(
        from_email="desk@advocacy.example",
        to_emails=to,
        subject="Letter",
        plain_text_content="Dear Minister",
        html_content="<p>Dear Minister</p>",
    )
    mail.custom_arg = CustomArg("reference", "dlv-sdk")
    response = sdk.send(mail)
    assert response.status_code == 202
    message_id = response.headers["X-Message-Id"]
    assert [(e.provider_id, e.reference, e.destination) for e in state.oracle()] == [(message_id, "dlv-sdk", to)]

    listed = sdk.client.messages.get(query_params={"query": "unique_args['reference']=\"dlv-sdk\"", "limit": 10})
    assert listed.status_code == 200
    [summary] = json.loads(listed.body)["messages"]
    assert summary["msg_id"].startswith(message_id + ".") and summary["to_email"] == to


def test_sdk_sees_sendgrid_errors(sdk: SendGridAPIClient, emulator: ThreadedServer) -> None:
    bad = Mail(
        from_email="desk@advocacy.example", to_emails="desk@advocacy.example", subject="x", plain_text_content="y"
    )
    body = bad.get()
    body["personalizations"][0]["to"][0]["email"] = "not-an-address"
    with pytest.raises(BadRequestsError) as caught:
        sdk.client.mail.send.post(request_body=body)
    assert json.loads(caught.value.body)["errors"][0]["field"] == "personalizations.0.to.0.email"
    with pytest.raises(UnauthorizedError):
        SendGridAPIClient("SG.wrong", host=emulator.url).send(bad)


def test_official_helper_verifies_emulator_signed_webhooks(
    gateway: SendGridGateway, sink: Sink, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    message = letter()
    gateway.send(message)
    hooks = sink.batches_for(message.to[0])
    helper = EventWebhook(public_key_b64(signing_key))  # the key exactly as SendGrid's UI shows it
    for headers, body in hooks:
        assert helper.verify_signature(
            body.decode(), headers[EventWebhookHeader.SIGNATURE.lower()], headers[EventWebhookHeader.TIMESTAMP.lower()]
        )
        assert gateway.parse_webhook(as_request(headers, body))  # and the gateway agrees
    headers, body = hooks[-1]
    assert not helper.verify_signature(
        body.decode().replace("delivered", "bounce"),
        headers[EventWebhookHeader.SIGNATURE.lower()],
        headers[EventWebhookHeader.TIMESTAMP.lower()],
    )
