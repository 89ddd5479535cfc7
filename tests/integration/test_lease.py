"""The claim's lease on the real worker path: renewed while a send is in progress, checked right before
the send, and never a send after the lease ran out (the sweeper, reconciliation and a second worker may
already have acted on the row by then).

Time is the worker's injected clock where the test needs a lease to run out at once; the heartbeat test
needs real time (a provider slower than the lease), kept at a few seconds.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.ledger_sql import SqlLedger
from dispatcher.domain.models import Attempt, DeliveryEvent, utcnow
from dispatcher.domain.scheduling import SchedulerConfig, TickResult, claim_due, run_once, sweep
from dispatcher.domain.settings import load_settings
from workers import keys
from workers.delivery import WorkerContext, deliver
from workers.gateways.base import Gateway
from workers.gateways.registry import build_gateway
from workers.limits import RedisLimiter
from workers.reconcile import reconcile
from workers.runtime import shared_limits

from ..builders import build_campaign
from .conftest import SETTINGS, Sandbox, history, schedule_campaign, states

pytestmark = pytest.mark.timeout(90)

WANG = "+861065591516"


class Clock:
    """The worker's clock: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, by: timedelta) -> None:
        self.offset += by


def queued_ids(factory: sessionmaker[Session], *, now: datetime) -> dict[str, int]:
    with transaction(factory) as session:
        return {c.destination: c.id for c in claim_due(session, now=now, limit=100)}


def ignore(_queue: str, _ids: Sequence[int]) -> None:
    """A publisher that drops the message: the test delivers the ids it means to, itself."""


def attempts(factory: sessionmaker[Session], delivery_id: int) -> list[tuple[int, str | None]]:
    with factory() as session:
        rows = session.execute(
            select(Attempt.number, Attempt.outcome).where(Attempt.delivery_id == delivery_id).order_by(Attempt.number)
        ).all()
        return [(r.number, r.outcome) for r in rows]


def test_the_check_before_the_send_refuses_an_expired_lease(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The lease runs out between the claim and the send (a long wait for a limit, a stalled worker):
    nothing leaves, and the row waits to be sent again."""
    clock = Clock()
    late = WorkerContext.from_settings(
        SETTINGS, factory=factory, gateways=worker.gateways, retry=worker.retry, media_url=worker.media_url, clock=clock
    )
    late.hooks["after_claim"] = lambda _id: clock.advance(late.lease + timedelta(seconds=1))
    schedule_campaign(factory, build_campaign(tmp_path))
    wang = queued_ids(factory, now=clock())[WANG]
    deliver(late, wang)
    assert [e.destination for e in sandbox.fax.oracle()] == []
    assert states(factory)[WANG] == "retry_wait", history(factory, WANG)
    assert attempts(factory, wang) == [(1, "not-sent")]
    assert "lease" in history(factory, WANG)[-1][2]


def test_no_send_after_reconciliation_decided_nothing_was_sent(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Worker A claims Wang's fax and stalls past its lease. Meanwhile the sweeper turns the row unknown,
    reconciliation finds nothing at the provider (twice), and worker B sends attempt 2. When A wakes up,
    its check before the send finds the row moved on: the fax went out once."""
    clock = Clock()

    def context(**overrides: object) -> WorkerContext:
        return WorkerContext.from_settings(
            SETTINGS,
            factory=factory,
            gateways=worker.gateways,
            retry=worker.retry,
            media_url=worker.media_url,
            clock=clock,
            reconcile_grace=timedelta(seconds=1),
            **overrides,
        )

    a, b = context(), context()
    config = SchedulerConfig.from_settings(SETTINGS)

    def everything_else_happens(delivery_id: int) -> None:
        clock.advance(a.lease + timedelta(seconds=1))
        run_once(factory, ignore, ignore, now=clock(), config=config)  # the sweeper: sending -> unknown
        assert states(factory)[WANG] == "unknown"
        assert reconcile(b, delivery_id) == "not-found-yet"
        clock.advance(b.reconcile_grace + timedelta(seconds=1))
        assert reconcile(b, delivery_id) == "not-sent"
        assert queued_ids(factory, now=clock()).get(WANG) == delivery_id
        assert deliver(b, delivery_id) == "submitted"

    a.hooks["after_claim"] = everything_else_happens
    schedule_campaign(factory, build_campaign(tmp_path))
    wang = queued_ids(factory, now=clock())[WANG]
    deliver(a, wang)
    assert [e.destination for e in sandbox.fax.oracle()].count(WANG) == 1
    assert sandbox.duplicates() == {}
    assert [n for n, _ in attempts(factory, wang)] == [1, 2]


@pytest.mark.redis
def test_a_send_slower_than_the_lease_keeps_its_claim_and_its_slot(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A live worker renews the lease (and its in-flight slot) while the provider takes longer than one
    lease to answer: the sweeper, running all along, never turns the row unknown."""
    lease = timedelta(seconds=1.5)
    settings = load_settings(lease_seconds=lease.total_seconds(), limit_max_wait_seconds=1.0, gateway_in_flight=1)
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
    namespace = f"test-lease-{utcnow().timestamp():.0f}-{id(client)}-"
    limiter = RedisLimiter(client, shared_limits(settings), namespace=namespace)
    gateways = {**worker.gateways, "fax": quiet_fax(sandbox)}  # no webhooks: only the worker moves the row
    slow = WorkerContext.from_settings(
        SETTINGS, factory=factory, gateways=gateways, media_url=worker.media_url, lease=lease, limiter=limiter
    )
    sandbox.fax.latency = 4.0  # more than two leases
    schedule_campaign(factory, build_campaign(tmp_path))
    wang = queued_ids(factory, now=utcnow())[WANG]
    slots_seen: list[tuple[str, int]] = []
    done = threading.Event()
    sweeper = threading.Thread(target=sweep_until, args=(factory, done, slots_seen, client, namespace))
    sweeper.start()
    try:
        assert deliver(slow, wang) == "submitted"
    finally:
        done.set()
        sweeper.join(timeout=30)
        for key in client.scan_iter(match=f"{namespace}*"):
            client.delete(key)
        client.close()
    with factory() as session:
        went_unknown = session.scalars(
            select(DeliveryEvent.id).where(DeliveryEvent.delivery_id == wang, DeliveryEvent.to_state == "unknown")
        ).all()
    assert went_unknown == [], history(factory, WANG)
    # from the moment it was taken until it was given back after the call, the slot stayed held (more
    # than two of its lives): renewed with the lease
    while_sending = [slots for state, slots in slots_seen if state == "sending"]
    taken, given_back = while_sending.index(1), len(while_sending) - while_sending[::-1].index(1)
    during_the_call = while_sending[taken:given_back]
    assert len(during_the_call) >= 10 and set(during_the_call) == {1}, str(slots_seen)
    assert [e.destination for e in sandbox.fax.oracle()] == [WANG]


def sweep_until(
    factory: sessionmaker[Session],
    done: threading.Event,
    slots_seen: list[tuple[str, int]],
    client: redis.Redis,
    namespace: str,
) -> None:
    """The scheduler's sweep every 0.2 s; after each, Wang's state and the fax gateway's live slots."""
    config = SchedulerConfig.from_settings(SETTINGS)
    key = keys.gateway_slots("telnyx", namespace=namespace)
    while not done.wait(0.2):
        now = utcnow()
        with transaction(factory) as session:
            sweep(session, SqlLedger(session), now=now, config=config, result=TickResult())
        slots_seen.append((states(factory)[WANG], int(client.zcount(key, now.timestamp(), "+inf"))))


def quiet_fax(sandbox: Sandbox) -> Gateway:
    """The sandbox's Telnyx gateway without a webhook URL: the emulator then posts no status webhooks."""
    public_key = base64.b64encode(bytes(sandbox.signing_key.verify_key)).decode()
    return build_gateway(
        "telnyx",
        api_key=sandbox.api_key,
        connection_id="test-connection",
        public_key=public_key,
        base_url=sandbox.fax_url,
    )
