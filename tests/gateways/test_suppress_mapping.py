"""Which provider reports call for suppressing the address (StatusEvent.suppress), per each email provider's
documented webhook fields, signed as the provider signs them and parsed by the real gateways. What the
ledger does with it, end to end through the emulators: tests/integration/test_suppression_webhooks.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI

from dispatcher.domain.messages import EmailMessage, EventKind, StatusEvent, WebhookRequest
from workers.gateways.base import Gateway
from workers.gateways.registry import build_gateway
from workers.sandbox import mailgun as mailgun_sandbox
from workers.sandbox import postmark as postmark_sandbox
from workers.sandbox import sendgrid as sendgrid_sandbox
from workers.sandbox.core import SandboxState
from workers.sandbox.server import serve

from ..signed_webhooks import MAILGUN_KEY, SENDGRID_KEY, SETTINGS, gateways, signed
from .receivers import wait_until

GATEWAYS: dict[str, Gateway] = gateways()
NOW = datetime.now(UTC)


def parse(name: str, document: Any) -> list[tuple[EventKind, str | None, str | None]]:
    body, headers = signed(name, document)
    request = WebhookRequest(
        method="POST",
        url=f"https://dispatch.example/webhooks/{name}",
        headers={k.lower(): v for k, v in headers.items()},
        body=body,
        received_at=datetime.now(UTC),
    )
    return [(e.kind, e.error_class, e.suppress) for e in GATEWAYS[name].parse_webhook(request)]


def postmark(record_type: str, bounce_type: str) -> dict[str, Any]:
    """A Bounce or SpamComplaint webhook (postmarkapp.com/developer/webhooks)."""
    return {
        "RecordType": record_type,
        "ID": 42,
        "Type": bounce_type,
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Email": "someone@example.org",
        "BouncedAt": "2026-11-30T09:00:00Z",
        "Metadata": {"reference": "dabc"},
    }


@pytest.mark.parametrize(
    ("record_type", "bounce_type", "expected"),
    [
        ("Bounce", "HardBounce", (EventKind.BOUNCED, "permanent", "hard-bounce")),
        ("Bounce", "BadEmailAddress", (EventKind.BOUNCED, "permanent", "hard-bounce")),
        ("Bounce", "SoftBounce", (EventKind.BOUNCED, "transient", None)),
        ("Bounce", "Transient", (EventKind.DEFERRED, "transient", None)),
        ("Bounce", "DnsError", (EventKind.DEFERRED, "transient", None)),
        ("Bounce", "Blocked", (EventKind.BOUNCED, "permanent", None)),  # the receiving ISP's policy
        ("Bounce", "DMARCPolicy", (EventKind.BOUNCED, "permanent", None)),  # our sender domain's
        ("Bounce", "SpamNotification", (EventKind.COMPLAINED, "permanent", None)),  # a filter, not the person
        ("SpamComplaint", "SpamComplaint", (EventKind.COMPLAINED, "permanent", "complaint")),
    ],
)
def test_postmark(record_type: str, bounce_type: str, expected: tuple[EventKind, str, str | None]) -> None:
    assert parse("postmark", postmark(record_type, bounce_type)) == [expected]


def sendgrid(event: str, **fields: Any) -> list[dict[str, Any]]:
    """One Event Webhook event (twilio.com/docs/sendgrid/for-developers/tracking-events/event)."""
    base = {
        "email": "someone@example.org",
        "timestamp": int(NOW.timestamp()),
        "event": event,
        "sg_event_id": "sg-event-1",
        "sg_message_id": "14c5d75ce93.filter0",
        "reference": "dabc",
    }
    return [{**base, **fields}]


@pytest.mark.parametrize(
    ("event", "fields", "expected"),
    [
        ("bounce", {"type": "bounce", "status": "5.1.1"}, (EventKind.BOUNCED, "permanent", "hard-bounce")),
        ("bounce", {"type": "blocked", "status": "4.2.2"}, (EventKind.BOUNCED, "transient", None)),
        ("dropped", {"reason": "Bounced Address"}, (EventKind.FAILED, "permanent", "hard-bounce")),
        ("dropped", {"reason": "Invalid"}, (EventKind.FAILED, "permanent", "hard-bounce")),
        ("dropped", {"reason": "Spam Reporting Address"}, (EventKind.FAILED, "permanent", "complaint")),
        ("dropped", {"reason": "Unsubscribed Address"}, (EventKind.FAILED, "permanent", None)),
        ("dropped", {"reason": "Spam Content"}, (EventKind.FAILED, "permanent", None)),
        ("deferred", {"response": "452 4.2.2 over quota"}, (EventKind.DEFERRED, "transient", None)),
        ("spamreport", {}, (EventKind.COMPLAINED, "permanent", "complaint")),
    ],
)
def test_sendgrid(event: str, fields: dict[str, Any], expected: tuple[EventKind, str, str | None]) -> None:
    assert parse("sendgrid", sendgrid(event, **fields)) == [expected]


def mailgun(event: str, **fields: Any) -> dict[str, Any]:
    """One webhook's event-data (mailgun/documentation user_manual.rst, "Webhooks")."""
    data = {
        "event": event,
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": NOW.timestamp(),
        "recipient": "someone@example.org",
        "message": {"headers": {"message-id": "20261130090000.1.ABC@mg.example"}},
        "user-variables": {"reference": "dabc"},
    }
    return {"event-data": {**data, **fields}}


@pytest.mark.parametrize(
    ("event", "fields", "expected"),
    [
        ("failed", {"severity": "permanent", "reason": "bounce"}, (EventKind.BOUNCED, "permanent", "hard-bounce")),
        (
            "failed",
            {"severity": "permanent", "reason": "suppress-bounce"},
            (EventKind.BOUNCED, "permanent", "hard-bounce"),
        ),
        (
            "failed",
            {"severity": "permanent", "reason": "suppress-complaint"},
            (EventKind.BOUNCED, "permanent", "complaint"),
        ),
        ("failed", {"severity": "permanent", "reason": "old"}, (EventKind.BOUNCED, "permanent", None)),
        ("failed", {"severity": "permanent", "reason": "espblock"}, (EventKind.BOUNCED, "permanent", None)),
        ("failed", {"severity": "temporary", "reason": "generic"}, (EventKind.DEFERRED, "transient", None)),
        ("complained", {}, (EventKind.COMPLAINED, "permanent", "complaint")),
    ],
)
def test_mailgun(event: str, fields: dict[str, Any], expected: tuple[EventKind, str, str | None]) -> None:
    assert parse("mailgun", mailgun(event, **fields)) == [expected]


# -- the same through status look-ups (reconciliation and polls), against the emulators ------------------


def emulator(name: str, state: SandboxState) -> FastAPI:
    if name == "postmark":
        return postmark_sandbox.create_app(state, server_token=SETTINGS[name]["server_token"])
    if name == "sendgrid":
        return sendgrid_sandbox.create_app(state, api_key=SETTINGS[name]["api_key"], signing_key=SENDGRID_KEY)
    return mailgun_sandbox.create_app(
        state, api_key=SETTINGS[name]["api_key"], domain=SETTINGS[name]["domain"], webhook_signing_key=MAILGUN_KEY
    )


@pytest.mark.parametrize("name", ["postmark", "sendgrid", "mailgun"])
def test_a_hard_bounce_found_by_a_status_lookup_suppresses_too(name: str) -> None:
    state = SandboxState(provider=name, webhook_delay=0.01)
    address = f"gone-{name}@example.org"
    state.script(address, ["bounce"])
    with serve(emulator(name, state)) as server:
        gateway = build_gateway(name, **{**SETTINGS[name], "base_url": server.url})
        reference = f"d{name}0000000000000000000000000"
        message = EmailMessage(
            sender="Campaign Desk <desk@advocacy.example>",
            to=[address],
            subject="Your copy",
            text="Dear supporter,",
            reference=reference,
            message_id=f"<{reference}@advocacy.example>",
        )
        receipt = gateway.send(message)

        def bounced() -> StatusEvent | None:
            event = gateway.fetch_status(receipt.provider_id)
            return event if event.kind is EventKind.BOUNCED else None

        event: StatusEvent = wait_until(bounced)
    assert (event.error_class, event.suppress) == ("permanent", "hard-bounce")
