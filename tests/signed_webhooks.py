"""Status webhooks of every gateway, signed as each provider (and its emulator) signs them.

``gateways()`` builds the six webhook gateways with the credentials below; ``sample(name, ...)`` is a
"delivered" report in that provider's documented shape naming a provider id and our reference;
``signed(name, body)`` gives the body and headers to POST to ``/webhooks/<name>``:

- telnyx: Ed25519 over ``"{timestamp}|{body}"`` (the Telnyx emulator's ``sign``);
- sendgrid: ECDSA P-256 over ``timestamp + body`` (``workers.sandbox.sendgrid.sign``);
- mailgun: an HMAC signature block inside the JSON (``workers.sandbox.mailgun.signature_block``);
- phaxio: HMAC-SHA1 over our callback URL and the form fields (``workers.gateways.fax.phaxio.signature``,
  which the Phaxio emulator uses);
- postmark and sinch: the Basic credentials their emulators take from the webhook URL.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import control
from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Delivery
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.scheduling import claim_due
from dispatcher.domain.states import State
from dispatcher.domain.validation import validate
from workers.gateways.base import Gateway
from workers.gateways.fax.phaxio import signature as phaxio_signature
from workers.gateways.fax.telnyx import encode_reference
from workers.gateways.registry import build_gateway
from workers.sandbox.core import SandboxState
from workers.sandbox.mailgun import signature_block
from workers.sandbox.sendgrid import public_key_b64
from workers.sandbox.sendgrid import sign as sendgrid_sign
from workers.sandbox.telnyx import TelnyxEmulator

WEBHOOK_GATEWAYS = ("mailgun", "phaxio", "postmark", "sendgrid", "sinch", "telnyx")  # smtp sends no webhooks
FAX_GATEWAYS = ("phaxio", "sinch", "telnyx")

TELNYX_KEY = nacl.signing.SigningKey(b"\x07" * 32)
SENDGRID_KEY = ec.derive_private_key(0x5EED, ec.SECP256R1())
MAILGUN_KEY = "mailgun-webhook-signing-key"
PHAXIO_TOKEN = "phaxio-callback-token"
PHAXIO_URL = "https://dispatch.example/webhooks/phaxio"  # the callback URL Phaxio signs
HOOK_USER, HOOK_PASSWORD = "hooks", "hook-password"  # Postmark's and Sinch's webhook credentials

_TELNYX = TelnyxEmulator(
    SandboxState(provider="telnyx"), api_key="unused", signing_key=TELNYX_KEY, default_webhook_url=None
)

SETTINGS: dict[str, dict[str, str]] = {
    "smtp": {"host": "127.0.0.1"},
    "postmark": {"server_token": "t", "webhook_username": HOOK_USER, "webhook_password": HOOK_PASSWORD},
    "sendgrid": {"api_key": "k", "webhook_public_key": public_key_b64(SENDGRID_KEY)},
    "mailgun": {"api_key": "k", "domain": "mg.example", "webhook_signing_key": MAILGUN_KEY},
    "telnyx": {
        "api_key": "k",
        "connection_id": "1",
        "public_key": base64.b64encode(bytes(TELNYX_KEY.verify_key)).decode(),
    },
    "sinch": {
        "project_id": "p",
        "key_id": "k",
        "key_secret": "s",
        "callback_username": HOOK_USER,
        "callback_password": HOOK_PASSWORD,
    },
    "phaxio": {"api_key": "k", "api_secret": "s", "callback_token": PHAXIO_TOKEN, "callback_url": PHAXIO_URL},
}


def gateways() -> dict[str, Gateway]:
    """Every gateway by name, as the web app holds them, able to verify the webhooks signed here."""
    return {name: build_gateway(name, **values) for name, values in SETTINGS.items()}


def provider_id_for(name: str) -> str:
    """A fresh provider id in the provider's own format (Phaxio's are integers)."""
    if name == "phaxio":
        return str(uuid.uuid4().int % 10**9)
    if name == "mailgun":
        return f"{uuid.uuid4().hex}@mg.example"
    return str(uuid.uuid4())


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def sample(name: str, *, provider_id: str, reference: str | None) -> Any:
    """A "delivered" report of ``name``'s provider about ``provider_id``, carrying ``reference``."""
    now = datetime.now(UTC)
    if name == "telnyx":
        payload: dict[str, Any] = {"fax_id": provider_id, "status": "delivered", "page_count": 1}
        if reference is not None:
            payload["client_state"] = encode_reference(reference)
        data = {"event_type": "fax.delivered", "id": str(uuid.uuid4()), "occurred_at": _iso(now), "payload": payload}
        return {"data": {**data, "record_type": "event"}, "meta": {"attempt": 1}}
    if name == "sinch":
        fax = {"id": provider_id, "status": "COMPLETED", "completedTime": _iso(now), "numberOfPages": 1}
        return {"event": "FAX_COMPLETED", "eventTime": _iso(now), "fax": _with(fax, "labels", reference)}
    if name == "phaxio":
        fax = {"id": int(provider_id), "status": "success", "completed_at": _iso(now), "num_pages": 1}
        return {"event_type": "fax_completed", "fax": _with(fax, "tags", reference)}
    if name == "postmark":
        message = {"RecordType": "Delivery", "MessageID": provider_id, "DeliveredAt": _iso(now)}
        return _with(message, "Metadata", reference)
    if name == "sendgrid":
        event = {"event": "delivered", "timestamp": int(now.timestamp()), "sg_message_id": f"{provider_id}.filter0"}
        event["sg_event_id"] = str(uuid.uuid4())
        return [{**event, "reference": reference} if reference is not None else event]
    if name == "mailgun":
        data = {
            "event": "delivered",
            "id": str(uuid.uuid4()),
            "timestamp": now.timestamp(),
            "message": {"headers": {"message-id": provider_id}},
        }
        return {"event-data": _with(data, "user-variables", reference)}
    raise ValueError(f"no webhook sample for {name!r}")


def _with(document: dict[str, Any], field: str, reference: str | None) -> dict[str, Any]:
    return document if reference is None else {**document, field: {"reference": reference}}


def signed(name: str, document: Any) -> tuple[bytes, dict[str, str]]:
    """Body and headers of ``document`` posted by ``name``'s provider.

    ``document`` is JSON data, or raw bytes (posted as they are, signed where the signature does not
    live inside the body). For Phaxio, a dict is sent as form fields (a value that is not text as JSON),
    anything else as the single field ``fax``."""
    if name == "phaxio":
        return _phaxio(document)
    if name == "mailgun":
        if isinstance(document, dict):
            document = {**document, "signature": signature_block(MAILGUN_KEY)}
        return _bytes(document), {"content-type": "application/json"}
    body = _bytes(document)
    if name == "telnyx":
        return body, _TELNYX.sign(body)
    if name == "sendgrid":
        return body, sendgrid_sign(SENDGRID_KEY, body)
    if name in ("postmark", "sinch"):
        token = base64.b64encode(f"{HOOK_USER}:{HOOK_PASSWORD}".encode()).decode()
        return body, {"authorization": f"Basic {token}", "content-type": "application/json"}
    raise ValueError(f"no webhook signing for {name!r}")


def _bytes(document: Any) -> bytes:
    return document if isinstance(document, bytes) else json.dumps(document).encode()


def _encodable(value: str) -> bool:
    """Whether ``value`` can travel as UTF-8 (a lone surrogate cannot): else it is sent as JSON."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _field(name: object) -> str:
    return str(name) if _encodable(str(name)) else json.dumps(str(name))


def _phaxio(document: Any) -> tuple[bytes, dict[str, str]]:
    if isinstance(document, bytes):  # a raw body, signed as a webhook without parameters would be
        headers = {"content-type": "multipart/form-data; boundary=raw"}
        return document, {**headers, "x-phaxio-signature": phaxio_signature(PHAXIO_TOKEN, PHAXIO_URL, [])}
    items = document.items() if isinstance(document, dict) else [("fax", document)]
    fields = {_field(k): v if isinstance(v, str) and _encodable(v) else json.dumps(v) for k, v in items}
    if not fields:
        return _phaxio(b"--raw--\r\n")  # a multipart body without parts
    request = httpx.Request("POST", PHAXIO_URL, files={k: (None, v) for k, v in fields.items()})
    headers = {
        "content-type": request.headers["content-type"],
        "x-phaxio-signature": phaxio_signature(PHAXIO_TOKEN, PHAXIO_URL, list(fields.items())),
    }
    return request.read(), headers


@dataclass(frozen=True)
class Submitted:
    """A delivery handed to one gateway: what a webhook of that provider names it by."""

    delivery_id: int
    gateway: str
    provider_id: str
    reference: str


# the campaign's supporter copies go with the letters, so that every delivery is due at once
AT_DISPATCH = {"supporters": {"copies": "at-dispatch"}}


def submit_one_per_gateway(
    factory: sessionmaker[Session], campaign_file: Path, *, state: State = State.SUBMITTED
) -> dict[str, Submitted]:
    """Load and schedule ``campaign_file`` (three faxes and three emails, all routes due at once: all-routes,
    copies at dispatch, see AT_DISPATCH) and
    claim every delivery for its own gateway: faxes for Phaxio, Sinch and Telnyx, emails for Mailgun,
    Postmark and SendGrid. Then leave it in ``state``: ``sending`` (no receipt yet) or ``unknown`` (no
    provider id: the outcome is to be reconciled), or ``submitted`` with a provider id in its
    provider's format."""
    spec = load_spec(campaign_file)
    report = validate(spec, file=campaign_file)
    now = datetime.now(UTC)
    with transaction(factory) as session:
        load_campaign(session, spec, report, source=campaign_file)
        control.schedule(session, spec.campaign.name, now=now)
        claim_due(session, now=now + timedelta(seconds=1), limit=100)
    names = {"fax": list(FAX_GATEWAYS), "email": [g for g in WEBHOOK_GATEWAYS if g not in FAX_GATEWAYS]}
    submitted: dict[str, Submitted] = {}
    with transaction(factory) as session:
        ledger = SqlLedger(session)
        for delivery in session.scalars(select(Delivery).order_by(Delivery.id)):
            name = names[delivery.channel].pop(0)
            # claimed a minute ago: a report stamped in whole seconds (SendGrid) is not older than the attempt
            claimed = now - timedelta(minutes=1)
            lease = now + timedelta(minutes=15)
            assert ledger.claim(delivery, actor="test", at=claimed, lease_until=lease, gateway=name, reports=True)
            session.refresh(delivery)
            provider_id = provider_id_for(name)
            if state == State.SUBMITTED:
                ledger.identify(delivery, provider_id)
            if state != State.SENDING:
                ledger.move(delivery, state, actor="test", at=now, provider_id=delivery.provider_id, reason=state)
            submitted[name] = Submitted(delivery.id, name, provider_id, delivery.idempotency_key)
    assert sorted(submitted) == sorted(WEBHOOK_GATEWAYS)
    return submitted
