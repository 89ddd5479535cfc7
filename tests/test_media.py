"""Signed, expiring document URLs: the token itself, and ``/media/<token>.pdf`` served by the real web app
after a fax was sent through the worker path to the Telnyx emulator (which fetches the same URL)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.media import MediaTokenError, make_token, media_url, read_token
from dispatcher.domain.models import Delivery, utcnow
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.scheduling import claim_due
from workers.delivery import WorkerContext, deliver

from .builders import build_campaign
from .integration import conftest as integration
from .integration.conftest import Sandbox, schedule_campaign

# the worker tests' fixtures, shared here: the Telnyx emulator, the SMTP sink and our web app on real ports
sandbox, worker = integration.sandbox, integration.worker

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2024, 3, 15, 10, 0, tzinfo=UTC)
WANG, GUO_EMAIL = "+861065591516", "gabzfwz@mps.gov.cn"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- tokens ----------------------------------------------------------------------------------------


def test_round_trip() -> None:
    token = make_token(42, secret=SECRET, now=NOW)
    assert read_token(token, secret=SECRET, now=NOW) == 42
    assert read_token(token, secret=SECRET, now=NOW + timedelta(hours=5, minutes=59)) == 42
    assert "42" not in token.split(".")[1]  # the signature part is not the id


def test_url_carries_a_token_for_the_delivery() -> None:
    url = media_url("https://dispatch.example/", 7, secret=SECRET, now=NOW)
    assert url.startswith("https://dispatch.example/media/") and url.endswith(".pdf")
    token = url.removeprefix("https://dispatch.example/media/").removesuffix(".pdf")
    assert read_token(token, secret=SECRET, now=NOW) == 7


def test_forged_signature_is_refused() -> None:
    forged = make_token(42, secret=b"not-our-secret", now=NOW)
    with pytest.raises(MediaTokenError, match="signature"):
        read_token(forged, secret=SECRET, now=NOW)


def test_tampered_delivery_id_is_refused() -> None:
    payload, signature = make_token(42, secret=SECRET, now=NOW).split(".")
    _, expires = _unb64(payload).decode().split(":")
    tampered = f"{_b64(f'43:{expires}'.encode())}.{signature}"  # another delivery, the old signature
    with pytest.raises(MediaTokenError, match="signature"):
        read_token(tampered, secret=SECRET, now=NOW)


def test_extended_expiry_is_refused() -> None:
    _, signature = make_token(42, secret=SECRET, now=NOW).split(".")
    later = int((NOW + timedelta(days=365)).timestamp())
    with pytest.raises(MediaTokenError, match="signature"):
        read_token(f"{_b64(f'42:{later}'.encode())}.{signature}", secret=SECRET, now=NOW + timedelta(days=2))


def test_expired_token_is_refused() -> None:
    token = make_token(42, secret=SECRET, now=NOW, ttl=timedelta(minutes=10))
    assert read_token(token, secret=SECRET, now=NOW + timedelta(minutes=9)) == 42
    with pytest.raises(MediaTokenError, match="expired"):
        read_token(token, secret=SECRET, now=NOW + timedelta(minutes=11))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "no-dot",
        ".",
        "!!!.???",
        f"{_b64(b'abc')}.{_b64(b'sig')}",
        f"{_b64(bytes([0xFF, 0xFE]))}.{_b64(b'x')}",
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(MediaTokenError):
        read_token(token, secret=SECRET, now=NOW)


def test_well_signed_but_unparsable_payload_is_malformed() -> None:
    payload = b"not-a-number:soon"
    token = f"{_b64(payload)}.{_b64(hmac.new(SECRET, payload, hashlib.sha256).digest())}"
    with pytest.raises(MediaTokenError, match="malformed"):
        read_token(token, secret=SECRET, now=NOW)


# -- through the web app ---------------------------------------------------------------------------


def send_wang_fax(factory: sessionmaker[Session], worker: WorkerContext, tmp_path: Path) -> int:
    """Load the (fixed) example campaign and send Wang Yi's fax through the worker path."""
    path = build_campaign(tmp_path)
    schedule_campaign(factory, path)
    with transaction(factory) as session:
        ids = {d.destination: d.id for d in claim_due(session, now=utcnow(), limit=100)}
    assert deliver(worker, ids[WANG]) == "submitted"
    return ids[WANG]


def test_valid_token_serves_the_pdf_that_was_sent(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    delivery_id = send_wang_fax(factory, worker, tmp_path)
    with factory() as session:
        recorded = session.scalars(select(Delivery.document_sha256).where(Delivery.id == delivery_id)).one()
    assert recorded is not None and len(recorded) == 64

    url = media_url(sandbox.web_url, delivery_id, secret=sandbox.secret, now=utcnow())
    response = httpx.get(url, timeout=15)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    assert hashlib.sha256(response.content).hexdigest() == recorded


@pytest.mark.parametrize("kind", ["expired", "forged", "tampered"])
def test_expired_or_forged_token_is_forbidden(
    factory: sessionmaker[Session],
    worker: WorkerContext,
    sandbox: Sandbox,
    tmp_path: Path,
    kind: str,
) -> None:
    delivery_id = send_wang_fax(factory, worker, tmp_path)
    if kind == "expired":
        token = make_token(
            delivery_id, secret=sandbox.secret, now=utcnow() - timedelta(hours=1), ttl=timedelta(minutes=30)
        )
    elif kind == "forged":
        token = make_token(delivery_id, secret=b"an attacker's guess", now=utcnow())
    else:
        other = make_token(delivery_id + 1, secret=sandbox.secret, now=utcnow())
        _, signature = make_token(delivery_id, secret=sandbox.secret, now=utcnow()).split(".")
        token = f"{other.split('.')[0]}.{signature}"  # someone else's delivery under our signature
    response = httpx.get(f"{sandbox.web_url}/media/{token}.pdf", timeout=15)
    assert response.status_code == 403
    assert not response.content.startswith(b"%PDF")


def test_token_for_a_non_fax_delivery_serves_nothing(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    send_wang_fax(factory, worker, tmp_path)
    with factory() as session:
        email_id = session.scalars(select(Delivery.id).where(Delivery.destination == GUO_EMAIL)).one()
    for delivery_id in (email_id, 10_000_000):  # an email delivery, and no delivery at all
        response = httpx.get(media_url(sandbox.web_url, delivery_id, secret=sandbox.secret, now=utcnow()), timeout=15)
        assert response.status_code == 404


def test_web_serves_the_recorded_bytes_again_and_again(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    delivery_id = send_wang_fax(factory, worker, tmp_path)  # the emulator fetched it once already
    with factory() as session:
        recorded = session.scalars(select(Delivery.document_sha256).where(Delivery.id == delivery_id)).one()
    url = media_url(sandbox.web_url, delivery_id, secret=sandbox.secret, now=utcnow())
    served = [httpx.get(url, timeout=15).content for _ in range(3)]
    assert [hashlib.sha256(pdf).hexdigest() for pdf in served] == [recorded] * 3


def test_a_fax_document_is_rendered_once_and_kept_bounded(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    wang = send_wang_fax(factory, worker, tmp_path)
    documents = DocumentCache(max_faxes=1)
    with factory() as session:
        first = session.get(Delivery, wang)
        other = session.scalars(
            select(Delivery).where(Delivery.channel == "fax", Delivery.id != wang).order_by(Delivery.id).limit(1)
        ).one()
        assert first is not None
        kept = documents.fax_document(first)
        assert documents.fax_document(first) is kept  # served from memory, not rendered again
        assert kept.sha256 == first.document_sha256
        documents.fax_document(other)  # the only place goes to another delivery's fax
        again = documents.fax_document(first)
        assert again is not kept and again.pdf == kept.pdf
