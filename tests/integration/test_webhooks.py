"""Status webhooks against the real web app: signature, replay window, body limits, unknown ids, duplicates,
out-of-order and stale events, on SQLite and PostgreSQL.

Wang Yi's fax is sent through the worker path to the Telnyx emulator with a gateway that asks for no
webhooks, so every status event here is one this test signs and posts itself, exactly as Telnyx does
(Ed25519 over ``"{timestamp}|{body}"``). A refused webhook must leave the ledger untouched.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.media import media_url
from dispatcher.domain.models import Delivery, DeliveryEvent, utcnow
from dispatcher.domain.scheduling import claim_due
from dispatcher.domain.states import State
from workers.delivery import WorkerContext, deliver
from workers.gateways.fax.telnyx import TelnyxGateway, encode_reference
from workers.gateways.registry import build_gateway

from ..builders import api_headers, build_campaign
from .conftest import Sandbox, schedule_campaign, worker_context

pytestmark = pytest.mark.timeout(60)

WANG = "+861065591516"
CAMPAIGN = "north-korean-refugees-2015"


@dataclass
class Sent:
    """Wang Yi's fax, submitted to the emulator: what a webhook must name to find it."""

    delivery_id: int
    fax_id: str
    reference: str


@pytest.fixture
def quiet_engine(factory: sessionmaker[Session], sandbox: Sandbox) -> Iterator[WorkerContext]:
    """The worker path with a Telnyx gateway that sets no webhook_url: the emulator reports nothing."""
    gateway = build_gateway(
        "telnyx",
        api_key=sandbox.api_key,
        connection_id="test-connection",
        public_key=base64.b64encode(bytes(sandbox.signing_key.verify_key)).decode(),
        base_url=sandbox.fax_url,
        webhook_url=None,
    )
    yield worker_context(
        factory,
        {"fax": gateway, "email": sandbox.gateways()["email"]},
        media_url=lambda delivery_id, at: media_url(sandbox.web_url, delivery_id, secret=sandbox.secret, now=at),
    )
    gateway.close()


def send_wang(factory: sessionmaker[Session], worker: WorkerContext) -> Sent:
    """Claim Wang Yi's fax as the scheduler would and send it through the worker path."""
    with transaction(factory) as session:
        due = {d.destination: d.id for d in claim_due(session, now=utcnow() + timedelta(seconds=5), limit=100)}
    assert deliver(worker, due[WANG]) == "submitted"
    with factory() as session:
        wang = session.get(Delivery, due[WANG])
        assert wang is not None and wang.state == State.SUBMITTED and wang.provider_id
        return Sent(wang.id, wang.provider_id, wang.idempotency_key)


@pytest.fixture
def sent(factory: sessionmaker[Session], quiet_engine: WorkerContext, tmp_path: Path) -> Sent:
    schedule_campaign(factory, build_campaign(tmp_path))
    return send_wang(factory, quiet_engine)


# -- building and posting webhooks the way Telnyx does ----------------------------------------------


def fax_event(
    event_type: str, *, fax_id: str, reference: str | None, event_id: str | None = None, **payload: Any
) -> bytes:
    """A webhook body in Telnyx's documented shape (types/fax_*.py); it names the fax's number."""
    body: dict[str, Any] = {
        "data": {
            "event_type": event_type,
            "id": event_id or str(uuid.uuid4()),
            "occurred_at": utcnow().isoformat().replace("+00:00", "Z"),
            "record_type": "event",
            "payload": {
                "connection_id": "test-connection",
                "direction": "outbound",
                "fax_id": fax_id,
                "from": "+12125550143",
                "to": WANG,
                "status": event_type.removeprefix("fax."),
                "original_media_url": "https://dispatch.example/media/x.pdf",
                **payload,
            },
        },
        "meta": {"attempt": 1, "delivered_to": "https://dispatch.example/webhooks/telnyx"},
    }
    if reference is not None:
        body["data"]["payload"]["client_state"] = encode_reference(reference)
    return json.dumps(body).encode()


def signed(key: nacl.signing.SigningKey, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(stamp.encode("ascii") + b"|" + body).signature
    return {
        "telnyx-signature-ed25519": base64.b64encode(signature).decode("ascii"),
        "telnyx-timestamp": stamp,
        "content-type": "application/json",
    }


def post(
    sandbox: Sandbox, body: bytes, headers: dict[str, str] | None = None, *, gateway: str = "telnyx"
) -> httpx.Response:
    headers = signed(sandbox.signing_key, body) if headers is None else headers
    return httpx.post(f"{sandbox.web_url}/webhooks/{gateway}", content=body, headers=headers, timeout=15)


def event_count(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return session.scalar(select(func.count(DeliveryEvent.id))) or 0


def wang(factory: sessionmaker[Session], delivery_id: int) -> tuple[str, str | None]:
    with factory() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        return delivery.state, delivery.provider_id


def transitions(factory: sessionmaker[Session], delivery_id: int, to_state: str) -> int:
    with factory() as session:
        return (
            session.scalar(
                select(func.count(DeliveryEvent.id)).where(
                    DeliveryEvent.delivery_id == delivery_id,
                    DeliveryEvent.to_state == to_state,
                    DeliveryEvent.from_state != to_state,
                )
            )
            or 0
        )


def assert_refusal_logged_without_numbers(caplog: pytest.LogCaptureFixture) -> None:
    ours = [r for r in caplog.records if r.name == "dispatcher.processes.api"]
    assert ours, "the refused webhook was not logged"
    for record in caplog.records:
        assert "+86" not in record.getMessage(), record.getMessage()
        assert "+86" not in (record.exc_text or "")
    assert "+86" not in caplog.text


# -- refused: nothing is recorded ------------------------------------------------------------------


@pytest.mark.parametrize("forgery", ["other-key", "body-changed", "no-signature", "garbage-signature"])
def test_forged_signature_is_refused_and_changes_nothing(
    factory: sessionmaker[Session], sandbox: Sandbox, sent: Sent, forgery: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    body = fax_event("fax.delivered", fax_id=sent.fax_id, reference=sent.reference, page_count=2)
    if forgery == "other-key":
        headers = signed(nacl.signing.SigningKey.generate(), body)
    elif forgery == "body-changed":  # signed by Telnyx's key, then altered on the way
        headers = signed(sandbox.signing_key, body)
        body = body.replace(b'"page_count": 2', b'"page_count": 3')
    elif forgery == "no-signature":
        headers = {"content-type": "application/json", "telnyx-timestamp": str(int(time.time()))}
    else:
        headers = {**signed(sandbox.signing_key, body), "telnyx-signature-ed25519": "not base64!"}
    before = event_count(factory)
    response = post(sandbox, body, headers)
    assert response.status_code == 403, response.text
    assert event_count(factory) == before
    assert wang(factory, sent.delivery_id) == (State.SUBMITTED, sent.fax_id)
    assert_refusal_logged_without_numbers(caplog)


@pytest.mark.parametrize("skew", [-3600, -301, 3600])
def test_stale_or_future_timestamp_is_refused_as_a_replay(
    factory: sessionmaker[Session], sandbox: Sandbox, sent: Sent, skew: int, caplog: pytest.LogCaptureFixture
) -> None:
    body = fax_event("fax.delivered", fax_id=sent.fax_id, reference=sent.reference)
    before = event_count(factory)
    response = post(sandbox, body, signed(sandbox.signing_key, body, timestamp=int(time.time()) + skew))
    assert response.status_code == 403
    assert "replay" in response.json()["error"]
    assert event_count(factory) == before
    assert wang(factory, sent.delivery_id) == (State.SUBMITTED, sent.fax_id)
    assert_refusal_logged_without_numbers(caplog)


def test_timestamp_within_tolerance_is_accepted(factory: sessionmaker[Session], sandbox: Sandbox, sent: Sent) -> None:
    body = fax_event("fax.delivered", fax_id=sent.fax_id, reference=sent.reference)
    response = post(sandbox, body, signed(sandbox.signing_key, body, timestamp=int(time.time()) - 240))
    assert response.status_code == 200
    assert wang(factory, sent.delivery_id)[0] == State.DELIVERED


@pytest.mark.parametrize("body", [b"{not json", b"", "\u4e60".encode("utf-16"), b'["a list"]', b'{"data": 7}'])
def test_malformed_body_is_a_400_and_changes_nothing(
    factory: sessionmaker[Session], sandbox: Sandbox, sent: Sent, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    before = event_count(factory)
    response = post(sandbox, body)  # correctly signed: only the content is wrong
    assert response.status_code == 400
    assert event_count(factory) == before
    assert_refusal_logged_without_numbers(caplog)


def test_fax_event_without_fax_id_is_a_400(factory: sessionmaker[Session], sandbox: Sandbox, sent: Sent) -> None:
    body = json.loads(fax_event("fax.delivered", fax_id="x", reference=sent.reference))
    del body["data"]["payload"]["fax_id"]
    before = event_count(factory)
    assert post(sandbox, json.dumps(body).encode()).status_code == 400
    assert event_count(factory) == before


def test_oversize_body_is_a_413(factory: sessionmaker[Session], sandbox: Sandbox, sent: Sent) -> None:
    padding = "x" * TelnyxGateway.max_webhook_bytes
    body = fax_event("fax.delivered", fax_id=sent.fax_id, reference=sent.reference, padding=padding)
    assert len(body) > TelnyxGateway.max_webhook_bytes
    before = event_count(factory)
    assert post(sandbox, body).status_code == 413  # refused by its declared Content-Length

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams in
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = httpx.post(
        f"{sandbox.web_url}/webhooks/telnyx", content=chunks(), headers=signed(sandbox.signing_key, body), timeout=15
    )
    assert response.status_code == 413
    assert event_count(factory) == before
    assert wang(factory, sent.delivery_id) == (State.SUBMITTED, sent.fax_id)


def test_unknown_gateway_is_a_404(factory: sessionmaker[Session], sandbox: Sandbox, sent: Sent) -> None:
    body = fax_event("fax.delivered", fax_id=sent.fax_id, reference=sent.reference)
    before = event_count(factory)
    response = post(sandbox, body, gateway="phaxio")
    assert response.status_code == 404
    assert event_count(factory) == before
    assert wang(factory, sent.delivery_id)[0] == State.SUBMITTED


@pytest.mark.parametrize("reference", [None, "no-such-reference"])
def test_unknown_fax_id_and_reference_is_a_404(
    factory: sessionmaker[Session],
    sandbox: Sandbox,
    sent: Sent,
    reference: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = fax_event("fax.failed", fax_id=str(uuid.uuid4()), reference=reference, failure_reason="user_busy")
    before = event_count(factory)
    response = post(sandbox, body)
    assert response.status_code == 404
    assert response.json() == {"unmatched": 1}
    assert event_count(factory) == before
    assert wang(factory, sent.delivery_id) == (State.SUBMITTED, sent.fax_id)
    assert_refusal_logged_without_numbers(caplog)


def test_other_event_types_are_acknowledged_and_ignored(
    factory: sessionmaker[Session], sandbox: Sandbox, sent: Sent
) -> None:
    before = event_count(factory)
    response = post(sandbox, fax_event("fax.received", fax_id=sent.fax_id, reference=sent.reference))
    assert response.status_code == 200 and response.json() == {}
    assert event_count(factory) == before


# -- accepted: one transition per fact, never backwards, never from an older attempt ------------------


def test_the_same_delivered_event_twice_is_one_transition(
    factory: sessionmaker[Session], sandbox: Sandbox, sent: Sent
) -> None:
    body = fax_event("fax.delivered", fax_id=sent.fax_id, reference=sent.reference, page_count=2, call_duration_secs=61)
    first = post(sandbox, body)
    assert (first.status_code, first.json()) == (200, {"applied": 1})
    after_first = event_count(factory)
    second = post(sandbox, body)  # Telnyx redelivers: same event id, freshly signed
    assert (second.status_code, second.json()) == (200, {"duplicate": 1})
    assert event_count(factory) == after_first
    assert transitions(factory, sent.delivery_id, State.DELIVERED) == 1
    assert wang(factory, sent.delivery_id) == (State.DELIVERED, sent.fax_id)
    with factory() as session:
        reason = session.scalars(
            select(DeliveryEvent.reason).where(
                DeliveryEvent.delivery_id == sent.delivery_id, DeliveryEvent.to_state == State.DELIVERED
            )
        ).one()
    assert "2 pages" in reason and "61s call" in reason


def test_a_late_sending_started_never_downgrades_delivered(
    factory: sessionmaker[Session], sandbox: Sandbox, sent: Sent
) -> None:
    delivered = post(sandbox, fax_event("fax.delivered", fax_id=sent.fax_id, reference=sent.reference))
    assert delivered.json() == {"applied": 1}
    before = event_count(factory)
    for late in ("fax.sending.started", "fax.media.processed", "fax.queued"):
        response = post(sandbox, fax_event(late, fax_id=sent.fax_id, reference=sent.reference))
        assert (response.status_code, response.json()) == (200, {"stale": 1}), late
    assert wang(factory, sent.delivery_id)[0] == State.DELIVERED
    assert event_count(factory) == before
    assert transitions(factory, sent.delivery_id, State.DELIVERED) == 1


def test_progress_before_delivery_is_noted_without_a_transition(
    factory: sessionmaker[Session], sandbox: Sandbox, sent: Sent
) -> None:
    response = post(sandbox, fax_event("fax.sending.started", fax_id=sent.fax_id, reference=sent.reference))
    assert response.json() == {"noted": 1}
    assert wang(factory, sent.delivery_id)[0] == State.SUBMITTED
    assert transitions(factory, sent.delivery_id, State.SUBMITTED) == 1  # only the worker's receipt


def test_a_failure_of_an_earlier_attempt_is_stale(
    factory: sessionmaker[Session], sandbox: Sandbox, quiet_engine: WorkerContext, sent: Sent
) -> None:
    busy = post(
        sandbox, fax_event("fax.failed", fax_id=sent.fax_id, reference=sent.reference, failure_reason="user_busy")
    )
    assert busy.json() == {"applied": 1}
    assert wang(factory, sent.delivery_id)[0] == State.RETRY_WAIT

    retried = send_wang(factory, quiet_engine)  # attempt 2, same delivery and reference, a new fax id
    assert (retried.delivery_id, retried.reference) == (sent.delivery_id, sent.reference)
    assert retried.fax_id != sent.fax_id
    before = event_count(factory)

    # the first fax's busy signal, reported again late (a new event id, so not a mere duplicate)
    late = post(
        sandbox, fax_event("fax.failed", fax_id=sent.fax_id, reference=sent.reference, failure_reason="user_busy")
    )
    assert (late.status_code, late.json()) == (200, {"stale": 1})
    assert wang(factory, sent.delivery_id) == (State.SUBMITTED, retried.fax_id)
    assert event_count(factory) == before
    assert transitions(factory, sent.delivery_id, State.RETRY_WAIT) == 1

    # the current attempt's own report still lands
    done = post(sandbox, fax_event("fax.delivered", fax_id=retried.fax_id, reference=sent.reference))
    assert done.json() == {"applied": 1}
    assert wang(factory, sent.delivery_id) == (State.DELIVERED, retried.fax_id)


def test_an_earlier_attempts_failure_arriving_mid_send_is_stale(
    factory: sessionmaker[Session], sandbox: Sandbox, quiet_engine: WorkerContext, sent: Sent
) -> None:
    """Between the claim of attempt 2 and its receipt the row has no provider id: Attempt rows decide."""
    post(sandbox, fax_event("fax.failed", fax_id=sent.fax_id, reference=sent.reference, failure_reason="user_busy"))
    arrived: list[httpx.Response] = []

    def late_busy(_delivery_id: int) -> None:  # runs after the claim is committed, before the send
        arrived.append(
            post(
                sandbox,
                fax_event("fax.failed", fax_id=sent.fax_id, reference=sent.reference, failure_reason="user_busy"),
            )
        )

    quiet_engine.hooks["after_claim"] = late_busy
    retried = send_wang(factory, quiet_engine)
    assert [(r.status_code, r.json()) for r in arrived] == [(200, {"stale": 1})]
    assert wang(factory, sent.delivery_id) == (State.SUBMITTED, retried.fax_id)
    assert transitions(factory, sent.delivery_id, State.RETRY_WAIT) == 1


def test_deliveries_api_shows_what_the_webhooks_recorded(
    factory: sessionmaker[Session], sandbox: Sandbox, sent: Sent
) -> None:
    post(sandbox, fax_event("fax.delivered", fax_id=sent.fax_id, reference=sent.reference))
    headers = api_headers(factory)
    assert httpx.get(f"{sandbox.web_url}/api/campaigns/{CAMPAIGN}/deliveries", timeout=15).status_code == 401
    response = httpx.get(f"{sandbox.web_url}/api/campaigns/{CAMPAIGN}/deliveries", headers=headers, timeout=15)
    assert response.status_code == 200
    assert response.json()["next"] is None  # a page of at most 100 holds them all
    rows = {row["id"]: row for row in response.json()["items"]}
    assert (rows[sent.delivery_id]["state"], rows[sent.delivery_id]["attempts"]) == ("delivered", 1)
    with factory() as session:
        assert set(rows) == set(session.scalars(select(Delivery.id)))
    missing = httpx.get(f"{sandbox.web_url}/api/campaigns/no-such-campaign/deliveries", headers=headers, timeout=15)
    assert missing.status_code == 404
    assert CAMPAIGN not in missing.text  # the 404 does not list the campaigns that do exist
