"""The worker against the real sandbox: Telnyx emulator, SMTP sink, our web app for webhooks and PDFs."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import control
from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.media import media_url
from dispatcher.domain.models import Delivery
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.scheduling import SchedulerConfig, run_once
from dispatcher.domain.settings import Settings
from dispatcher.domain.unsubscribe import unsubscribe_url
from dispatcher.domain.validation import validate
from dispatcher.processes.api import create_app
from dispatcher.processes.web_context import WebContext
from workers.delivery import WorkerContext, deliver_many
from workers.gateways.base import Gateway
from workers.gateways.registry import build_gateway
from workers.reconcile import reconcile
from workers.sandbox import telnyx as telnyx_sandbox
from workers.sandbox.core import SandboxState
from workers.sandbox.server import ThreadedServer, listening_socket
from workers.sandbox.smtp_sink import SmtpSink

RETRY = RetryPolicy(base_seconds=0.05, cap_seconds=0.2, max_attempts=4, no_fax_tone_limit=2)
SETTINGS = Settings()  # the defaults (and any DISPATCH_* variable), as a deployed process reads them


def worker_context(factory: sessionmaker[Session], gateways: dict[str, Gateway], **overrides: Any) -> WorkerContext:
    """The worker path as configured by settings, with quick retries and no gap between two faxes to one
    number (most tests send several to one number in a row), unless ``overrides`` say otherwise."""
    return WorkerContext.from_settings(
        SETTINGS, factory=factory, gateways=gateways, **{"retry": RETRY, "fax_gap": timedelta(0), **overrides}
    )


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Sandbox:
    fax: SandboxState
    mail: SandboxState
    fax_url: str
    web_url: str
    smtp_host: str
    smtp_port: int
    api_key: str
    signing_key: nacl.signing.SigningKey
    secret: bytes
    env: dict[str, str] = field(default_factory=dict)
    sink: SmtpSink | None = None  # the SMTP server's accepted messages, headers and bodies

    def gateways(self) -> dict[str, Gateway]:
        public_key = base64.b64encode(bytes(self.signing_key.verify_key)).decode()
        return {
            "fax": build_gateway(
                "telnyx",
                api_key=self.api_key,
                connection_id="test-connection",
                public_key=public_key,
                base_url=self.fax_url,
                webhook_url=f"{self.web_url}/webhooks/telnyx",
            ),
            "email": build_gateway("smtp", host=self.smtp_host, port=self.smtp_port, security="plain"),
        }

    def worker_env(self) -> dict[str, str]:
        """The same gateways, configured the way a deployed worker reads them: DISPATCH_* variables."""
        return {
            "DISPATCH_FAX_GATEWAY": "telnyx",
            "DISPATCH_EMAIL_GATEWAY": "smtp",
            "DISPATCH_TELNYX_API_KEY": self.api_key,
            "DISPATCH_TELNYX_CONNECTION_ID": "test-connection",
            "DISPATCH_TELNYX_PUBLIC_KEY": base64.b64encode(bytes(self.signing_key.verify_key)).decode(),
            "DISPATCH_TELNYX_BASE_URL": self.fax_url,
            "DISPATCH_TELNYX_WEBHOOK_URL": f"{self.web_url}/webhooks/telnyx",
            "DISPATCH_SMTP_HOST": self.smtp_host,
            "DISPATCH_SMTP_PORT": str(self.smtp_port),
            "DISPATCH_SMTP_SECURITY": "plain",
            "DISPATCH_SECRET_KEY": self.secret.decode(),
            "DISPATCH_PUBLIC_BASE_URL": self.web_url,
        }

    def duplicates(self) -> dict[tuple[str | None, str], int]:
        return {**self.fax.duplicates(), **self.mail.duplicates()}


@pytest.fixture
def sandbox(factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Sandbox]:
    signing_key = nacl.signing.SigningKey.generate()
    api_key = "KEYtest" + secrets.token_hex(8)
    fax = SandboxState(provider="telnyx", webhook_delay=0.02, oracle_path=tmp_path / "oracle-fax.jsonl")
    mail = SandboxState(provider="smtp", oracle_path=tmp_path / "oracle-mail.jsonl")
    web_socket = listening_socket()  # held from now: the web app's URL is needed before the app is built
    web_port = web_socket.getsockname()[1]
    secret = secrets.token_hex(32).encode()  # what DISPATCH_SECRET_KEY holds, as the web process reads it
    fax_server = ThreadedServer(telnyx_sandbox.create_app(fax, api_key=api_key, signing_key=signing_key)).start()
    sink = SmtpSink(mail)
    sink.start()
    box = Sandbox(
        fax=fax,
        mail=mail,
        fax_url=fax_server.url,
        web_url=f"http://127.0.0.1:{web_port}",
        smtp_host=sink.host,
        smtp_port=sink.port,
        api_key=api_key,
        signing_key=signing_key,
        secret=secret,
        sink=sink,
    )
    web = ThreadedServer(
        create_app(
            WebContext(
                factory=factory,
                gateways={"telnyx": box.gateways()["fax"]},
                secret=secret,
                retry=RETRY,
                documents=DocumentCache(),
            )
        ),
        sock=web_socket,
    ).start()
    try:
        yield box
    finally:
        web.stop()
        sink.stop()
        fax_server.stop()


@pytest.fixture
def worker(factory: sessionmaker[Session], sandbox: Sandbox) -> WorkerContext:
    return worker_context(
        factory,
        sandbox.gateways(),
        reconcile_grace=timedelta(seconds=0.3),
        media_url=lambda delivery_id, at: media_url(sandbox.web_url, delivery_id, secret=sandbox.secret, now=at),
        unsubscribe_url=lambda delivery_id: unsubscribe_url(sandbox.web_url, sandbox.secret, delivery_id),
    )


def schedule_campaign(
    factory: sessionmaker[Session], path: Path, *, skip_invalid: bool = False, at: datetime | None = None
) -> str:
    spec = load_spec(path)
    report = validate(spec, file=path)
    with transaction(factory) as session:
        load_campaign(session, spec, report, source=path, skip_invalid=skip_invalid)
        control.schedule(session, spec.campaign.name, now=at or now())
    return spec.campaign.name


def drive(
    worker: WorkerContext, *, until: Callable[[], bool], timeout: float = 30.0, config: SchedulerConfig | None = None
) -> int:
    """Scheduler ticks and worker batches in this process until ``until()``; returns ticks run."""
    import time

    config = config or SchedulerConfig.from_settings(SETTINGS)
    deadline = time.monotonic() + timeout
    ticks = 0
    while not until():
        assert time.monotonic() < deadline, "the campaign did not settle in time"
        published: list[list[int]] = []
        reconciling: list[list[int]] = []
        run_once(worker.factory, _collect(published), _collect(reconciling), now=worker.clock(), config=config)
        for ids in published:
            deliver_many(worker, ids)
        for ids in reconciling:
            for delivery_id in ids:
                reconcile(worker, delivery_id)
        ticks += 1
        time.sleep(0.05)
    return ticks


def _collect(into: list[list[int]]) -> Callable[[str, Sequence[int]], None]:
    return lambda _queue, ids: into.append(list(ids))


def states(factory: sessionmaker[Session]) -> dict[str, str]:
    """Destination -> state, for letters (supporter copies by their key)."""
    with factory() as session:
        return {d.destination: d.state for d in session.scalars(select(Delivery).order_by(Delivery.id))}


def history(factory: sessionmaker[Session], destination: str) -> list[tuple[str | None, str, str]]:
    """(from, to, reason) of every event of the deliveries to ``destination``, for assertion messages."""
    from dispatcher.domain.models import DeliveryEvent

    with factory() as session:
        rows = session.execute(
            select(DeliveryEvent.from_state, DeliveryEvent.to_state, DeliveryEvent.reason)
            .join(Delivery, Delivery.id == DeliveryEvent.delivery_id)
            .where(Delivery.destination == destination)
            .order_by(DeliveryEvent.id)
        ).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]


def campaign_status(factory: sessionmaker[Session], name: str) -> str:
    from dispatcher.domain.queries import get_campaign

    with factory() as session:
        return get_campaign(session, name).status
