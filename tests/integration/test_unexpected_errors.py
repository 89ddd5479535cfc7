"""A gateway that raises something other than a DeliveryError (a bug, an odd input) mid-send.

The real Telnyx gateway against its emulator, subclassed so that its send raises; the emulator sends
no webhooks (no webhook_url), so only the worker and reconciliation move the row. Whether the
provider took the request cannot be known from the exception, so the row is ``unknown`` as soon as
deliver() returns, and reconciliation by our reference settles it: never resent blindly.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.media import media_url
from dispatcher.domain.messages import Message, Receipt
from dispatcher.domain.models import Attempt, Delivery, utcnow
from dispatcher.domain.scheduling import claim_due
from dispatcher.domain.settings import load_settings
from workers.delivery import WorkerContext, deliver
from workers.gateways.fax.telnyx import TelnyxGateway, TelnyxSettings
from workers.limits import NoLimits, NoSlot, RedisLimiter, Slot
from workers.reconcile import reconcile
from workers.runtime import shared_limits
from workers.sandbox.server import free_port

from ..builders import build_campaign
from .conftest import Sandbox, schedule_campaign, worker_context

pytestmark = pytest.mark.timeout(60)

WANG = "+861065591516"
PERSONAL = "wang.yi@example.org"  # what an exception's text could carry; it must not be stored


class BugAfterTheRequest(TelnyxGateway):
    """The provider accepts the fax, then our code fails on its answer."""

    def send(self, message: Message) -> Receipt:
        super().send(message)
        raise KeyError(PERSONAL)


class BugBeforeTheRequest(TelnyxGateway):
    """Our code fails before any request leaves."""

    def send(self, message: Message) -> Receipt:
        raise TypeError(f"cannot encode {PERSONAL}")


class TimeLimitMidSend(TelnyxGateway):
    """The task's soft time limit strikes while the provider is taking the fax."""

    def send(self, message: Message) -> Receipt:
        super().send(message)
        raise SoftTimeLimitExceeded()


def gateway(cls: type[TelnyxGateway], sandbox: Sandbox) -> TelnyxGateway:
    settings = TelnyxSettings(
        api_key=sandbox.api_key,
        connection_id="test-connection",
        public_key=base64.b64encode(bytes(sandbox.signing_key.verify_key)).decode(),
        base_url=sandbox.fax_url,
        webhook_url=None,
    )
    return cls(settings, name="telnyx")


class Clock:
    """The worker's clock, moved on by the test instead of waiting for the reconcile grace."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextmanager
def worker_with(
    cls: type[TelnyxGateway], factory: sessionmaker[Session], sandbox: Sandbox, clock: Clock
) -> Iterator[WorkerContext]:
    fax = gateway(cls, sandbox)
    yield worker_context(
        factory,
        {"fax": fax, "email": sandbox.gateways()["email"]},
        clock=clock,
        media_url=lambda delivery_id, at: media_url(sandbox.web_url, delivery_id, secret=sandbox.secret, now=at),
    )
    fax.close()


def wang_queued(factory: sessionmaker[Session], tmp_path: Path) -> int:
    schedule_campaign(factory, build_campaign(tmp_path))
    with transaction(factory) as session:
        due = {d.destination: d.id for d in claim_due(session, now=utcnow() + timedelta(seconds=5), limit=100)}
    return due[WANG]


def row(factory: sessionmaker[Session], delivery_id: int) -> tuple[str, str | None]:
    with factory() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        return delivery.state, delivery.last_error


def attempts(factory: sessionmaker[Session], delivery_id: int) -> list[tuple[int, str | None, str | None, str | None]]:
    with factory() as session:
        rows = session.scalars(select(Attempt).where(Attempt.delivery_id == delivery_id).order_by(Attempt.number))
        return [(a.number, a.outcome, a.error_code, a.detail) for a in rows]


def test_a_bug_after_the_provider_took_the_fax_is_unknown_then_reconciled_as_sent(
    factory: sessionmaker[Session],
    sandbox: Sandbox,
    clock: Clock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wang = wang_queued(factory, tmp_path)
    with worker_with(BugAfterTheRequest, factory, sandbox, clock) as worker:
        with caplog.at_level(logging.ERROR, logger="workers.delivery"):
            assert deliver(worker, wang) == "unknown"
        assert row(factory, wang) == (
            "unknown",
            "telnyx raised KeyError; the provider may have accepted it: reconcile before any resend",
        )
        assert attempts(factory, wang) == [(1, "unknown", "unexpected-error", "telnyx raised KeyError")]
        assert "KeyError" in caplog.text and PERSONAL not in caplog.text
        clock.now += worker.reconcile_grace
        assert reconcile(worker, wang).startswith("found:")
    state, _ = row(factory, wang)
    assert state in ("submitted", "delivered")  # the provider has it: accepted, and never sent again
    assert [e.destination for e in sandbox.fax.oracle()] == [WANG]
    assert sandbox.duplicates() == {}
    assert [a[0] for a in attempts(factory, wang)] == [1]


def test_a_bug_before_any_request_is_unknown_then_reconciled_as_not_sent(
    factory: sessionmaker[Session], sandbox: Sandbox, clock: Clock, tmp_path: Path
) -> None:
    wang = wang_queued(factory, tmp_path)
    with worker_with(BugBeforeTheRequest, factory, sandbox, clock) as worker:
        assert deliver(worker, wang) == "unknown"
        assert row(factory, wang)[0] == "unknown"
        assert attempts(factory, wang) == [(1, "unknown", "unexpected-error", "telnyx raised TypeError")]
        clock.now += worker.reconcile_grace
        assert reconcile(worker, wang) == "not-found-yet"  # believed only the second time
        clock.now += worker.reconcile_grace
        assert reconcile(worker, wang) == "not-sent"
    assert row(factory, wang)[0] == "retry_wait"
    assert sandbox.fax.oracle() == []


def test_the_time_limit_mid_send_records_unknown_before_the_task_ends(
    factory: sessionmaker[Session], sandbox: Sandbox, clock: Clock, tmp_path: Path
) -> None:
    wang = wang_queued(factory, tmp_path)
    with worker_with(TimeLimitMidSend, factory, sandbox, clock) as worker:
        with pytest.raises(SoftTimeLimitExceeded):
            deliver(worker, wang)
        assert row(factory, wang)[0] == "unknown"  # not left `sending` until the lease expires
        assert attempts(factory, wang) == [(1, "unknown", "timeout", "the task's time limit ended the send")]
        clock.now += worker.reconcile_grace
        assert reconcile(worker, wang).startswith("found:")
    assert row(factory, wang)[0] in ("submitted", "delivered")
    assert sandbox.duplicates() == {}


def test_limits_that_cannot_be_taken_send_nothing_and_wait_without_counting_an_attempt(
    factory: sessionmaker[Session], sandbox: Sandbox, clock: Clock, tmp_path: Path
) -> None:
    """The shared limits' Redis is down (a closed port): the gateway is never called, so nothing left."""
    wang = wang_queued(factory, tmp_path)
    unreachable = RedisLimiter(
        redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1), shared_limits(load_settings())
    )
    with worker_with(BugAfterTheRequest, factory, sandbox, clock) as worker:
        worker.limiter = unreachable
        assert deliver(worker, wang) == "transient"
    assert row(factory, wang)[0] == "retry_wait"
    assert attempts(factory, wang) == [(1, "not-sent", "local-limit", "local limit unavailable (ConnectionError)")]
    assert sandbox.fax.oracle() == []


def test_a_letter_counts_against_its_own_campaigns_rate(
    factory: sessionmaker[Session], sandbox: Sandbox, clock: Clock, tmp_path: Path
) -> None:
    """The campaign a letter's send is counted against is the one its row names, read at the claim."""
    wang = wang_queued(factory, tmp_path)
    with factory() as session:
        campaign_id = session.scalars(select(Delivery.campaign_id).where(Delivery.id == wang)).one()
    asked: list[tuple[str, str | None]] = []

    class Recording(NoLimits):
        @contextmanager
        def sending(self, gateway: str, *, campaign: str | None) -> Iterator[Slot]:
            asked.append((gateway, campaign))
            yield NoSlot()

    with worker_with(TelnyxGateway, factory, sandbox, clock) as worker:
        worker.limiter = Recording()
        assert deliver(worker, wang) == "submitted"
    assert asked == [("telnyx", str(campaign_id))]
