"""Mailgun gateway against the Mailgun emulator on a real localhost port.

Webhook payloads are the captured ones from django-anymail's tests/test_mailgun_webhooks.py, signed the
way Mailgun's user manual ("Securing Webhooks") prescribes.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from dispatcher.domain.messages import Attachment, EmailMessage, EventKind, WebhookRequest
from workers.gateways.email.mailgun import EVENT_KINDS, SEVERITIES, MailgunGateway, MailgunSettings
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
from workers.sandbox.mailgun import create_app, signature_block
from workers.sandbox.server import ThreadedServer, serve

from .contract import HttpContract, ReplayContract, WebhookContract
from .receivers import RawSink, serving, wait_until

pytestmark = pytest.mark.timeout(60)

API_KEY = "key-0123456789abcdef"
DOMAIN = "mg.advocacy.example"
SIGNING_KEY = "webhook-signing-key-4f3e"
_numbers = itertools.count(1)


def new_address() -> str:
    return f"official{next(_numbers)}-{time.monotonic_ns()}@ministry.example"


class Sink(RawSink):
    """Webhooks received, raw: (headers, body bytes)."""

    def for_recipient(self, address: str) -> list[tuple[dict[str, str], bytes]]:
        def found() -> list[tuple[dict[str, str], bytes]]:
            with self.lock:
                hits = [(h, b) for h, b in self.received if json.loads(b)["event-data"]["recipient"] == address]
            final = any(json.loads(b)["event-data"]["event"] in ("delivered", "failed") for _, b in hits)
            return hits if final else []

        result: list[tuple[dict[str, str], bytes]] = wait_until(found)
        return result


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with serving(Sink(), "/webhooks/mailgun") as received:
        yield received


@pytest.fixture
def state() -> SandboxState:
    return SandboxState(provider="mailgun", webhook_delay=0.01)


@pytest.fixture
def app(state: SandboxState, sink: Sink) -> FastAPI:
    return create_app(state, api_key=API_KEY, domain=DOMAIN, webhook_signing_key=SIGNING_KEY, webhook_url=sink.url)


@pytest.fixture
def emulator(app: FastAPI) -> Iterator[ThreadedServer]:
    with serve(app) as server:
        yield server


def mailgun_gateway(
    base_url: str, *, read_timeout: float = 5.0, transport: httpx.BaseTransport | None = None, **settings: Any
) -> MailgunGateway:
    values: dict[str, Any] = {
        "api_key": API_KEY,
        "domain": DOMAIN,
        "base_url": base_url,
        "webhook_signing_key": SIGNING_KEY,
        **settings,
    }
    timeout = httpx.Timeout(connect=2.0, read=read_timeout, write=5.0, pool=2.0)
    return MailgunGateway(MailgunSettings(**values), client=httpx.Client(timeout=timeout, transport=transport))


@pytest.fixture
def gateway(emulator: ThreadedServer) -> Iterator[MailgunGateway]:
    gw = mailgun_gateway(emulator.url)
    yield gw
    gw.close()


@pytest.fixture
def offline() -> MailgunGateway:
    return mailgun_gateway("http://127.0.0.1:9")


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
        headers={"X-Campaign": "detained-journalists"},
    )


def as_request(body: bytes, *, received_at: datetime | None = None) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="https://dispatch.example/webhooks/mailgun",
        headers={"content-type": "application/json"},
        body=body,
        received_at=received_at or datetime.now(UTC),
    )


# Captured "delivered" and "failed" event-data (django-anymail tests/test_mailgun_webhooks.py), plus our variable.
DELIVERED = {
    "tags": [],
    "timestamp": 1534108637.153125,
    "recipient-domain": "example.com",
    "id": "hTWCTD81RtiDN-...",
    "campaigns": [],
    "user-variables": {"reference": "dlv-42"},
    "log-level": "info",
    "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False, "is-test-mode": False},
    "envelope": {
        "sending-ip": "333.123.123.200",
        "sender": "test@example.org",
        "transport": "smtp",
        "targets": "recipient@example.com",
    },
    "message": {
        "headers": {
            "to": "recipient@example.com",
            "message-id": "20180812211713.1.DF5966851B4BAA99@example.org",
            "from": "test@example.org",
            "subject": "Testing",
        },
        "attachments": [],
        "size": 809,
    },
    "recipient": "recipient@example.com",
    "event": "delivered",
    "delivery-status": {
        "tls": True,
        "mx-host": "smtp-in.example.com",
        "attempt-no": 1,
        "description": "",
        "session-seconds": 3.57,
        "utf8": True,
        "code": 250,
        "message": "OK",
        "certificate-verified": True,
    },
}
FAILED_TEMPORARY = {
    "event": "failed",
    "severity": "temporary",
    "reason": "generic",
    "timestamp": 1534111899.659519,
    "log-level": "warn",
    "id": "tmp-1",
    "user-variables": {"reference": "dlv-43"},
    "message": {
        "headers": {
            "to": "undeliverable@nomx.example.com",
            "message-id": "20180812214638.1.4A7D468E9BC18C5D@example.org",
            "from": "Test Sender ",
        }
    },
    "recipient": "undeliverable@nomx.example.com",
    "delivery-status": {
        "attempt-no": 3,
        "description": "No MX for nomx.example.com",
        "session-seconds": 0.0,
        "retry-seconds": 1800,
        "code": 498,
        "message": "No MX for nomx.example.com",
    },
}


def signed(
    data: dict[str, Any], *, key: str = SIGNING_KEY, timestamp: int | None = None, token: str | None = None
) -> bytes:
    return json.dumps(
        {"signature": signature_block(key, timestamp=timestamp, token=token), "event-data": data}
    ).encode()


# -- sending ---------------------------------------------------------------------------------------


def test_send_success_posts_the_documented_fields_and_webhooks_follow(
    gateway: MailgunGateway, state: SandboxState, sink: Sink, app: FastAPI
) -> None:
    message = letter(cc=("copy@supporters.example",))
    receipt = gateway.send(message)
    assert receipt.provider_id == message.message_id.strip("<>")  # Mailgun keeps our Message-Id
    assert receipt.raw == {"id": message.message_id, "message": "Queued. Thank you."}
    assert [(e.provider_id, e.reference) for e in state.oracle()] == [(receipt.provider_id, message.reference)]
    posted = app.state.emulator.forms[receipt.provider_id]
    fields = posted["fields"]
    assert ("to", message.to[0]) in fields and ("cc", "copy@supporters.example") in fields
    assert ("v:reference", message.reference) in fields and ("h:Message-Id", message.message_id) in fields
    assert ("h:Reply-To", message.reply_to) in fields and ("h:X-Campaign", "detained-journalists") in fields
    assert ("o:tracking", "no") in fields
    assert posted["attachments"] == [("letter.pdf", b"%PDF-1.4 letter")]

    hooks = sink.for_recipient(message.to[0])
    events = [e for _, b in hooks for e in gateway.parse_webhook(as_request(b))]
    assert [e.kind for e in events] == [EventKind.QUEUED, EventKind.DELIVERED]
    assert {(e.provider_id, e.reference) for e in events} == {(receipt.provider_id, message.reference)}


def test_bounce_outcome_is_a_permanent_failure(gateway: MailgunGateway, state: SandboxState, sink: Sink) -> None:
    message = letter()
    state.script(message.to[0], ["bounce"])
    receipt = gateway.send(message)
    [_, failed] = [e for _, b in sink.for_recipient(message.to[0]) for e in gateway.parse_webhook(as_request(b))]
    assert (failed.kind, failed.error_class, failed.error_code) == (EventKind.BOUNCED, "permanent", "bounce")
    status = gateway.fetch_status(receipt.provider_id)
    assert (status.kind, status.error_class, status.reference) == (EventKind.BOUNCED, "permanent", message.reference)


def test_invalid_recipient_is_permanent_and_nothing_is_accepted(gateway: MailgunGateway, state: SandboxState) -> None:
    message = letter()
    state.script(message.to[0], ["invalid_number"])
    with pytest.raises(Permanent) as caught:
        gateway.send(message)
    assert caught.value.code == "invalid_address"
    assert "to parameter is not a valid address" in str(caught.value)
    assert state.oracle() == []


def test_wrong_key_and_wrong_domain_are_configuration_faults_naming_their_settings(emulator: ThreadedServer) -> None:
    with pytest.raises(ConfigurationFault, match="DISPATCH_MAILGUN_API_KEY") as caught:
        mailgun_gateway(emulator.url, api_key="key-wrong").send(letter())
    assert (caught.value.code, caught.value.setting) == ("401", "DISPATCH_MAILGUN_API_KEY")
    with pytest.raises(ConfigurationFault, match="DISPATCH_MAILGUN_DOMAIN") as caught:
        mailgun_gateway(emulator.url, domain="other.example").send(letter())
    assert (caught.value.code, caught.value.setting) == ("404", "DISPATCH_MAILGUN_DOMAIN")


def test_a_refused_key_or_unknown_domain_fails_the_credential_check(emulator: ThreadedServer) -> None:
    """GET /v3/domains/{domain} (mailgun/documentation api-domains.rst): sends nothing."""
    with pytest.raises(ConfigurationFault) as caught:
        mailgun_gateway(emulator.url, api_key="key-wrong").check_credentials()
    assert str(caught.value) == "DISPATCH_MAILGUN_API_KEY was refused by mailgun (HTTP 401)"
    with pytest.raises(ConfigurationFault) as caught:
        mailgun_gateway(emulator.url, domain="other.example").check_credentials()
    assert str(caught.value) == "DISPATCH_MAILGUN_DOMAIN was refused by mailgun (HTTP 404)"


def test_scripted_unauthorized_is_a_configuration_fault(gateway: MailgunGateway, state: SandboxState) -> None:
    to = new_address()
    state.script(to, ["unauthorized"])
    with pytest.raises(ConfigurationFault) as caught:
        gateway.send(letter(to))
    assert caught.value.code == "401"
    assert state.oracle() == []


# -- Events API lookups ----------------------------------------------------------------------------


def test_fetch_status_follows_the_message_to_delivered(gateway: MailgunGateway) -> None:
    message = letter()
    receipt = gateway.send(message)
    final = wait_until(lambda: (s := gateway.fetch_status(receipt.provider_id)).kind is EventKind.DELIVERED and s)
    assert (final.provider_id, final.reference) == (receipt.provider_id, message.reference)


def test_find_by_reference_reads_every_page_before_saying_none(emulator: ThreadedServer) -> None:
    gw = mailgun_gateway(emulator.url, page_size=1)  # one event per page: paging must be followed
    for _ in range(3):
        gw.send(letter())
    assert gw.find_by_reference("dlv-never-sent") is None
    too_few_pages = mailgun_gateway(emulator.url, page_size=1, reconcile_max_pages=2)
    with pytest.raises(StatusLookupError, match="pages"):
        too_few_pages.find_by_reference("dlv-never-sent")


# -- webhooks --------------------------------------------------------------------------------------


def test_captured_delivered_and_temporary_failure(offline: MailgunGateway) -> None:
    [delivered] = offline.parse_webhook(as_request(signed(DELIVERED)))
    assert (delivered.kind, delivered.provider_id, delivered.reference, delivered.event_id) == (
        EventKind.DELIVERED,
        "20180812211713.1.DF5966851B4BAA99@example.org",
        "dlv-42",
        "hTWCTD81RtiDN-...",
    )
    assert delivered.occurred_at == datetime(2018, 8, 12, 21, 17, 17, 153125, tzinfo=UTC)
    [deferred] = offline.parse_webhook(as_request(signed(FAILED_TEMPORARY)))
    assert (deferred.kind, deferred.error_class, deferred.error_code, deferred.detail) == (
        EventKind.DEFERRED,
        "transient",
        "generic",
        "No MX for nomx.example.com",
    )


def test_signature_follows_the_documented_recipe(offline: MailgunGateway) -> None:
    # Mailgun's user manual: hex HMAC-SHA256 of timestamp + token, keyed with the webhook signing key.
    timestamp, token = str(int(time.time())), "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
    digest = hmac.new(SIGNING_KEY.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    body = json.dumps(
        {"signature": {"timestamp": timestamp, "token": token, "signature": digest}, "event-data": DELIVERED}
    ).encode()
    assert offline.parse_webhook(as_request(body))[0].kind is EventKind.DELIVERED


def test_a_reused_token_is_a_replay(offline: MailgunGateway) -> None:
    body = signed(DELIVERED, token="b" * 50)
    assert offline.parse_webhook(as_request(body))
    with pytest.raises(WebhookAuthError, match="already used"):
        offline.parse_webhook(as_request(body))


def test_an_old_webhook_received_in_time_still_verifies(offline: MailgunGateway) -> None:
    signed_at = datetime(2024, 5, 1, tzinfo=UTC)
    body = signed(DELIVERED, timestamp=int(signed_at.timestamp()))
    assert offline.parse_webhook(as_request(body, received_at=signed_at + timedelta(seconds=299)))


def test_webhooks_are_refused_without_a_signing_key() -> None:
    gw = mailgun_gateway("http://127.0.0.1:9", webhook_signing_key=None)
    with pytest.raises(WebhookAuthError, match="DISPATCH_MAILGUN_WEBHOOK_SIGNING_KEY"):
        gw.parse_webhook(as_request(signed(DELIVERED)))


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"timestamp=1&token=t&signature=s",  # legacy form posts are not supported
    ],
)
def test_bodies_that_are_not_a_signed_json_object_are_format_errors(offline: MailgunGateway, body: bytes) -> None:
    with pytest.raises(WebhookFormatError):
        offline.parse_webhook(as_request(body))


@pytest.mark.parametrize("data", [{"no": "event"}, {**DELIVERED, "message": {}}, {**DELIVERED, "timestamp": "soon"}])
def test_malformed_event_data_is_a_format_error(offline: MailgunGateway, data: dict[str, Any]) -> None:
    with pytest.raises(WebhookFormatError):
        offline.parse_webhook(as_request(signed(data)))


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., MailgunGateway]]:
    made: list[MailgunGateway] = []

    def make(
        address: str, *, read_timeout: float = 5.0, transport: httpx.BaseTransport | None = None
    ) -> MailgunGateway:
        made.append(mailgun_gateway(address, read_timeout=read_timeout, transport=transport))
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()


@pytest.fixture
def new_message() -> Callable[[], EmailMessage]:
    return letter


@pytest.fixture
def signed_document() -> Callable[[Any], WebhookRequest]:
    """A webhook whose ``event-data`` is the document, under a fresh signature block."""
    return lambda document: as_request(signed(document))


@pytest.fixture
def signed_raw() -> Callable[[bytes], WebhookRequest]:
    return as_request  # Mailgun signs inside the JSON: a body that is not JSON cannot carry a signature


@pytest.fixture
def webhook_sample() -> dict[str, Any]:
    return FAILED_TEMPORARY


@pytest.fixture
def other_event_sample() -> dict[str, Any]:
    return {**DELIVERED, "event": "opened"}


@pytest.fixture
def forged_webhooks() -> list[WebhookRequest]:
    zeroed = json.loads(signed(DELIVERED))
    zeroed["signature"]["signature"] = "0" * 64
    return [
        as_request(json.dumps(zeroed).encode()),
        as_request(signed(DELIVERED, key="the-api-key-not-the-signing-key")),
        as_request(json.dumps({"event-data": DELIVERED}).encode()),  # no signature block at all
    ]


@pytest.fixture
def stale_webhooks() -> list[WebhookRequest]:
    return [as_request(signed(DELIVERED, timestamp=int(time.time()) + skew)) for skew in (-301, 301, -86400)]


class TestContract(HttpContract, WebhookContract, ReplayContract):
    """The behaviour every gateway shares (contract.py), for Mailgun."""

    unknown_id = "no-such-message@advocacy.example"
    retry_after_exact = False  # "try again after <date>": whole seconds


EXPECTED: dict[tuple[str, str | None], tuple[EventKind, str | None] | None] = {
    ("accepted", None): (EventKind.QUEUED, None),
    ("delivered", None): (EventKind.DELIVERED, None),
    ("failed", "temporary"): (EventKind.DEFERRED, "transient"),
    ("failed", "permanent"): (EventKind.BOUNCED, "permanent"),
    ("rejected", None): (EventKind.FAILED, "permanent"),
    ("complained", None): (EventKind.COMPLAINED, "permanent"),
    ("opened", None): None,
    ("clicked", None): None,
    ("unsubscribed", None): None,
    ("stored", None): None,
}


@pytest.mark.parametrize(("key", "expected"), list(EXPECTED.items()), ids=lambda v: str(v))
def test_event_table(
    offline: MailgunGateway, key: tuple[str, str | None], expected: tuple[EventKind, str | None] | None
) -> None:
    name, severity = key
    data = {**DELIVERED, "event": name, **({"severity": severity} if severity else {})}
    events = offline.parse_webhook(as_request(signed(data)))
    assert [(e.kind, e.error_class) for e in events] == ([] if expected is None else [expected])
    assert set(EVENT_KINDS) == {name for (name, _), v in EXPECTED.items() if v is not None}
    assert set(SEVERITIES) == {severity for (_, severity) in EXPECTED if severity is not None}


# -- settings --------------------------------------------------------------------------------------


def test_missing_domain_fails_at_start_up_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPATCH_MAILGUN_DOMAIN", raising=False)
    with pytest.raises(GatewayConfigError, match="DISPATCH_MAILGUN_DOMAIN"):
        build_gateway("mailgun", api_key="k")


def test_build_gateway_defaults_to_the_real_api() -> None:
    gw = build_gateway("mailgun", api_key="k", domain=DOMAIN)
    assert isinstance(gw, MailgunGateway)
    assert (gw.channel, gw.config.base_url, gw.config.webhook_tolerance) == ("email", "https://api.mailgun.net", 300)
