"""Suppression from the email providers' webhooks, end to end, for Postmark, SendGrid and Mailgun: the worker
path sends a letter and supporter copies through the provider's emulator on a real port, the emulator posts
its webhooks (signed as the provider signs them) to our web app on a real port, and the ledger (SQLite and
PostgreSQL) records them.

Scripted per address: the official's letter hard-bounces (nothing suppressed: officials are never on the
list), one copy hard-bounces (suppressed, "hard-bounce"), one soft-bounces (not suppressed: it is sent again,
or the provider's own retry gets through) and one is delivered, then marked as spam (suppressed, "complaint",
although the copy was delivered)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.models import Attempt, Campaign, Delivery, DeliveryEvent, Suppression
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.unsubscribe import unsubscribe_url
from dispatcher.domain.validation import validate
from dispatcher.processes.api import create_app
from dispatcher.processes.web_context import WebContext
from workers.gateways.base import Gateway
from workers.gateways.registry import build_gateway
from workers.sandbox import mailgun as mailgun_sandbox
from workers.sandbox import postmark as postmark_sandbox
from workers.sandbox import sendgrid as sendgrid_sandbox
from workers.sandbox.core import SandboxState
from workers.sandbox.server import ThreadedServer, listening_socket

from ..builders import build_campaign, official
from ..signed_webhooks import HOOK_PASSWORD, HOOK_USER, MAILGUN_KEY, SENDGRID_KEY, SETTINGS
from .conftest import RETRY, campaign_status, drive, schedule_campaign, worker_context

pytestmark = pytest.mark.timeout(120)

SECRET = b"0123456789abcdef0123456789abcdef"
MINISTER = "minister@gov.example"
HARD, SOFT, SPAM = "hard.bounce@example.org", "soft.bounce@example.org", "complains@example.org"
# SHA-256 of each address, worked out apart from the code under test
HARD_SHA256 = "c083ec49341341de0a887e80c67b97f9f63c16c23c44fdea0f5f43600640f3d6"
SPAM_SHA256 = "f851b77a79ce11155957c6ddaff8aefc9c7ca85aceef88844d5682e9013e838e"

# what each provider's soft bounce leads to: Postmark's SoftBounce and SendGrid's "blocked" end that message
# (we send it again); Mailgun reports a temporary failure and retries it itself
SOFT_ATTEMPTS = {"postmark": 2, "sendgrid": 2, "mailgun": 1}


@dataclass
class EmailProvider:
    name: str
    state: SandboxState  # the emulator's scripts and oracle
    gateway: Gateway  # the worker's
    web_url: str


def emulator_app(name: str, state: SandboxState, hook: str) -> FastAPI:
    if name == "postmark":  # Basic-auth credentials ride in the webhook URL
        with_credentials = hook.replace("http://", f"http://{HOOK_USER}:{HOOK_PASSWORD}@")
        return postmark_sandbox.create_app(
            state, server_token=SETTINGS[name]["server_token"], webhook_url=with_credentials
        )
    if name == "sendgrid":
        return sendgrid_sandbox.create_app(
            state, api_key=SETTINGS[name]["api_key"], signing_key=SENDGRID_KEY, webhook_url=hook
        )
    return mailgun_sandbox.create_app(
        state,
        api_key=SETTINGS[name]["api_key"],
        domain=SETTINGS[name]["domain"],
        webhook_signing_key=MAILGUN_KEY,
        webhook_url=hook,
    )


@pytest.fixture(params=["postmark", "sendgrid", "mailgun"])
def provider(request: pytest.FixtureRequest, factory: sessionmaker[Session]) -> Iterator[EmailProvider]:
    name: str = request.param
    web_socket = listening_socket()  # held from now: the web app's URL is needed before the app is built
    web_port = web_socket.getsockname()[1]
    web_url = f"http://127.0.0.1:{web_port}"
    state = SandboxState(provider=name, webhook_delay=0.01)
    emulator = ThreadedServer(emulator_app(name, state, f"{web_url}/webhooks/{name}")).start()
    settings = {**SETTINGS[name], "base_url": emulator.url}
    context = WebContext(
        factory=factory,
        gateways={name: build_gateway(name, **settings)},
        secret=SECRET,
        retry=RETRY,
        documents=DocumentCache(),
    )
    web = ThreadedServer(create_app(context), sock=web_socket).start()
    try:
        yield EmailProvider(name, state, build_gateway(name, **settings), web_url)
    finally:
        web.stop()
        emulator.stop()


def test_hard_bounces_and_complaints_on_copies_suppress_soft_bounces_and_officials_letters_do_not(
    factory: sessionmaker[Session], provider: EmailProvider, tmp_path: Path
) -> None:
    for address, outcome in ((MINISTER, "bounce"), (HARD, "bounce"), (SOFT, "soft_bounce"), (SPAM, "complaint")):
        provider.state.script(address, [outcome])
    path = build_campaign(
        tmp_path,
        to=[official("A. Minister", email=[MINISTER], salutation="Dear Minister,")],
        cc=[],
        supporters=[(HARD, "Hard Bounce"), (SOFT, "Soft Bounce"), (SPAM, "Complains")],
        extra={"supporters": {"copies": "at-dispatch"}},
    )
    worker = worker_context(
        factory,
        {"email": provider.gateway},
        unsubscribe_url=lambda delivery_id: unsubscribe_url(provider.web_url, SECRET, delivery_id),
    )
    name = schedule_campaign(factory, path)
    drive(
        worker,
        until=lambda: campaign_status(factory, name) == "completed" and len(suppressions(factory)) == 2,
        timeout=60,
    )

    assert suppressions(factory) == [
        (HARD_SHA256, "hard-bounce", f"webhook:{provider.name}"),
        (SPAM_SHA256, "complaint", f"webhook:{provider.name}"),
    ]
    with factory() as session:
        deliveries = {d.destination: d for d in session.scalars(select(Delivery))}
        assert {address: d.state for address, d in deliveries.items()} == {
            MINISTER: "failed",  # hard-bounced, and not suppressed: a letter to an official
            HARD: "failed",
            SOFT: "delivered",
            SPAM: "delivered",  # then marked as spam: the complaint changes no state, it suppresses
        }
        soft_attempts = session.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.delivery_id == deliveries[SOFT].id)
        )
        reasons = session.scalars(select(DeliveryEvent.reason)).all()
    assert soft_attempts == SOFT_ATTEMPTS[provider.name]
    assert provider.state.duplicates() == {}
    for reason in reasons:  # the delivery log names no address
        assert not any(address in reason for address in (HARD, SOFT, SPAM))

    # the next campaign copying them plans no copy for the suppressed addresses; the soft-bounced one gets one
    following = build_campaign(
        tmp_path / "next",
        name="next-campaign",
        to=[official("A. Minister", email=[MINISTER], salutation="Dear Minister,")],
        cc=[],
        supporters=[(HARD, "Hard Bounce"), (SOFT, "Soft Bounce"), (SPAM, "Complains")],
    )
    spec = load_spec(following)
    with transaction(factory) as session:
        load_campaign(session, spec, validate(spec, file=following), source=following)
    with factory() as session:
        planned = session.scalars(
            select(Delivery.destination).join(Campaign).where(Campaign.name == "next-campaign", Delivery.kind == "copy")
        ).all()
    assert planned == [SOFT]


def suppressions(factory: sessionmaker[Session]) -> list[tuple[str, str, str]]:
    with factory() as session:
        return [
            (s.email_sha256, s.reason, s.source)
            for s in session.scalars(select(Suppression).order_by(Suppression.email_sha256))
        ]
