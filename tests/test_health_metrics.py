"""Operations endpoints of `dispatch web` through the real app, on the real ledgers (SQLite and PostgreSQL) and
the real Redis: /health/live, /health/ready, /metrics; and `dispatch worker --name` as real processes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import db, gateway_pauses
from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.ledger import Finished
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Delivery
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.settings import Settings, load_settings
from dispatcher.domain.states import State
from dispatcher.domain.validation import validate
from dispatcher.processes.api import WebContext, create_app
from dispatcher.processes.health import Check, health_router
from workers.celery_app import make_app

from .builders import api_headers, build_campaign, official
from .spawn import Spawned, base_env, dispatch

REDIS = "redis://127.0.0.1:6379/0"
PASSWORD = "s3cret-pw"  # in the URLs of the closed ports: never in an answer
CLOSED_LEDGER = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/test"
CLOSED_REDIS = f"redis://:{PASSWORD}@127.0.0.1:1/0"
FAX, EMAIL, SUPPORTER = "+86 10 6307 0900", "minister@example.org", "grace.supporter@example.net"
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def client(factory: sessionmaker[Session], *, broker: str = REDIS, gateways: tuple[str, ...] = ()) -> TestClient:
    ctx = WebContext(
        factory=factory,
        gateways=dict.fromkeys(gateways),  # type: ignore[arg-type]  # only their names are read here
        secret=None,
        retry=RetryPolicy(base_seconds=1.0, cap_seconds=2.0, max_attempts=2, no_fax_tone_limit=2),
        documents=DocumentCache(),
        settings=load_settings(broker_url=broker, queue_prefix=f"test-metrics-{uuid.uuid4().hex[:8]}-"),
    )
    return TestClient(create_app(ctx))


@pytest.fixture
def closed_ledger() -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine(CLOSED_LEDGER)
    yield db.session_factory(engine)
    engine.dispose()


# -- health ---------------------------------------------------------------------------------------------


def test_live_answers_without_a_ledger(closed_ledger: sessionmaker[Session]) -> None:
    web = client(closed_ledger, broker=CLOSED_REDIS)
    for path in ("/health/live", "/health"):
        response = web.get(path)
        assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.redis
def test_ready_with_the_services_up(factory: sessionmaker[Session]) -> None:
    response = client(factory, gateways=("telnyx", "smtp")).get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"ledger": "ok", "redis": "ok"},
        "gateways": {"smtp": "sending", "telnyx": "sending"},
    }


@pytest.mark.redis
def test_ready_names_the_ledger_when_it_is_down(closed_ledger: sessionmaker[Session]) -> None:
    response = client(closed_ledger, gateways=("telnyx",)).get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"ledger": "failed: OperationalError", "redis": "ok"},
        "failed": ["ledger"],
        "gateways": {"telnyx": "unknown"},
    }
    assert PASSWORD not in response.text and "Traceback" not in response.text


def test_ready_names_redis_when_it_is_down(factory: sessionmaker[Session]) -> None:
    response = client(factory, broker=CLOSED_REDIS).get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["redis"]
    assert body["checks"] == {"ledger": "ok", "redis": "failed: ConnectionError"}
    assert PASSWORD not in response.text and "127.0.0.1:1" not in response.text


def test_ready_gives_up_on_a_hung_redis_after_its_timeout(factory: sessionmaker[Session]) -> None:
    with socket.socket() as hung:  # accepts connections (the backlog) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        port = hung.getsockname()[1]
        app = FastAPI()
        app.include_router(health_router(factory, load_settings(broker_url=f"redis://127.0.0.1:{port}/0"), timeout=0.5))
        started = time.monotonic()
        response = TestClient(app).get("/health/ready")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] == "failed: TimeoutError"
    assert elapsed < 3.0


@pytest.mark.postgres
def test_ready_gives_up_on_a_hung_ledger_after_its_timeout() -> None:
    with socket.socket() as hung:  # a "database server" that accepts connections and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        engine = db.make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{hung.getsockname()[1]}/test")
        app = FastAPI()
        app.include_router(
            health_router(db.session_factory(engine), load_settings(broker_url="memory://"), timeout=0.5)
        )
        started = time.monotonic()
        response = TestClient(app).get("/health/ready")
        elapsed = time.monotonic() - started
    engine.dispose()
    assert (response.status_code, response.json()["checks"]) == (503, {"ledger": "failed: TimeoutError"})
    assert elapsed < 3.0


def test_a_hung_check_holds_one_thread_not_one_per_probe() -> None:
    release, calls = threading.Event(), []

    def hangs() -> str:
        calls.append(1)
        release.wait(10)
        return "answered"

    check = Check(hangs, timeout=0.2)
    assert asyncio.run(check.run()) == (None, "TimeoutError")  # given up; its thread still waits
    started = time.monotonic()
    assert asyncio.run(check.run()) == (None, "TimeoutError")  # at once, without a second thread
    assert time.monotonic() - started < 0.1 and len(calls) == 1
    release.set()
    deadline = time.monotonic() + 5
    while check.hung and time.monotonic() < deadline:  # the hung thread comes back
        time.sleep(0.01)
    assert asyncio.run(check.run()) == ("answered", None)
    assert len(calls) == 2


def test_ready_without_a_redis_broker_checks_only_the_ledger(factory: sessionmaker[Session]) -> None:
    response = client(factory, broker="memory://").get("/health/ready")
    assert (response.status_code, response.json()["checks"]) == (200, {"ledger": "ok"})


@pytest.mark.redis
def test_a_paused_gateway_is_shown_and_the_web_stays_ready(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        gateway_pauses.pause_for_configuration(
            SqlLedger(session), "telnyx", at=T0, reason="the provider refused our API key", setting="X"
        )
    response = client(factory, gateways=("telnyx", "smtp")).get("/health/ready")
    assert response.status_code == 200
    assert response.json()["gateways"] == {"smtp": "sending", "telnyx": "paused: configuration"}


# -- metrics --------------------------------------------------------------------------------------------


def build_ledger(factory: sessionmaker[Session], folder: Path) -> None:
    """One fax letter (a transient failure of 3 s, retried, then 0.2 s and delivered), one email letter
    (0.03 s, submitted), one supporter copy (planned); telnyx paused for its configuration."""
    path = build_campaign(
        folder,
        to=[official("Ada Official", fax=[FAX])],
        cc=[official("Bob Official", email=[EMAIL])],
        supporters=[(SUPPORTER, "Grace Hopper")],
    )
    spec = load_spec(path)
    with transaction(factory) as session:
        load_campaign(session, spec, validate(spec, file=path), source=path)
    with transaction(factory) as session:
        ledger = SqlLedger(session)
        rows = {(d.kind, d.channel): d for d in session.scalars(select(Delivery))}
        assert sorted(rows) == [("copy", "email"), ("letter", "email"), ("letter", "fax")]
        fax, email = rows["letter", "fax"], rows["letter", "email"]
        # the fax: attempt 1 fails after 3 s and waits; attempt 2 answers in 0.2 s and is delivered
        send(ledger, fax, "telnyx", at=T0, seconds=3.0, outcome="transient")
        ledger.move(fax, State.RETRY_WAIT, actor="t", at=T0 + timedelta(seconds=3), reason="busy")
        send(ledger, fax, "telnyx", at=T0 + timedelta(minutes=1), seconds=0.2, outcome="submitted")
        ledger.move(fax, State.SUBMITTED, actor="t", at=T0 + timedelta(minutes=1, seconds=1))
        ledger.move(fax, State.DELIVERED, actor="t", at=T0 + timedelta(minutes=2))
        # the email letter: 30 ms through SMTP
        send(ledger, email, "smtp", at=T0, seconds=0.03, outcome="submitted")
        ledger.move(email, State.SUBMITTED, actor="t", at=T0 + timedelta(seconds=1))
        gateway_pauses.pause_for_configuration(ledger, "telnyx", at=T0, reason="refused our key", setting="X")


def send(ledger: SqlLedger, delivery: Delivery, gateway: str, *, at: datetime, seconds: float, outcome: str) -> None:
    ledger.move(delivery, State.QUEUED, actor="t", at=at)
    number = ledger.claim(
        delivery, actor="t", at=at, lease_until=at + timedelta(minutes=1), gateway=gateway, reports=True
    )
    assert number is not None
    ledger.finish_attempt(delivery, number, at=at + timedelta(seconds=seconds), finished=Finished(outcome=outcome))
    delivery.state = str(State.SENDING)  # claim() updated the row, not the object


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found[name, tuple(sorted(labels.items()))]


@pytest.mark.redis
def test_metrics_count_the_ledger_without_personal_data(factory: sessionmaker[Session], tmp_path: Path) -> None:
    build_ledger(factory, tmp_path)
    web = client(factory, gateways=("telnyx", "smtp"))
    assert web.get("/metrics").status_code == 401  # counts are for the team, not the public
    response = web.get("/metrics", headers=api_headers(factory))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = samples(response.text)

    deliveries = {labels: n for (name, labels), n in found.items() if name == "dispatch_deliveries" and n}
    assert deliveries == {
        (("channel", "fax"), ("kind", "letter"), ("state", "delivered")): 1,
        (("channel", "email"), ("kind", "letter"), ("state", "submitted")): 1,
        (("channel", "email"), ("kind", "copy"), ("state", "planned")): 1,
    }
    assert value(found, "dispatch_deliveries", state="failed", channel="fax", kind="letter") == 0
    assert value(found, "dispatch_retries_total", channel="fax") == 1
    assert value(found, "dispatch_retries_total", channel="email") == 0
    assert value(found, "dispatch_gateway_paused", gateway="telnyx") == 1
    assert value(found, "dispatch_gateway_paused", gateway="smtp") == 0

    telnyx = {
        labels["le"]: n
        for (name, labels_), n in found.items()
        if name == "dispatch_gateway_latency_seconds_bucket" and (labels := dict(labels_))["gateway"] == "telnyx"
    }  # 0.2 s and 3 s
    assert telnyx == {
        "0.05": 0, "0.1": 0, "0.25": 1, "0.5": 1, "1.0": 1, "2.5": 1,
        "5.0": 2, "10.0": 2, "30.0": 2, "60.0": 2, "120.0": 2, "+Inf": 2,
    }  # fmt: skip
    assert value(found, "dispatch_gateway_latency_seconds_count", gateway="telnyx") == 2
    assert value(found, "dispatch_gateway_latency_seconds_sum", gateway="telnyx") == pytest.approx(3.2, abs=1e-3)
    assert value(found, "dispatch_gateway_latency_seconds_bucket", gateway="smtp", le="0.05") == 1
    assert value(found, "dispatch_gateway_latency_seconds_sum", gateway="smtp") == pytest.approx(0.03, abs=1e-3)

    assert value(found, "dispatch_broker_up") == 1
    for queue in ("fax", "email", "copies", "reconcile"):
        assert value(found, "dispatch_queue_depth", queue=queue) == 0

    for personal in (SUPPORTER, "Grace", "Hopper", "Ada Official", "Bob Official", EMAIL, "6307", "8610"):
        assert personal not in response.text


@pytest.mark.redis
def test_queue_depth_counts_the_messages_waiting_under_the_prefix(factory: sessionmaker[Session]) -> None:
    import redis

    prefix = f"test-metrics-{uuid.uuid4().hex[:8]}-"
    settings = load_settings(broker_url=REDIS, queue_prefix=prefix)
    r = redis.Redis.from_url(REDIS)
    keys = [f"{prefix}fax", f"{prefix}fax\x06\x163", f"{prefix}copies"]
    try:
        r.rpush(keys[0], "a", "b")
        r.rpush(keys[1], "c")
        r.rpush(keys[2], "d")
        found = samples(_web(factory, settings).get("/metrics", headers=api_headers(factory)).text)
    finally:
        r.delete(*keys)
    assert value(found, "dispatch_queue_depth", queue="fax") == 3
    assert value(found, "dispatch_queue_depth", queue="copies") == 1
    assert value(found, "dispatch_queue_depth", queue="email") == 0


def test_metrics_without_redis_report_the_broker_down(factory: sessionmaker[Session]) -> None:
    response = client(factory, broker=CLOSED_REDIS).get("/metrics", headers=api_headers(factory))
    assert response.status_code == 200
    found = samples(response.text)
    assert value(found, "dispatch_broker_up") == 0
    assert not [k for k in found if k[0] == "dispatch_queue_depth"]
    assert PASSWORD not in response.text


def test_metrics_answer_503_when_the_ledger_is_down(closed_ledger: sessionmaker[Session]) -> None:
    # a token cannot be checked without the ledger either: 503, not 401
    response = client(closed_ledger, broker="memory://").get("/metrics", headers={"Authorization": "Bearer cdt_x"})
    assert response.status_code == 503
    assert PASSWORD not in response.text and "Traceback" not in response.text


def _web(factory: sessionmaker[Session], settings: Settings) -> TestClient:
    ctx = WebContext(
        factory=factory,
        gateways={},
        secret=None,
        retry=RetryPolicy(base_seconds=1.0, cap_seconds=2.0, max_attempts=2, no_fax_tone_limit=2),
        documents=DocumentCache(),
        settings=settings,
    )
    return TestClient(create_app(ctx))


# -- dispatch worker --name -----------------------------------------------------------------------------


@pytest.mark.redis
def test_two_workers_on_one_host_are_two_nodes(tmp_path: Path) -> None:
    prefix = f"test-worker-name-{uuid.uuid4().hex[:8]}-"
    env = base_env(
        tmp_path,
        DISPATCH_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        DISPATCH_BROKER_URL=REDIS,
        DISPATCH_QUEUE_PREFIX=prefix,
        DISPATCH_FAX_GATEWAY="",
        DISPATCH_EMAIL_GATEWAY="smtp",
        DISPATCH_SMTP_HOST="127.0.0.1",
        DISPATCH_CHECK_CREDENTIALS="false",
    )
    workers: list[Spawned] = []
    try:
        for args in ((), ("--name", f"alpha-{prefix}")):
            worker = dispatch("worker", "--concurrency", "1", "--queues", "email", *args, env=env, cwd=tmp_path)
            workers.append(worker)
            worker.wait_for(lambda line: "ready." in line, timeout=120)
        app = make_app(REDIS, settings=load_settings(broker_url=REDIS, queue_prefix=prefix))
        replies: dict[str, Any] = {}
        for _ in range(10):  # a reply or two may come late: ask until both answered
            for reply in app.control.ping(timeout=2.0) or []:
                replies.update(reply)
            if f"alpha-{prefix}@{socket.gethostname()}" in replies:
                break
        # the prefix keeps the control messages apart too: the celery@ node that answered is ours
        other = make_app(REDIS, settings=load_settings(broker_url=REDIS, queue_prefix=f"{prefix}other-"))
        elsewhere = [name for reply in other.control.ping(timeout=1.0) or [] for name in reply]
    finally:
        for worker in workers:
            worker.stop()
    host = socket.gethostname()
    assert f"alpha-{prefix}@{host}" in replies
    assert f"celery@{host}" in replies  # the default node name, as before
    assert f"alpha-{prefix}@{host}" not in elsewhere


def test_a_malformed_worker_name_is_refused_before_start(tmp_path: Path) -> None:
    env = base_env(tmp_path, DISPATCH_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}")
    worker = dispatch("worker", "--name", "two words", env=env, cwd=tmp_path)
    lines = worker.finish(timeout=60)
    assert worker.process.returncode == 2  # a usage error
    text = " ".join(" ".join(lines).replace("│", " ").split())
    assert "Invalid value for '--name': 'two words' is not a node name: give NAME or NAME@HOST" in text
    assert "Traceback" not in text
