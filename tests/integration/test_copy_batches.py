"""The batch path for supporter copies (workers/batch.py): a broker message's copies claimed, sent over one
SMTP connection and recorded together, each outcome as the per-delivery path records it; a copy withdrawn
after it was queued is not sent; a second message with the same ids sends nothing; a worker that stops
after the claim leaves `sending` rows that the sweeper turns `unknown`. Real SMTP server (aiosmtpd),
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from pydantic_settings import BaseSettings
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.messages import EmailMessage, Receipt
from dispatcher.domain.models import Attempt, Delivery, DeliveryEvent, Supporter
from dispatcher.domain.scheduling import SchedulerConfig, run_once
from dispatcher.domain.states import Channel
from dispatcher.domain.suppression import SuppressionReason, suppress
from workers.delivery import WorkerContext, deliver_many
from workers.gateways.base import Gateway
from workers.gateways.errors import DeliveryError

from ..builders import build_campaign
from .conftest import SETTINGS, Sandbox, now, schedule_campaign

PEOPLE = ["ok1", "soft", "refused", "ok2", "gone", "ok3"]


def address(who: str) -> str:
    return f"{who}.supporter@example.org"


def queue_copies(factory: sessionmaker[Session], tmp_path: Path, people: Sequence[str] = PEOPLE) -> list[int]:
    """A campaign whose copies go at dispatch, scheduled; one scheduler tick; the ids published on the
    copies queue (one message: fewer copies than a batch)."""
    rows = [(address(p), p.title(), "yes") for p in people]
    schedule_campaign(
        factory, build_campaign(tmp_path, supporters=rows, extra={"supporters": {"copies": "at-dispatch"}})
    )
    messages: list[list[int]] = []
    run_once(
        factory,
        lambda queue, ids: messages.append(list(ids)) if queue == "copies" else None,
        lambda queue, ids: None,
        now=now(),
        config=SchedulerConfig.from_settings(SETTINGS),
    )
    assert len(messages) == 1
    return messages[0]


def copy_states(factory: sessionmaker[Session]) -> dict[str, str]:
    with factory() as session:
        rows = session.execute(select(Delivery.destination, Delivery.state).where(Delivery.kind == "copy")).all()
    return {destination.split(".")[0]: state for destination, state in rows}


def received(sandbox: Sandbox) -> list[str]:
    assert sandbox.sink is not None
    return sorted(m.rcpt_tos[0].split(".")[0] for m in sandbox.sink.messages())


def test_a_batch_with_mixed_outcomes_records_each_as_a_single_send_would(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.mail.script(address("soft"), ["rate_limited"])  # 451 at RCPT
    sandbox.mail.script(address("refused"), ["invalid_number"])  # 550 at RCPT: the recipient refused
    sandbox.mail.script(address("gone"), ["drop"])  # accepted, then the connection dropped before the reply
    ids = queue_copies(factory, tmp_path)
    summary = deliver_many(worker, ids)
    assert copy_states(factory) == {
        "ok1": "submitted",
        "soft": "retry_wait",
        "refused": "failed",
        "ok2": "submitted",
        "gone": "unknown",  # the server may have it: reconciled, never resent blindly
        # after a send that got no answer the rest of the batch is not sent, and not counted against the route
        "ok3": "retry_wait",
    }
    assert summary == {"submitted": 2, "transient": 2, "permanent": 1, "unknown": 1}
    assert received(sandbox) == ["gone", "ok1", "ok2"]  # the sink kept the dropped one
    with factory() as session:
        attempts = {
            destination.split(".")[0]: (outcome, error_code, sha256 is not None, provider_id is not None)
            for destination, outcome, error_code, sha256, provider_id in session.execute(
                select(
                    Delivery.destination,
                    Attempt.outcome,
                    Attempt.error_code,
                    Attempt.document_sha256,
                    Attempt.provider_id,
                )
                .join(Attempt, Attempt.delivery_id == Delivery.id)
                .where(Delivery.kind == "copy")
            )
        }
        submitted = session.scalars(select(Delivery).where(Delivery.destination == address("ok1"))).one()
        events = session.scalars(
            select(DeliveryEvent.to_state).where(DeliveryEvent.delivery_id == submitted.id).order_by(DeliveryEvent.id)
        ).all()
    assert attempts == {
        "ok1": ("submitted", None, True, True),
        "soft": ("transient", "451", True, False),
        "refused": ("permanent", "550", True, False),
        "ok2": ("submitted", None, True, True),
        "gone": ("unknown", "dropped", True, False),
        "ok3": ("not-sent", "batch-stopped", True, False),
    }
    with factory() as session:
        stopped = session.scalars(
            select(DeliveryEvent.reason)
            .join(Delivery, Delivery.id == DeliveryEvent.delivery_id)
            .where(Delivery.destination == address("ok3"))
            .order_by(DeliveryEvent.id.desc())
        ).first()
    assert submitted.provider_id is not None and submitted.document_sha256 is not None
    assert events == ["planned", "queued", "sending", "submitted"]
    # why the rest was not sent names the earlier send's kind, never its text (which may hold its address)
    assert stopped is not None and "an earlier send of this batch got Unknown (dropped)" in stopped
    assert "gone" not in stopped and "@" not in stopped
    assert sandbox.duplicates() == {}


def test_a_configuration_fault_pauses_the_gateway_and_the_rest_of_the_batch_waits_unsent(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.mail.script(address("b"), ["unauthorized"])  # 530 at RCPT: the relay wants AUTH
    ids = queue_copies(factory, tmp_path, ["a", "b", "c"])
    deliver_many(worker, ids)
    assert copy_states(factory) == {"a": "submitted", "b": "retry_wait", "c": "retry_wait"}
    assert received(sandbox) == ["a"]
    with factory() as session:
        outcomes = session.scalars(select(Attempt.outcome).order_by(Attempt.delivery_id)).all()
        paused = session.execute(select(Delivery.state).where(Delivery.kind == "copy")).all()
    assert outcomes[-2:] == ["not-sent", "not-sent"]  # neither counted against its route
    assert len(paused) == 3
    from dispatcher.domain import gateway_pauses

    with factory() as session:
        assert gateway_pauses.pause_of(session, "smtp") is not None


def test_a_copy_withdrawn_after_it_was_queued_is_not_sent(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = queue_copies(factory, tmp_path, ["stays", "withdraws", "unsubscribes", "erased"])
    with transaction(factory) as session:  # between planning (and queueing) and the worker's claim
        session.execute(update(Supporter).where(Supporter.email == address("withdraws")).values(consent=False))
        suppress(session, address("unsubscribes"), reason=SuppressionReason.UNSUBSCRIBED, source="test", at=now())
        session.execute(update(Delivery).where(Delivery.destination == address("erased")).values(supporter_id=None))
    summary = deliver_many(worker, ids)
    assert summary == {"submitted": 1, "copy-withheld": 3}
    assert received(sandbox) == ["stays"]
    assert copy_states(factory) == {
        "stays": "submitted",
        "withdraws": "cancelled",
        "unsubscribes": "cancelled",
        "erased": "cancelled",
    }
    with factory() as session:
        reasons = session.scalars(
            select(DeliveryEvent.reason).where(DeliveryEvent.to_state == "cancelled").order_by(DeliveryEvent.id)
        ).all()
    assert reasons == [
        "the supporter withdrew consent",
        "the address is on the suppression list (unsubscribed, bounced or complained)",
        "the supporter is no longer on the list (removed or erased)",
    ]
    assert not any("@" in r for r in reasons)  # no address in the log


def test_a_second_message_with_the_same_ids_sends_nothing(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    ids = queue_copies(factory, tmp_path, ["a", "b", "c"])
    assert deliver_many(worker, ids) == {"submitted": 3}
    assert deliver_many(worker, ids) == {"not-claimable:submitted": 3}
    assert received(sandbox) == ["a", "b", "c"]
    assert sandbox.duplicates() == {}


@pytest.mark.parametrize("stop", ["after_claim"])
def test_a_worker_stopped_after_the_claim_leaves_sending_rows_that_the_sweeper_turns_unknown(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path, stop: str
) -> None:
    class Killed(BaseException):  # as a SIGKILL: nothing after it runs, no outcome is recorded
        pass

    def die(_delivery_id: int) -> None:
        raise Killed

    ids = queue_copies(factory, tmp_path, ["a", "b"])
    worker.hooks[stop] = die
    with pytest.raises(Killed):
        deliver_many(worker, ids)
    assert copy_states(factory) == {"a": "sending", "b": "sending"}
    assert received(sandbox) == []
    later = now() + worker.lease + timedelta(seconds=1)
    run_once(factory, lambda q, i: None, lambda q, i: None, now=later, config=SchedulerConfig.from_settings(SETTINGS))
    assert copy_states(factory) == {"a": "unknown", "b": "unknown"}
    assert received(sandbox) == []


def test_the_check_before_a_chunk_refuses_expired_leases_and_sends_none_of_them(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The leases run out between the claim and the chunk's send (a long wait for the rate, a stalled worker):
    nothing leaves, and the rows wait to be sent again, the attempts not counted."""
    moved = timedelta(0)

    def clock() -> datetime:
        return now() + moved

    def stall(_delivery_id: int) -> None:
        nonlocal moved
        moved = late.lease + timedelta(seconds=1)

    late = replace(worker, clock=clock, hooks={"after_claim": stall})
    ids = queue_copies(factory, tmp_path, ["a", "b"])
    deliver_many(late, ids)
    assert received(sandbox) == []
    assert copy_states(factory) == {"a": "retry_wait", "b": "retry_wait"}
    with factory() as session:
        outcomes = session.execute(select(Attempt.outcome, Attempt.error_code)).all()
    assert sorted(tuple(o) for o in outcomes) == [("not-sent", "lease-expired")] * 2


def test_a_time_limit_during_a_batch_request_leaves_every_copy_of_it_unknown(
    factory: sessionmaker[Session], worker: WorkerContext, tmp_path: Path
) -> None:
    """Through a batch endpoint one request carries the whole chunk: when the task's time limit strikes
    during it, the provider may have any of them, so none may be taken for 'not sent' and sent again."""

    class Batchy(Gateway):
        provider: ClassVar[str] = "batchy"
        channel: ClassVar[Channel] = Channel.EMAIL
        settings_class: ClassVar[type[BaseSettings]] = BaseSettings
        per_second: ClassVar[int] = 1000
        in_flight: ClassVar[int] = 10
        max_batch: ClassVar[int] = 500

        def _send_email_batch(self, emails: Sequence[EmailMessage]) -> Sequence[Receipt | DeliveryError]:
            raise SoftTimeLimitExceeded()

    ids = queue_copies(factory, tmp_path, ["a", "b", "c"])
    cut = replace(worker, gateways={**worker.gateways, "copies": Batchy(BaseSettings())})
    with pytest.raises(SoftTimeLimitExceeded):
        deliver_many(cut, ids)
    assert copy_states(factory) == {"a": "unknown", "b": "unknown", "c": "unknown"}
