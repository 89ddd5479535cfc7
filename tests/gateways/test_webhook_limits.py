"""Each gateway states the largest webhook its provider sends; the real web app refuses one byte more (413)
before reading further, and reads a body of exactly that size (the gateway then judges it)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from dispatcher.domain import db
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.processes.api import create_app
from dispatcher.processes.web_context import WebContext
from workers.gateways.base import Gateway
from workers.gateways.registry import PROVIDERS, build_gateway, gateway_class
from workers.sandbox.sendgrid import public_key_b64
from workers.sandbox.server import ThreadedServer, serve

pytestmark = pytest.mark.timeout(120)

# Enough settings for each gateway to judge a webhook (credentials, keys), pointing nowhere.
SETTINGS: dict[str, dict[str, str]] = {
    "smtp": {"host": "127.0.0.1"},
    "postmark": {"server_token": "t", "webhook_username": "u", "webhook_password": "p"},
    "sendgrid": {"api_key": "k", "webhook_public_key": public_key_b64(ec.generate_private_key(ec.SECP256R1()))},
    "mailgun": {"api_key": "k", "domain": "mg.example", "webhook_signing_key": "s"},
    "telnyx": {
        "api_key": "k",
        "connection_id": "1",
        "public_key": base64.b64encode(bytes(nacl.signing.SigningKey.generate().verify_key)).decode(),
    },
    "sinch": {"project_id": "p", "key_id": "k", "key_secret": "s", "callback_username": "u", "callback_password": "p"},
    "phaxio": {"api_key": "k", "api_secret": "s", "callback_token": "t"},
}


@pytest.fixture(scope="module")
def web() -> Iterator[tuple[ThreadedServer, dict[str, Gateway]]]:
    gateways = {name: build_gateway(name, **values) for name, values in SETTINGS.items()}
    engine = db.make_engine("sqlite://")
    context = WebContext(
        factory=db.session_factory(engine),
        gateways=gateways,
        secret=None,
        retry=RetryPolicy(base_seconds=1, cap_seconds=1, max_attempts=1, no_fax_tone_limit=1),
        documents=DocumentCache(),
    )
    with serve(create_app(context)) as server:
        yield server, gateways
    engine.dispose()


def test_every_provider_has_settings_here() -> None:
    assert set(SETTINGS) == set(PROVIDERS)


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_the_limit_is_stated_on_the_gateway_class(name: str) -> None:
    cls = gateway_class(name)
    assert "max_webhook_bytes" in vars(cls), f"{name} states no max_webhook_bytes of its own"
    assert isinstance(cls.max_webhook_bytes, int) and cls.max_webhook_bytes >= 0


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_one_byte_over_the_limit_is_413_declared_or_streamed(
    web: tuple[ThreadedServer, dict[str, Gateway]], name: str
) -> None:
    server, gateways = web
    body = b"x" * (gateways[name].max_webhook_bytes + 1)
    url = f"{server.url}/webhooks/{name}"
    assert httpx.post(url, content=body, timeout=60).status_code == 413  # by its Content-Length

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams in
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    assert httpx.post(url, content=chunks(), timeout=60).status_code == 413


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_a_body_at_the_limit_is_read_and_judged_by_the_gateway(
    web: tuple[ThreadedServer, dict[str, Gateway]], name: str
) -> None:
    server, gateways = web
    body = b"x" * gateways[name].max_webhook_bytes
    response = httpx.post(f"{server.url}/webhooks/{name}", content=body, timeout=60)
    assert response.status_code in (400, 403), response.text[:300]  # the gateway refused it: it was read
