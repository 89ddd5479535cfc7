"""End to end with real parts: PostgreSQL, Redis as the Celery broker, and separate `dispatch worker`
and `dispatch scheduler` processes, started and stopped by the tests. The sandbox oracle judges."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.models import Delivery, DeliveryEvent, utcnow
from dispatcher.domain.scheduling import claim_due
from dispatcher.domain.settings import load_settings
from workers.delivery import WorkerContext

from ..builders import build_campaign, xi_jinping
from .conftest import Sandbox, campaign_status, history, schedule_campaign, states

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

WANG = "+861065591516"
XI_1 = "+861063070900"
BROKER = os.environ.get("DISPATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=["postgres"])
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """These tests run several processes against one ledger: PostgreSQL only."""
    from dispatcher.domain import db

    from ..conftest import _drop_postgres_database, _fresh_postgres_database

    name, url = _fresh_postgres_database()
    try:
        db.upgrade(url)
        yield url
    finally:
        _drop_postgres_database(name)


class Processes:
    """`dispatch` processes sharing one environment; every one is stopped at the end of the test."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{args[0]}-{len(self.running)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        """SIGTERM to every process at once; one still finishing its work a few seconds later is killed
        (its warm shutdown is not what the test is about)."""
        alive = [p for p in self.running if p.poll() is None]
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in alive:
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.kill(process)


@pytest.fixture
def processes(db_url: str, sandbox: Sandbox, tmp_path: Path) -> Iterator[Processes]:
    env = {
        **os.environ,
        **sandbox.worker_env(),
        "DISPATCH_DATABASE_URL": db_url,
        "DISPATCH_BROKER_URL": BROKER,
        "DISPATCH_QUEUE_PREFIX": f"test-{uuid.uuid4().hex[:8]}-",
        "DISPATCH_RETRY_BASE_SECONDS": "0.2",
        "DISPATCH_RETRY_CAP_SECONDS": "1",
        "DISPATCH_FAX_GAP_SECONDS": "0",
        # a lease of a few seconds, renewed every second while a send is worked on: longer than the wait for
        # a limit, shorter than the task's time limits (the settings require no more)
        "DISPATCH_LEASE_SECONDS": "3",
        "DISPATCH_BATCH_BUDGET_SECONDS": "2",
        "DISPATCH_LIMIT_MAX_WAIT_SECONDS": "1",
        "DISPATCH_TASK_SOFT_TIME_LIMIT_SECONDS": "6",
        "DISPATCH_TASK_TIME_LIMIT_SECONDS": "7",
        "DISPATCH_REPUBLISH_AFTER_SECONDS": "2",
        "DISPATCH_RECONCILE_EVERY_SECONDS": "1",
        "DISPATCH_RECONCILE_GRACE_SECONDS": "1",
    }
    group = Processes(env, tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


def wait_for(
    check: Callable[[], bool],
    *,
    timeout: float = 60.0,
    what: str = "condition",
    explain: Callable[[], object] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {explain()}")
        time.sleep(0.2)


def explain(factory: sessionmaker[Session]) -> dict[str, object]:
    return {
        dest: (state, history(factory, dest)[-3:])
        for dest, state in states(factory).items()
        if state not in ("delivered", "skipped")
    }


def all_settled(factory: sessionmaker[Session], name: str) -> Callable[[], bool]:
    return lambda: campaign_status(factory, name) == "completed"


def test_campaign_through_real_workers_and_two_schedulers(
    factory: sessionmaker[Session], sandbox: Sandbox, processes: Processes, tmp_path: Path
) -> None:
    sandbox.fax.script(WANG, ["busy"])
    name = schedule_campaign(factory, build_campaign(tmp_path))
    processes.start("worker", "--concurrency", "2")
    processes.start("scheduler", "--interval", "0.3")
    processes.start("scheduler", "--interval", "0.3")  # two schedulers at once
    wait_for(all_settled(factory, name), what="the campaign to complete", explain=lambda: explain(factory))
    result = states(factory)
    assert result[WANG] == "delivered", history(factory, WANG)
    assert sandbox.duplicates() == {}
    with factory() as session:  # each planned delivery was queued by exactly one scheduler
        first_queues = session.execute(
            select(DeliveryEvent.delivery_id, func.count())
            .where(DeliveryEvent.from_state == "planned", DeliveryEvent.to_state == "queued")
            .group_by(DeliveryEvent.delivery_id)
        ).all()
        assert first_queues and all(n == 1 for _, n in first_queues)


def test_same_ids_published_twice_to_two_workers_send_once(
    factory: sessionmaker[Session], sandbox: Sandbox, processes: Processes, tmp_path: Path
) -> None:
    name = schedule_campaign(factory, build_campaign(tmp_path))
    with transaction(factory) as session:
        ids = [d.id for d in claim_due(session, now=utcnow(), limit=100)]
    _publish_twice(ids, prefix=processes.env["DISPATCH_QUEUE_PREFIX"])
    processes.start("worker", "--concurrency", "1")
    processes.start("worker", "--concurrency", "1")
    processes.start("scheduler", "--interval", "0.3")
    wait_for(all_settled(factory, name), what="the campaign to complete", explain=lambda: explain(factory))
    assert sandbox.duplicates() == {}
    assert sorted(e.destination for e in sandbox.fax.oracle()) == ["+861063070900", WANG]


def _publish_twice(ids: list[int], *, prefix: str) -> None:
    """Publish every id twice to each queue, as redelivered or re-published messages would."""
    from workers.celery_app import CHANNEL_QUEUES, make_app

    app = make_app(BROKER, settings=load_settings(queue_prefix=prefix))  # its keys under the workers' prefix
    for _ in range(2):
        for queue in CHANNEL_QUEUES:
            app.send_task("dispatch.deliver", args=[ids], queue=queue)
    app.close()


def test_worker_killed_mid_send_is_reconciled_without_a_second_send(
    factory: sessionmaker[Session], sandbox: Sandbox, processes: Processes, tmp_path: Path
) -> None:
    sandbox.fax.latency = 3.0  # the provider is slow to answer: the worker is inside send() when killed
    name = schedule_campaign(factory, build_campaign(tmp_path))
    worker = processes.start("worker", "--concurrency", "1", "--queues", "fax")
    processes.start("scheduler", "--interval", "0.3")

    def sending() -> bool:
        with factory() as session:
            return session.scalar(select(Delivery.id).where(Delivery.state == "sending")) is not None

    wait_for(sending, what="a fax in flight")
    processes.kill(worker)  # SIGKILL the worker and its pool: no chance to record anything
    sandbox.fax.latency = 0.0
    processes.start("worker", "--concurrency", "1")
    wait_for(
        all_settled(factory, name),
        timeout=90,
        what="the campaign to complete after the kill",
        explain=lambda: explain(factory),
    )
    with factory() as session:
        unknown_paths = session.scalars(
            select(DeliveryEvent.delivery_id).where(DeliveryEvent.to_state == "unknown")
        ).all()
    assert unknown_paths, "the killed send should have become unknown before it was reconciled"
    assert sandbox.duplicates() == {}
    assert all(state in ("delivered", "submitted", "skipped") for state in states(factory).values()), explain(factory)


def test_lost_broker_message_is_republished_by_the_sweeper(
    factory: sessionmaker[Session], sandbox: Sandbox, processes: Processes, tmp_path: Path
) -> None:
    name = schedule_campaign(factory, build_campaign(tmp_path))
    with transaction(factory) as session:  # queued, but the message never reaches the broker
        lost = [d.id for d in claim_due(session, now=utcnow(), limit=100)]
    assert lost
    processes.start("worker", "--concurrency", "1")
    processes.start("scheduler", "--interval", "0.3")
    wait_for(
        all_settled(factory, name),
        what="the lost deliveries to be re-published and sent",
        explain=lambda: explain(factory),
    )
    assert sandbox.duplicates() == {}
    with factory() as session:
        assert all(session.get(Delivery, i).state != "queued" for i in lost)  # type: ignore[union-attr]


def test_fallback_through_real_workers(
    factory: sessionmaker[Session], sandbox: Sandbox, processes: Processes, tmp_path: Path
) -> None:
    """Xi Jinping: fax 1 is not a valid number, fax 2 never gives a fax tone (given up after two such
    answers in a row), so the email goes."""
    xi_1, xi_2, xi_email = "+861063070900", "+861062381025", "president@example.gov.cn"
    path = build_campaign(tmp_path, to=[xi_jinping(fax=["+86 10 6307 0900", "+86 10 6238 1025"], email=[xi_email])])
    sandbox.fax.script(xi_1, ["invalid_number"])
    sandbox.fax.script(xi_2, ["no_fax_tone"] * 10)
    name = schedule_campaign(factory, path)
    processes.start("worker", "--concurrency", "2")
    processes.start("scheduler", "--interval", "0.3")
    wait_for(all_settled(factory, name), what="the fallback to finish", explain=lambda: explain(factory))
    result = states(factory)
    assert (result[xi_1], result[xi_2], result[xi_email]) == ("failed", "failed", "submitted")
    # a failure reported by webhook is judged by the web app's retry policy (tests/integration/conftest.RETRY)
    assert [e.outcome for e in sandbox.fax.oracle() if e.destination == xi_2] == ["no_fax_tone", "no_fax_tone"]
    assert [m.destination for m in sandbox.mail.oracle()].count(xi_email) == 1
    assert sandbox.duplicates() == {}


def test_pause_resume_and_cancel_through_real_workers(
    factory: sessionmaker[Session], sandbox: Sandbox, processes: Processes, tmp_path: Path
) -> None:
    from dispatcher.domain import control

    name = schedule_campaign(factory, build_campaign(tmp_path))
    with transaction(factory) as session:
        control.pause(session, name)
    processes.start("worker", "--concurrency", "1")
    processes.start("scheduler", "--interval", "0.3")
    time.sleep(4)  # a paused campaign: ticks pass, nothing is claimed
    assert sandbox.fax.oracle() == [] and sandbox.mail.oracle() == []
    assert set(states(factory).values()) == {"planned"}
    with transaction(factory) as session:
        control.resume(session, name)
    wait_for(lambda: len(sandbox.fax.oracle()) >= 1, what="sending to start after resume")
    with transaction(factory) as session:
        control.cancel(session, name)
    wait_for(
        lambda: all(s in ("delivered", "submitted", "cancelled", "failed") for s in states(factory).values()),
        what="every delivery to end after the cancel",
        explain=lambda: explain(factory),
    )
    sent = {e.destination for e in sandbox.fax.oracle()} | {e.destination for e in sandbox.mail.oracle()}
    for destination, state in states(factory).items():
        assert (state == "cancelled") == (destination not in sent), (destination, state)
    assert sandbox.duplicates() == {}


def lose_webhooks(processes: Processes) -> None:
    """The workers ask the provider to post status webhooks to a closed port: only the worker's own
    record, the status poll and reconciliation move a fax on."""
    from workers.sandbox.server import free_port

    processes.env["DISPATCH_TELNYX_WEBHOOK_URL"] = f"http://127.0.0.1:{free_port()}/webhooks/telnyx"
    processes.env["DISPATCH_POLL_AFTER_SECONDS"] = "2"


def broker(db: int = 0) -> redis.Redis:
    return redis.Redis.from_url(BROKER.rsplit("/", 1)[0] + f"/{db}", socket_timeout=5)


def went_unknown(factory: sessionmaker[Session], delivery_id: int) -> Callable[[], bool]:
    def check() -> bool:
        with factory() as session:
            found = session.scalar(
                select(DeliveryEvent.id).where(
                    DeliveryEvent.delivery_id == delivery_id, DeliveryEvent.to_state == "unknown"
                )
            )
            return found is not None

    return check


def sending_to(factory: sessionmaker[Session], destination: str) -> int:
    with factory() as session:
        return session.scalars(
            select(Delivery.id).where(Delivery.destination == destination, Delivery.state == "sending")
        ).one()


def test_a_killed_workers_claim_and_slot_are_freed_about_one_lease_later(
    factory: sessionmaker[Session], sandbox: Sandbox, processes: Processes, tmp_path: Path
) -> None:
    """One call at a time through the fax gateway. A worker SIGKILLed while the provider holds its fax
    renews neither its claim nor its in-flight slot: about one lease (3 s here) later the row is unknown
    and the slot is free, so the other fax goes out; the killed one is reconciled with no second send."""
    from workers import keys

    lose_webhooks(processes)
    processes.env["DISPATCH_GATEWAY_IN_FLIGHT"] = "1"
    sandbox.fax.latency = 30.0  # the provider takes the fax and answers long after the kill
    name = schedule_campaign(factory, build_campaign(tmp_path))
    worker = processes.start("worker", "--concurrency", "1", "--queues", "fax")
    processes.start("scheduler", "--interval", "0.3")
    wait_for(lambda: len(sandbox.fax.oracle()) == 1, what="a fax at the provider, its answer still to come")
    killed = sending_to(factory, sandbox.fax.oracle()[0].destination)
    processes.kill(worker)
    sandbox.fax.latency = 0.0
    wait_for(went_unknown(factory, killed), timeout=30, what="the sweeper to notice the dead worker")
    client = broker()
    slots = keys.gateway_slots("telnyx", namespace=processes.env["DISPATCH_QUEUE_PREFIX"])
    wait_for(
        lambda: client.zcount(slots, time.time(), "+inf") == 0, timeout=10, what="the dead worker's slot to expire"
    )
    processes.start("worker", "--concurrency", "1")
    wait_for(all_settled(factory, name), timeout=90, what="the campaign to complete", explain=lambda: explain(factory))
    assert sandbox.duplicates() == {}
    with factory() as session:
        row = session.get(Delivery, killed)
        assert row is not None and (row.state, row.attempt_count) == ("delivered", 1), history(factory, row.destination)
    client.close()


def test_reconciliation_runs_while_the_send_worker_waits_on_a_slow_fax(
    factory: sessionmaker[Session], sandbox: Sandbox, processes: Processes, worker: WorkerContext, tmp_path: Path
) -> None:
    """The fax gateway's one in-flight slot is held by a slow send (the provider answers after 25 s, within
    the task's time limits and the HTTP read timeout), and the send worker's one pool process is on it.
    Reconciliation has a queue and a worker of its own: meanwhile Wang's unknown fax is looked up, found
    missing twice, and planned again."""
    from .test_review_fixes import unknown_without_a_send

    lose_webhooks(processes)
    processes.env["DISPATCH_GATEWAY_IN_FLIGHT"] = "1"
    processes.env["DISPATCH_TASK_SOFT_TIME_LIMIT_SECONDS"] = "40"
    processes.env["DISPATCH_TASK_TIME_LIMIT_SECONDS"] = "45"
    sandbox.fax.latency = 25.0
    schedule_campaign(factory, build_campaign(tmp_path))
    wang = unknown_without_a_send(worker, factory, WANG)  # queues the rest too: the sweeper re-publishes it
    sender = processes.start("worker", "--concurrency", "1", "--queues", "fax,email,copies")
    processes.start("worker", "--concurrency", "1", "--queues", "reconcile")
    processes.start("scheduler", "--interval", "0.3")
    wait_for(lambda: XI_1 in [e.destination for e in sandbox.fax.oracle()], what="Xi Jinping's fax at the provider")
    try:
        wait_for(lambda: states(factory)[WANG] != "unknown", timeout=20, what="Wang's fax to be reconciled")
        assert any("twice listed no message" in reason for _, _, reason in history(factory, WANG))
        assert states(factory)[XI_1] == "sending"  # the slow send still holds the slot and the pool process
    finally:
        processes.kill(sender)  # SIGKILL: a warm shutdown would wait for the slow send
    assert [e.destination for e in sandbox.fax.oracle()] == [XI_1]
    assert wang


def test_every_redis_key_of_a_deployment_starts_with_its_prefix(
    factory: sessionmaker[Session], sandbox: Sandbox, processes: Processes, tmp_path: Path
) -> None:
    """Listed while a real worker holds an unacknowledged message: kombu's queues, bindings, ``unacked``
    and ``unacked_index``, and the shared limits, all under DISPATCH_QUEUE_PREFIX."""
    db = 11  # a Redis database no other test uses: every key in it is this deployment's
    prefix = processes.env["DISPATCH_QUEUE_PREFIX"]
    processes.env["DISPATCH_BROKER_URL"] = BROKER.rsplit("/", 1)[0] + f"/{db}"
    lose_webhooks(processes)
    client = broker(db)
    before = set(client.keys("*"))
    sandbox.fax.latency = 15.0  # the worker stays inside its task, the message unacknowledged
    schedule_campaign(factory, build_campaign(tmp_path))
    worker = processes.start("worker", "--concurrency", "1")
    processes.start("scheduler", "--interval", "0.3")
    try:
        wait_for(lambda: len(sandbox.fax.oracle()) >= 1, what="a fax in flight inside a task")
        written = sorted(k.decode() for k in set(client.keys("*")) - before)
        assert {f"{prefix}unacked", f"{prefix}unacked_index"} <= set(written), written
        assert [key for key in written if not key.startswith(prefix)] == [], written
    finally:
        processes.kill(worker)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()
