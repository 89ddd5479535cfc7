"""Postmark gateway against the Postmark emulator on a real localhost port; the emulator against postmarker.

Destinations are unique per test, so scripted outcomes and oracle entries never leak between tests.
"""

from __future__ import annotations

import base64
import inspect
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError
from postmarker.models.emails import EmailManager
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import gateway_pauses
from dispatcher.domain.gateway_pauses import BreakerConfig
from dispatcher.domain.messages import Attachment, EmailMessage, EventKind, Receipt, WebhookRequest
from workers.gateways.email import postmark
from workers.gateways.email.postmark import BOUNCE_TYPES, DEFAULT_BOUNCE, PostmarkGateway, PostmarkSettings
from workers.gateways.errors import (
    ConfigurationFault,
    DeliveryError,
    GatewayConfigError,
    GatewayPaused,
    Permanent,
    Transient,
    Unknown,
    WebhookAuthError,
    WebhookFormatError,
)
from workers.gateways.guard import LedgerGuard, install_guard
from workers.gateways.registry import build_gateway
from workers.sandbox.core import SandboxState
from workers.sandbox.postmark import create_app
from workers.sandbox.server import ThreadedServer, free_port, serve

from . import contract
from .contract import HttpContract, Recorder, Replay, WebhookContract
from .receivers import RawSink, serving, wait_until

pytestmark = pytest.mark.timeout(60)

TOKEN = "server-token-0f1e2d3c"
HOOK_USER, HOOK_PASSWORD = "postmark-hooks", "s3cret:with-colon"
_numbers = itertools.count(1)


def new_address() -> str:
    return f"official{next(_numbers)}-{time.monotonic_ns()}@ministry.example"


class Sink(RawSink):
    """Webhooks received, raw: (headers, body bytes)."""

    def for_message(self, message_id: str) -> list[tuple[dict[str, str], bytes]]:
        def found() -> list[tuple[dict[str, str], bytes]]:
            with self.lock:
                return [(h, b) for h, b in self.received if json.loads(b).get("MessageID") == message_id]

        result: list[tuple[dict[str, str], bytes]] = wait_until(found)
        return result


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with serving(Sink(), "/webhooks/postmark") as received:
        yield received


@pytest.fixture
def state() -> SandboxState:
    return SandboxState(provider="postmark", webhook_delay=0.01)


@pytest.fixture
def app(state: SandboxState, sink: Sink) -> FastAPI:
    # Postmark's webhook auth: the credentials ride in the webhook URL.
    hook_url = sink.url.replace("http://", f"http://{HOOK_USER}:{HOOK_PASSWORD.replace(':', '%3A')}@")
    return create_app(state, server_token=TOKEN, webhook_url=hook_url)


@pytest.fixture
def emulator(app: FastAPI) -> Iterator[ThreadedServer]:
    with serve(app) as server:
        yield server


def postmark_gateway(
    base_url: str, *, read_timeout: float = 5.0, transport: httpx.BaseTransport | None = None, **settings: Any
) -> PostmarkGateway:
    values: dict[str, Any] = {
        "server_token": TOKEN,
        "base_url": base_url,
        "webhook_username": HOOK_USER,
        "webhook_password": HOOK_PASSWORD,
        **settings,
    }
    timeout = httpx.Timeout(connect=2.0, read=read_timeout, write=5.0, pool=2.0)
    return PostmarkGateway(PostmarkSettings(**values), client=httpx.Client(timeout=timeout, transport=transport))


@pytest.fixture
def gateway(emulator: ThreadedServer) -> Iterator[PostmarkGateway]:
    gw = postmark_gateway(emulator.url)
    yield gw
    gw.close()


@pytest.fixture
def offline() -> PostmarkGateway:
    return postmark_gateway("http://127.0.0.1:9")


def letter(to: str | None = None, *, reference: str | None = None, cc: tuple[str, ...] = ()) -> EmailMessage:
    reference = reference or f"dlv-{time.monotonic_ns()}"
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
        headers={"X-Campaign": "detained-journalists"},
    )


def as_request(headers: dict[str, str], body: bytes, *, received_at: datetime | None = None) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="https://dispatch.example/webhooks/postmark",
        headers={k.lower(): v for k, v in headers.items()},
        body=body,
        received_at=received_at or datetime.now(UTC),
    )


def basic(user: str, password: str) -> dict[str, str]:
    return {
        "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
        "Content-Type": "application/json",
    }


# Captured payloads, as in Postmark's webhook docs and django-anymail's tests/test_postmark_webhooks.py.
DELIVERY = {
    "RecordType": "Delivery",
    "ServerID": 23,
    "MessageStream": "outbound",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Recipient": "recipient@example.com",
    "Tag": "welcome-email",
    "DeliveredAt": "2014-08-01T13:28:10.2735393-04:00",
    "Details": "Test delivery webhook details",
    "Metadata": {"reference": "dlv-42"},
}
BOUNCE = {
    "RecordType": "Bounce",
    "ID": 901542550,
    "Type": "HardBounce",
    "TypeCode": 1,
    "ServerID": 23,
    "Name": "Hard bounce",
    "MessageID": "2706ee8a-737c-4285-b032-ccd317af53ed",
    "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
    "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    "Email": "bounce@example.com",
    "From": "sender@example.com",
    "BouncedAt": "2016-04-27T16:28:50.3963933-04:00",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": True,
    "Subject": "Postmark event test",
    "Content": "...",
    "Metadata": {"reference": "dlv-43"},
}
SPAM = {**BOUNCE, "RecordType": "SpamComplaint", "Type": "SpamComplaint", "TypeCode": 512, "Name": "Spam complaint"}


def hook(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


# -- sending ---------------------------------------------------------------------------------------


def test_send_success_records_reference_and_delivery_webhook_follows(
    gateway: PostmarkGateway, state: SandboxState, sink: Sink, app: FastAPI
) -> None:
    message = letter(cc=("copy@supporters.example",))
    receipt = gateway.send(message)

    assert (receipt.provider, receipt.status, receipt.raw["ErrorCode"]) == ("postmark", "Sent", 0)
    assert [(e.provider_id, e.reference, e.destination) for e in state.oracle()] == [
        (receipt.provider_id, message.reference, message.to[0])
    ]
    stored = app.state.emulator.messages[receipt.provider_id]
    assert {"Name": "Message-ID", "Value": message.message_id} in stored["Headers"]
    assert stored["Metadata"] == {"reference": message.reference}
    assert stored["Recipients"] == [message.to[0], "copy@supporters.example"]
    assert stored["Attachments"] == ["letter.pdf"]

    [(headers, body)] = sink.for_message(receipt.provider_id)
    [event] = gateway.parse_webhook(as_request(headers, body))
    assert (event.kind, event.provider_id, event.reference) == (
        EventKind.DELIVERED,
        receipt.provider_id,
        message.reference,
    )


def test_send_body_fields(offline: PostmarkGateway) -> None:
    message = letter()
    body = offline.send_body(message)
    assert body["To"] == message.to[0] and body["From"] == message.sender
    assert body["Headers"][0] == {"Name": "Message-ID", "Value": message.message_id}
    assert {"Name": "X-Campaign", "Value": "detained-journalists"} in body["Headers"]
    assert body["Attachments"] == [
        {
            "Name": "letter.pdf",
            "Content": base64.b64encode(b"%PDF-1.4 letter").decode(),
            "ContentType": "application/pdf",
        }
    ]
    assert (body["MessageStream"], body["TrackOpens"], body["TrackLinks"]) == ("outbound", False, "None")
    assert (body["ReplyTo"], body["HtmlBody"]) == (message.reply_to, message.html)


def test_bounce_outcome_gives_a_permanent_hard_bounce(
    gateway: PostmarkGateway, state: SandboxState, sink: Sink
) -> None:
    message = letter()
    state.script(message.to[0], ["bounce"])
    receipt = gateway.send(message)
    [event] = gateway.parse_webhook(as_request(*sink.for_message(receipt.provider_id)[0]))
    assert (event.kind, event.error_class, event.error_code) == (EventKind.BOUNCED, "permanent", "HardBounce")
    status = gateway.fetch_status(receipt.provider_id)  # the bounce record tells hard from soft
    assert (status.kind, status.error_class, status.error_code) == (EventKind.BOUNCED, "permanent", "HardBounce")


def test_inactive_recipient_is_permanent_and_nothing_is_accepted(gateway: PostmarkGateway, state: SandboxState) -> None:
    message = letter()
    state.script(message.to[0], ["invalid_number"])
    with pytest.raises(Permanent) as caught:
        gateway.send(message)
    assert caught.value.code == "406"
    assert "inactive" in str(caught.value)
    assert state.oracle() == []


def test_invalid_address_is_permanent_error_300(gateway: PostmarkGateway, state: SandboxState) -> None:
    with pytest.raises(Permanent) as caught:
        gateway.send(letter("not-an-address"))
    assert caught.value.code == "300"
    assert "Invalid 'To' address" in str(caught.value)
    assert state.oracle() == []


def test_wrong_token_is_a_configuration_fault_naming_the_setting(emulator: ThreadedServer, state: SandboxState) -> None:
    gw = postmark_gateway(emulator.url, server_token="wrong")
    with pytest.raises(ConfigurationFault) as caught:
        gw.send(letter())
    assert caught.value.code == "10"
    assert caught.value.setting == "DISPATCH_POSTMARK_SERVER_TOKEN"
    assert "DISPATCH_POSTMARK_SERVER_TOKEN" in str(caught.value)
    assert state.oracle() == []


def test_a_refused_token_fails_the_credential_check_naming_the_setting(emulator: ThreadedServer) -> None:
    """GET /server with the server token (Postmark's server API): sends nothing."""
    with pytest.raises(ConfigurationFault) as caught:
        postmark_gateway(emulator.url, server_token="wrong").check_credentials()
    assert str(caught.value) == "DISPATCH_POSTMARK_SERVER_TOKEN was refused by postmark (HTTP 401)"


def test_scripted_unauthorized_is_a_configuration_fault(gateway: PostmarkGateway, state: SandboxState) -> None:
    to = new_address()
    state.script(to, ["unauthorized"])
    with pytest.raises(ConfigurationFault) as caught:
        gateway.send(letter(to))
    assert caught.value.code == "10"
    assert state.oracle() == []


# -- lookups ---------------------------------------------------------------------------------------


def test_fetch_status_follows_the_message_to_delivered(gateway: PostmarkGateway) -> None:
    message = letter()
    receipt = gateway.send(message)
    final = wait_until(lambda: (s := gateway.fetch_status(receipt.provider_id)).kind is EventKind.DELIVERED and s)
    assert (final.provider_id, final.reference, final.error_class) == (receipt.provider_id, message.reference, None)


# -- webhooks --------------------------------------------------------------------------------------


def test_captured_delivery_bounce_and_spam_payloads(offline: PostmarkGateway) -> None:
    auth = basic(HOOK_USER, HOOK_PASSWORD)
    [delivered] = offline.parse_webhook(as_request(auth, hook(DELIVERY)))
    assert (delivered.kind, delivered.provider_id, delivered.reference) == (
        EventKind.DELIVERED,
        "883953f4-6105-42a2-a16a-77a8eac79483",
        "dlv-42",
    )
    assert delivered.occurred_at == datetime.fromisoformat("2014-08-01T17:28:10.273539+00:00")
    [bounced] = offline.parse_webhook(as_request(auth, hook(BOUNCE)))
    assert (bounced.kind, bounced.error_class, bounced.error_code, bounced.event_id) == (
        EventKind.BOUNCED,
        "permanent",
        "HardBounce",
        "Bounce:901542550",
    )
    assert "bounce@example.com" not in (bounced.detail or "")
    [spam] = offline.parse_webhook(as_request(auth, hook(SPAM)))
    assert (spam.kind, spam.error_class) == (EventKind.COMPLAINED, "permanent")


def test_webhooks_are_refused_while_credentials_are_not_configured() -> None:
    gw = postmark_gateway("http://127.0.0.1:9", webhook_username=None, webhook_password=None)
    with pytest.raises(WebhookAuthError, match="DISPATCH_POSTMARK_WEBHOOK_USERNAME"):
        gw.parse_webhook(as_request(basic(HOOK_USER, HOOK_PASSWORD), hook(DELIVERY)))


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        hook({**DELIVERY, "MessageID": None}),
        hook({**DELIVERY, "DeliveredAt": "yesterday"}),
    ],
)
def test_malformed_bodies_are_format_errors(offline: PostmarkGateway, body: bytes) -> None:
    with pytest.raises(WebhookFormatError):
        offline.parse_webhook(as_request(basic(HOOK_USER, HOOK_PASSWORD), body))


@pytest.mark.parametrize("record", ["Click", "SubscriptionChange"])  # "Open": the contract's other event
def test_engagement_records_are_authentic_but_ignored(offline: PostmarkGateway, record: str) -> None:
    body = hook({**DELIVERY, "RecordType": record})
    assert offline.parse_webhook(as_request(basic(HOOK_USER, HOOK_PASSWORD), body)) == []


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., PostmarkGateway]]:
    made: list[PostmarkGateway] = []

    def make(
        address: str, *, read_timeout: float = 5.0, transport: httpx.BaseTransport | None = None
    ) -> PostmarkGateway:
        made.append(postmark_gateway(address, read_timeout=read_timeout, transport=transport))
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()


@pytest.fixture
def new_message() -> Callable[[], EmailMessage]:
    return letter


@pytest.fixture
def signed_document() -> Callable[[Any], WebhookRequest]:
    """A webhook with the Basic credentials Postmark sends (configured on the webhook)."""
    return lambda document: as_request(basic(HOOK_USER, HOOK_PASSWORD), json.dumps(document).encode())


@pytest.fixture
def signed_raw() -> Callable[[bytes], WebhookRequest]:
    return lambda body: as_request(basic(HOOK_USER, HOOK_PASSWORD), body)


@pytest.fixture
def webhook_sample() -> dict[str, Any]:
    return BOUNCE


@pytest.fixture
def other_event_sample() -> dict[str, Any]:
    return {**DELIVERY, "RecordType": "Open"}


@pytest.fixture
def forged_webhooks() -> list[WebhookRequest]:
    return [
        as_request(headers, hook(DELIVERY))
        for headers in (
            {},  # no credentials at all
            basic(HOOK_USER, "wrong"),
            basic("someone-else", HOOK_PASSWORD),
            {"Authorization": "Bearer " + HOOK_PASSWORD},
            {"Authorization": "Basic not-base64!"},
        )
    ]


class TestContract(HttpContract, WebhookContract):
    """The behaviour every gateway shares (contract.py), for Postmark."""

    unknown_id = "00000000-0000-0000-0000-000000000000"


# Every bounce Type Postmark documents, pinned on purpose: changing the module table must change this.
EXPECTED_BOUNCES: dict[str, tuple[EventKind, str] | None] = {
    "HardBounce": (EventKind.BOUNCED, "permanent"),
    "Transient": (EventKind.DEFERRED, "transient"),
    "Unsubscribe": (EventKind.FAILED, "permanent"),
    "Subscribe": None,
    "AutoResponder": None,
    "AddressChange": (EventKind.BOUNCED, "permanent"),
    "DnsError": (EventKind.DEFERRED, "transient"),
    "SpamNotification": (EventKind.COMPLAINED, "permanent"),
    "OpenRelayTest": None,
    "Unknown": (EventKind.BOUNCED, "transient"),
    "SoftBounce": (EventKind.BOUNCED, "transient"),
    "VirusNotification": (EventKind.BOUNCED, "permanent"),
    "ChallengeVerification": None,
    "BadEmailAddress": (EventKind.BOUNCED, "permanent"),
    "SpamComplaint": (EventKind.COMPLAINED, "permanent"),
    "ManuallyDeactivated": (EventKind.FAILED, "permanent"),
    "Unconfirmed": (EventKind.FAILED, "permanent"),
    "Blocked": (EventKind.BOUNCED, "permanent"),
    "SMTPApiError": (EventKind.FAILED, "permanent"),
    "InboundError": None,
    "DMARCPolicy": (EventKind.BOUNCED, "permanent"),
    "TemplateRenderingFailed": (EventKind.FAILED, "permanent"),
}


@pytest.mark.parametrize(("bounce_type", "expected"), sorted(EXPECTED_BOUNCES.items()))
def test_bounce_type_table(offline: PostmarkGateway, bounce_type: str, expected: tuple[EventKind, str] | None) -> None:
    body = hook({**BOUNCE, "Type": bounce_type})
    events = offline.parse_webhook(as_request(basic(HOOK_USER, HOOK_PASSWORD), body))
    if expected is None:
        assert events == []
    else:
        [event] = events
        assert (event.kind, event.error_class, event.error_code) == (*expected, bounce_type)


def test_bounce_table_covers_the_sdk_list_and_defaults_to_transient(offline: PostmarkGateway) -> None:
    assert set(BOUNCE_TYPES) == set(EXPECTED_BOUNCES)
    body = hook({**BOUNCE, "Type": "SomethingNew"})
    [event] = offline.parse_webhook(as_request(basic(HOOK_USER, HOOK_PASSWORD), body))
    assert (event.kind, event.error_class) == DEFAULT_BOUNCE


# Webhook RecordType (postmarkapp.com/developer/webhooks), message Status and MessageEvents[].Type
# (postmark-python models/outbound/enums.py MessageStatus, MessageEventType), with our kinds; the others
# (Open, Click, SubscriptionChange; Opened, LinkClicked, SubscriptionChanged) are not tracked.
DOCUMENTED_RECORDS = {
    "Delivery": EventKind.DELIVERED,
    "Bounce": EventKind.BOUNCED,
    "SpamComplaint": EventKind.COMPLAINED,
}
DOCUMENTED_STATUSES: list[tuple[str, EventKind]] = [
    ("Queued", EventKind.QUEUED),
    ("Scheduled", EventKind.QUEUED),
    ("Processed", EventKind.SENDING),
    ("Sent", EventKind.SENDING),  # handed to Postmark's MTA; a Delivered event says more
    ("Blocked", EventKind.FAILED),
    ("Failed", EventKind.FAILED),
]
DOCUMENTED_MESSAGE_EVENTS = {"Delivered": EventKind.DELIVERED, "Transient": EventKind.DEFERRED}


@pytest.mark.parametrize(("status", "kind"), DOCUMENTED_STATUSES)
def test_every_message_status_maps_as_decided(status: str, kind: EventKind) -> None:
    details = {"MessageID": "m-1", "Status": status, "Metadata": {"reference": "dlv-1"}, "MessageEvents": []}
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=details))
    event = postmark_gateway("https://api.postmark.test", transport=transport).fetch_status("m-1")
    assert (event.kind, event.reference) == (kind, "dlv-1")


@pytest.mark.parametrize(("event_type", "kind"), sorted(DOCUMENTED_MESSAGE_EVENTS.items()))
def test_message_events_map_as_decided(event_type: str, kind: EventKind) -> None:
    details = {"MessageID": "m-1", "Status": "Sent", "MessageEvents": [{"Type": "Opened"}, {"Type": event_type}]}
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=details))
    assert postmark_gateway("https://api.postmark.test", transport=transport).fetch_status("m-1").kind is kind


def test_the_tables_hold_the_documented_values() -> None:
    assert postmark.RECORD_KINDS == DOCUMENTED_RECORDS
    assert dict(DOCUMENTED_STATUSES) == postmark.STATUS_KINDS
    assert postmark.MESSAGE_EVENT_KINDS == {**DOCUMENTED_MESSAGE_EVENTS, "Bounced": EventKind.BOUNCED}
    # API ErrorCodes that mean "later" (postmarkapp.com/developer/api/overview): 100 maintenance, 429 rate limit
    assert set(postmark.TRANSIENT_CODES) == {100, 429}


# -- settings --------------------------------------------------------------------------------------


def test_missing_token_fails_at_start_up_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPATCH_POSTMARK_SERVER_TOKEN", raising=False)
    with pytest.raises(GatewayConfigError, match="DISPATCH_POSTMARK_SERVER_TOKEN"):
        build_gateway("postmark")


def test_build_gateway_defaults_to_the_real_api() -> None:
    gw = build_gateway("postmark", server_token="t")
    assert isinstance(gw, PostmarkGateway)
    assert (gw.channel, gw.config.base_url, gw.config.message_stream) == (
        "email",
        "https://api.postmarkapp.com",
        "outbound",
    )


# -- the SDK Postmark recommends drives the emulator ---------------------------------------------------


@pytest.fixture
def sdk(emulator: ThreadedServer) -> PostmarkClient:
    return PostmarkClient(server_token=TOKEN, root_api_url=emulator.url + "/", timeout=5)


def test_postmarker_sends_and_parses_the_answer(sdk: PostmarkClient, state: SandboxState) -> None:
    to = new_address()
    answer = sdk.emails.send(
        From="desk@advocacy.example",
        To=to,
        Subject="Letter",
        TextBody="Dear Minister",
        Metadata={"reference": "dlv-sdk"},
        MessageStream="outbound",
    )
    assert answer["ErrorCode"] == 0 and answer["Message"] == "OK" and answer["To"] == to
    assert state.sends_per_reference() == {"dlv-sdk": 1}

    details = sdk.messages.outbound.get(answer["MessageID"])
    assert (details.MessageID, details.Metadata, details.Recipients) == (
        answer["MessageID"],
        {"reference": "dlv-sdk"},
        [to],
    )
    listed = sdk.messages.outbound.all(count=10, offset=0, recipient=to)
    assert [m.MessageID for m in listed] == [answer["MessageID"]]


def test_postmarker_sees_postmark_errors(sdk: PostmarkClient, emulator: ThreadedServer) -> None:
    with pytest.raises(ClientError) as caught:
        sdk.emails.send(From="desk@advocacy.example", To="not-an-address", Subject="x", TextBody="y")
    assert caught.value.error_code == 300
    wrong = PostmarkClient(server_token="wrong", root_api_url=emulator.url + "/", timeout=5)
    with pytest.raises(ClientError) as caught:
        wrong.emails.send(From="desk@advocacy.example", To=new_address(), Subject="x", TextBody="y")
    assert caught.value.error_code == 10


# -- the emulator's /email/batch, driven by postmarker and by plain HTTP ------------------------------


def test_postmarker_sends_a_batch_and_each_message_lives_as_from_email(
    sdk: PostmarkClient, state: SandboxState, sink: Sink, app: FastAPI
) -> None:
    to = [new_address() for _ in range(3)]
    state.script(to[1], ["invalid_number"])
    answers = sdk.emails.send_batch(
        *(
            {
                "From": "desk@advocacy.example",
                "To": address,
                "Subject": "Copy",
                "TextBody": "Dear supporter",
                "Metadata": {"reference": f"dlv-batch-{n}"},
                "MessageStream": "outbound",
            }
            for n, address in enumerate(to)
        ),
        {"From": "desk@advocacy.example", "To": "not-an-address", "Subject": "Copy", "TextBody": "x"},
    )
    assert [a["ErrorCode"] for a in answers] == [0, 406, 0, 300]
    assert [a.get("To") for a in answers] == [to[0], None, to[2], None]
    assert "inactive" in answers[1]["Message"] and "Invalid 'To' address" in answers[3]["Message"]
    assert state.sends_per_reference() == {"dlv-batch-0": 1, "dlv-batch-2": 1}
    for answer, reference in ((answers[0], "dlv-batch-0"), (answers[2], "dlv-batch-2")):
        assert app.state.emulator.messages[answer["MessageID"]]["Metadata"] == {"reference": reference}
        [(_, body)] = sink.for_message(answer["MessageID"])
        assert json.loads(body)["RecordType"] == "Delivery"


def post_batch(emulator: ThreadedServer, messages: Any) -> httpx.Response:
    headers = {"X-Postmark-Server-Token": TOKEN, "Accept": "application/json"}
    return httpx.post(emulator.url + "/email/batch", json=messages, headers=headers, timeout=10)


def test_the_emulator_refuses_a_batch_of_501_and_accepts_none(emulator: ThreadedServer, state: SandboxState) -> None:
    message = {"From": "desk@advocacy.example", "To": new_address(), "Subject": "Copy", "TextBody": "x"}
    response = post_batch(emulator, [message] * 501)
    assert response.status_code == 422 and response.json()["ErrorCode"] == 410
    assert state.oracle() == []
    assert post_batch(emulator, {"not": "an array"}).json()["ErrorCode"] == 403
    assert post_batch(emulator, []).json() == []


@pytest.mark.parametrize(("outcome", "status", "code"), [("rate_limited", 429, 429), ("unauthorized", 401, 10)])
def test_a_request_wide_refusal_in_a_batch_refuses_it_all(
    emulator: ThreadedServer, state: SandboxState, outcome: str, status: int, code: int
) -> None:
    to = [new_address(), new_address()]
    state.script(to[1], [outcome])
    response = post_batch(
        emulator, [{"From": "desk@advocacy.example", "To": a, "Subject": "Copy", "TextBody": "x"} for a in to]
    )
    assert (response.status_code, response.json()["ErrorCode"]) == (status, code)
    assert state.oracle() == []


# -- send_many: POST /email/batch -------------------------------------------------------------------


@pytest.fixture
def new_gateway() -> Iterator[Callable[..., PostmarkGateway]]:
    """postmark_gateway, each gateway made closed after the test (its connections with it)."""
    made: list[PostmarkGateway] = []

    def make(base_url: str, **options: Any) -> PostmarkGateway:
        made.append(postmark_gateway(base_url, **options))
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()


def copy_to(address: str | None = None, *, reference: str | None = None) -> EmailMessage:
    """A supporter copy: no attachment, its own unsubscribe headers (as the worker renders it)."""
    reference = reference or f"dlv-{time.monotonic_ns()}"
    return EmailMessage(
        sender="Campaign Desk <desk@advocacy.example>",
        to=[address or new_address()],
        subject="Your copy: release of detained journalists",
        text="Dear supporter,\n...",
        html="<p>Dear supporter,</p>",
        reference=reference,
        message_id=f"<{reference}@advocacy.example>",
        headers={
            "List-Unsubscribe": f"<https://dispatch.example/unsubscribe/{reference}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def batch_requests(recorder: Recorder) -> list[int]:
    """The number of messages in each POST /email/batch the gateway made."""
    return [len(json.loads(e.body)) for e in recorder.exchanges if e.path == "/email/batch" and e.method == "POST"]


class Bodies(httpx.BaseTransport):
    """Keeps each request body and passes it to the emulator."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[tuple[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.url.path, json.loads(request.read() or b"null")))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_batch_with_mixed_outcomes_goes_in_one_request_with_one_outcome_per_message(
    new_gateway: Callable[..., PostmarkGateway], emulator: ThreadedServer, state: SandboxState, sink: Sink
) -> None:
    bodies = Bodies()
    gateway = new_gateway(emulator.url, transport=bodies)
    messages = [copy_to() for _ in range(4)] + [copy_to("not-an-address"), contract.A_FAX, copy_to()]
    state.script(messages[1].to[0], ["invalid_number"])
    state.script(messages[2].to[0], ["bounce"])
    state.script(messages[3].to[0], ["complaint"])
    outcomes = gateway.send_many(messages)

    assert [p for p, _ in bodies.requests] == ["/email/batch"]
    assert [m["Metadata"]["reference"] for m in bodies.requests[0][1]] == [
        m.reference for m in messages if isinstance(m, EmailMessage)
    ]
    assert [type(o).__name__ for o in outcomes] == [
        "Receipt", "Permanent", "Receipt", "Receipt", "Permanent", "Permanent", "Receipt"
    ]  # fmt: skip
    assert [getattr(o, "code", None) for o in outcomes] == [None, "406", None, None, "300", "channel", None]
    assert "inactive" in str(outcomes[1]) and "Invalid 'To' address" in str(outcomes[4])
    accepted = {e.reference: e.provider_id for e in state.oracle()}
    receipts = {m.reference: o.provider_id for m, o in zip(messages, outcomes, strict=True) if isinstance(o, Receipt)}
    assert accepted == receipts and state.duplicates() == {}
    bounced = outcomes[2]
    assert isinstance(bounced, Receipt)
    [event] = gateway.parse_webhook(as_request(*sink.for_message(bounced.provider_id)[0]))
    assert (event.kind, event.reference) == (EventKind.BOUNCED, messages[2].reference)


def test_a_refused_token_is_a_configuration_fault_for_every_message(
    new_gateway: Callable[..., PostmarkGateway], emulator: ThreadedServer, state: SandboxState
) -> None:
    outcomes = new_gateway(emulator.url, server_token="wrong").send_many([copy_to(), copy_to()])
    assert all(isinstance(o, ConfigurationFault) for o in outcomes)
    assert [(o.code, o.setting) for o in outcomes if isinstance(o, ConfigurationFault)] == [
        ("10", "DISPATCH_POSTMARK_SERVER_TOKEN")
    ] * 2
    assert state.oracle() == []


def test_a_timeout_is_unknown_for_every_message_and_each_is_found_by_reference(
    new_gateway: Callable[..., PostmarkGateway], emulator: ThreadedServer, state: SandboxState
) -> None:
    messages = [copy_to() for _ in range(3)]
    state.latency = 1.0
    try:
        outcomes = new_gateway(emulator.url, read_timeout=0.3).send_many(messages)
    finally:
        state.latency = 0.0
    assert [(type(o), getattr(o, "code", None)) for o in outcomes] == [(Unknown, "timeout")] * 3
    entries = wait_until(lambda: len(state.oracle()) == 3 and state.oracle())  # accepted before the answer
    gateway = new_gateway(emulator.url)
    for message in messages:
        found = gateway.find_by_reference(message.reference, to=message.to[0])
        [entry] = [e for e in entries if e.reference == message.reference]
        assert found is not None and (found.provider_id, found.reference) == (entry.provider_id, message.reference)


def test_send_many_splits_501_messages_into_requests_of_500_and_1(
    new_gateway: Callable[..., PostmarkGateway], emulator: ThreadedServer, state: SandboxState
) -> None:
    recorder = Recorder()
    gateway = new_gateway(emulator.url, transport=recorder)
    messages = [copy_to() for _ in range(501)]
    outcomes = gateway.send_many(messages)
    assert batch_requests(recorder) == [500, 1]
    assert all(isinstance(o, Receipt) for o in outcomes)
    assert state.sends_per_reference() == {m.reference: 1 for m in messages}


def test_a_request_body_over_50_mb_is_split_before_the_call(new_gateway: Callable[..., PostmarkGateway]) -> None:
    """Postmark: "up to 500 messages per API call, and up to 50 MB payload size, including attachments"."""
    sizes: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = request.read()
        sizes.append(len(body))
        return httpx.Response(
            200, json=[{**SDK_BATCH_ANSWER[0], "MessageID": f"id-{i}"} for i in range(len(json.loads(body)))]
        )

    gateway = new_gateway("https://api.postmark.test", transport=httpx.MockTransport(answer))
    big = Attachment(filename="dossier.pdf", content=b"%PDF" + b"x" * 9_000_000)  # 12 MB once base64-encoded
    messages = [replace(letter(), attachments=[big]) for _ in range(9)]
    outcomes = gateway.send_many(messages)
    assert all(isinstance(o, Receipt) for o in outcomes)
    assert len(sizes) == 3 and all(size <= PostmarkGateway.max_batch_bytes for size in sizes)  # type: ignore[operator]


# The official SDK's send body and batch answer: ActiveCampaign/postmark-python postmark/models/outbound/
# schemas.py (Email, its aliases) and tests/test_send_messages.py (test_send_batch's answer).
SDK_EMAIL_FIELDS = {
    "From", "To", "Cc", "Bcc", "Subject", "Tag", "HtmlBody", "TextBody", "ReplyTo", "Headers", "TrackOpens",
    "TrackLinks", "Attachments", "Metadata", "MessageStream",
}  # fmt: skip
SDK_BATCH_ANSWER = [
    {"To": f"user{n}@example.com", "SubmittedAt": "2024-01-01T00:00:00", "MessageID": f"id-{n}", "ErrorCode": 0,
     "Message": "OK"}
    for n in (1, 2)
]  # fmt: skip


def test_the_batch_request_is_what_the_official_sdks_send(new_gateway: Callable[..., PostmarkGateway]) -> None:
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=SDK_BATCH_ANSWER)

    gateway = new_gateway("https://api.postmark.test", transport=httpx.MockTransport(answer))
    messages = [letter(cc=("copy@supporters.example",)), copy_to()]
    outcomes = gateway.send_many(messages)

    [request] = requests
    assert (request.method, request.url.path) == ("POST", "/email/batch")
    assert request.headers["X-Postmark-Server-Token"] == TOKEN
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.read())
    assert body == [gateway.send_body(m) for m in messages]  # a bare array of /email bodies
    for element in body:
        assert set(element) <= SDK_EMAIL_FIELDS
        assert set(element) <= set(inspect.signature(EmailManager.send).parameters)  # postmarker's names
    assert [o.provider_id for o in outcomes if isinstance(o, Receipt)] == ["id-1", "id-2"]


# Per message, each ErrorCode of Postmark's API error list that a send can meet.
ENTRY_CODES = [10, 100, 300, 400, 401, 405, 406, 411, 412, 413, 429]


@pytest.mark.parametrize("code", ENTRY_CODES)
def test_an_entrys_error_code_maps_as_the_single_send_maps_it(
    new_gateway: Callable[..., PostmarkGateway], code: int
) -> None:
    entry = {"ErrorCode": code, "Message": f"refused with {code}"}
    single = new_gateway(
        "https://api.postmark.test", transport=httpx.MockTransport(lambda _: httpx.Response(422, json=entry))
    )
    batch = new_gateway(
        "https://api.postmark.test",
        transport=httpx.MockTransport(lambda _: httpx.Response(200, json=[SDK_BATCH_ANSWER[0], entry])),
    )
    with pytest.raises(DeliveryError) as caught:
        single.send(copy_to())
    ok, refused = batch.send_many([copy_to(), copy_to()])
    assert isinstance(ok, Receipt) and ok.provider_id == "id-1"
    assert (type(refused), refused.code) == (type(caught.value), caught.value.code)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (401, {"ErrorCode": 10, "Message": "bad token"}, {}),
        (403, b"Forbidden", {}),
        (422, {"ErrorCode": 410, "Message": "Too many batch messages"}, {}),
        (422, {"ErrorCode": 402, "Message": "Received invalid JSON input."}, {}),
        (429, {"ErrorCode": 429, "Message": "Rate limit exceeded"}, {"Retry-After": "7"}),
        (500, {"ErrorCode": 0, "Message": "Internal server error."}, {}),
        (502, b"Bad Gateway", {}),
        (503, b"Service Unavailable", {"Retry-After": "3"}),
        (504, b"Gateway Timeout", {}),
        (200, b"<html>maintenance</html>", {}),
        (200, [SDK_BATCH_ANSWER[0]], {}),  # one entry for two messages: cannot be paired
    ],
)
def test_a_whole_request_answer_is_each_messages_outcome_as_a_single_send_would_have_it(
    new_gateway: Callable[..., PostmarkGateway], status: int, body: Any, headers: dict[str, str]
) -> None:
    def respond(_: httpx.Request) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers)

    single = new_gateway("https://api.postmark.test", transport=httpx.MockTransport(respond))
    with pytest.raises(DeliveryError) as caught:
        single.send(copy_to())
    expected = caught.value
    outcomes = new_gateway("https://api.postmark.test", transport=httpx.MockTransport(respond)).send_many(
        [copy_to(), copy_to()]
    )
    for outcome in outcomes:
        assert isinstance(outcome, DeliveryError)
        assert type(outcome) is type(expected)
        if status != 200:  # an unreadable acceptance is Unknown either way, its code says how
            assert outcome.code == expected.code
        assert getattr(outcome, "retry_after", None) == getattr(expected, "retry_after", None)


def test_garbage_batch_answers_end_in_our_errors_only(
    new_gateway: Callable[..., PostmarkGateway], emulator: ThreadedServer
) -> None:
    """Every answer the emulator gave to a batch, mutated or replaced by garbage: each message's outcome
    is a DeliveryError the Postmark module chose (never the base's last resort) or a well-formed Receipt."""
    recorder = Recorder()
    messages = [copy_to(), copy_to()]
    new_gateway(emulator.url, transport=recorder).send_many(messages)
    [exchange] = recorder.exchanges
    failures = []
    for variant in exchange.variants():
        outcomes = new_gateway("http://provider.test", transport=Replay([variant])).send_many(messages)
        for outcome in outcomes:
            if isinstance(outcome, DeliveryError):
                if "unexpected" in str(outcome):
                    failures.append(f"[{variant}]: reached the base boundary: {outcome}")
            elif problems := contract.receipt_problems(outcome, "postmark"):
                failures.append(f"[{variant}]: {problems}")
    assert failures == [], "\n".join(failures[:50])


def test_a_failed_batch_is_one_transport_failure_for_the_breaker(
    new_gateway: Callable[..., PostmarkGateway], factory: sessionmaker[Session]
) -> None:
    """The circuit breaker counts calls: a batch of five that found no server is one failure, not five."""
    config = BreakerConfig(failures=2, window=timedelta(minutes=1), cooldown=timedelta(minutes=1))
    gateway = new_gateway(f"http://127.0.0.1:{free_port()}")
    install_guard([gateway], LedgerGuard(factory, config))
    first = gateway.send_many([copy_to() for _ in range(5)])
    assert [(type(o), getattr(o, "code", None)) for o in first] == [(Transient, "connect")] * 5
    with factory() as session:
        assert gateway_pauses.pause_of(session, "postmark") is None
    gateway.send_many([copy_to() for _ in range(5)])  # the second failed call opens it
    with factory() as session:
        pause = gateway_pauses.pause_of(session, "postmark")
    assert pause is not None and pause.cause == gateway_pauses.BREAKER
    paused = gateway.send_many([copy_to(), copy_to()])
    assert all(isinstance(o, GatewayPaused) for o in paused)


@pytest.mark.parametrize(
    "text",
    ["plain", 'quotes " and \\ backslashes', "controls \x00\x01\x1f\t\n", "习近平 王毅 😀", "", "A" * 100 + "=="],
)
def test_a_batch_message_counts_at_least_its_encoded_body_and_a_comma(
    new_gateway: Callable[..., PostmarkGateway], text: str
) -> None:
    gateway = new_gateway("https://api.postmark.test")
    message = replace(letter(), text=text, subject=text or "s", html=f"<p>{text}</p>")
    request = httpx.Request("POST", "https://api.postmark.test/email/batch", json=[gateway.send_body(message)])
    encoded = len(request.read()) - 2 + 1  # without [ ], with a comma
    assert gateway._batch_bytes(message) >= encoded
    big = replace(message, text=text * 20_000 or "x" * 200_000)  # over 100 KB a message: counted exactly
    request = httpx.Request("POST", "https://api.postmark.test/email/batch", json=[gateway.send_body(big)])
    assert gateway._batch_bytes(big) == len(request.read()) - 2 + 1
