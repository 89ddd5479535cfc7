"""`dispatch web` on an SQLite ledger whose write lock another process holds, under real uvicorn.

Another connection takes the write lock (BEGIN IMMEDIATE) and keeps it for the whole test. A webhook
then waits for the lock in a worker thread, never on the event loop: /health still answers, and 20
concurrent reads of the API answer too (a read takes a deferred BEGIN, so it reads the last committed
state without the write lock). A write that cannot get the lock within the busy timeout is a 503 with
Retry-After, never a 500. Every request here must be answered while the lock is still held; an answer
that never comes fails the test through the client's timeout.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import db
from dispatcher.domain.models import DeliveryEvent, utcnow
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.states import State
from dispatcher.processes.api import create_app
from dispatcher.processes.web_context import WebContext
from workers.sandbox.server import ThreadedServer

from .builders import NAME, api_headers, build_campaign
from .signed_webhooks import AT_DISPATCH, Submitted, gateways, sample, signed, submit_one_per_gateway

pytestmark = pytest.mark.timeout(120)

ANSWER_WITHIN = 20.0  # seconds a client waits for an answer before the test fails


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    db.upgrade(url)
    return url


@contextmanager
def web(factory: sessionmaker[Session], *, clock: Callable[[], datetime] = utcnow) -> Iterator[ThreadedServer]:
    context = WebContext(
        factory=factory,
        gateways=gateways(),
        secret=None,
        retry=RetryPolicy(base_seconds=1, cap_seconds=1, max_attempts=1, no_fax_tone_limit=2),
        documents=DocumentCache(),
        clock=clock,
    )
    server = ThreadedServer(create_app(context)).start()
    try:
        yield server
    finally:
        server.stop()


class WriteLock:
    """The ledger's write lock, held by another connection (as another process would hold it)."""

    def __init__(self, url: str) -> None:
        self.connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)

    def __enter__(self) -> WriteLock:
        self.connection.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *_: object) -> None:
        self.connection.execute("ROLLBACK")
        self.connection.close()


def telnyx_report(target: Submitted) -> tuple[bytes, dict[str, str]]:
    return signed("telnyx", sample("telnyx", provider_id=target.provider_id, reference=target.reference))


def read_deliveries(server: ThreadedServer, count: int, headers: dict[str, str]) -> list[int]:
    """``count`` concurrent reads of the API (identified by a token: that too reads, never writes); their
    status codes."""
    url = f"{server.url}/api/campaigns/{NAME}/deliveries"
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(httpx.get, url, headers=headers, timeout=ANSWER_WITHIN) for _ in range(count)]
        return [future.result().status_code for future in futures]


def event_count(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count(DeliveryEvent.id))) or 0)


def test_a_webhook_waiting_for_the_lock_stalls_neither_health_nor_reads(ledger: str, tmp_path: Path) -> None:
    engine = db.make_engine(ledger)  # the default busy timeout: the webhook waits for the lock
    factory = db.session_factory(engine)
    in_flight = submit_one_per_gateway(
        factory, build_campaign(tmp_path, route_policy="all-routes", extra=AT_DISPATCH), state=State.SENDING
    )
    token = api_headers(factory)
    received = threading.Event()

    def clock() -> datetime:  # the app reads it once it has the webhook's body, before the ledger
        received.set()
        return utcnow()

    try:
        with web(factory, clock=clock) as server, ThreadPoolExecutor(max_workers=1) as pool:
            with WriteLock(ledger):
                body, headers = telnyx_report(in_flight["telnyx"])
                webhook: Future[httpx.Response] = pool.submit(
                    httpx.post, f"{server.url}/webhooks/telnyx", content=body, headers=headers, timeout=60
                )
                assert received.wait(ANSWER_WITHIN)
                health = httpx.get(f"{server.url}/health", timeout=ANSWER_WITHIN)
                assert (health.status_code, health.json()) == (200, {"status": "ok"})
                assert read_deliveries(server, 20, token) == [200] * 20
                assert not webhook.done()  # still waiting for the lock, which is still held
            # the lock is released: the webhook gets it and is applied
            response = webhook.result()
            assert (response.status_code, response.json()) == (200, {"applied": 1})
    finally:
        engine.dispose()


def test_a_write_that_cannot_get_the_lock_is_a_503_with_retry_after(ledger: str, tmp_path: Path) -> None:
    engine = db.make_engine(ledger, sqlite_busy_seconds=0.5)
    factory = db.session_factory(engine)
    in_flight = submit_one_per_gateway(
        factory, build_campaign(tmp_path, route_policy="all-routes", extra=AT_DISPATCH), state=State.SENDING
    )
    token = api_headers(factory)
    before = event_count(factory)
    try:
        with web(factory) as server:
            with WriteLock(ledger):
                body, headers = telnyx_report(in_flight["telnyx"])
                url = f"{server.url}/webhooks/telnyx"
                response = httpx.post(url, content=body, headers=headers, timeout=ANSWER_WITHIN)
                assert response.status_code == 503, response.text
                assert int(response.headers["retry-after"]) > 0
                assert "INSERT" not in response.text and "SELECT" not in response.text
                assert read_deliveries(server, 20, token) == [200] * 20
            assert event_count(factory) == before
            # the provider retries once the lock is free: applied once
            body, headers = telnyx_report(in_flight["telnyx"])
            retried = httpx.post(url, content=body, headers=headers, timeout=ANSWER_WITHIN)
            assert (retried.status_code, retried.json()) == (200, {"applied": 1})
    finally:
        engine.dispose()
