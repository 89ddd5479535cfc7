"""The ledger on SQLAlchemy: the only code that writes deliveries, attempts, delivery_events and gateway_states.

Every move is checked against the state machine (states.check_transition), in bulk too, and every
reason, last error and provider detail is stored through ``ledger.stored_text``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, case, delete, func, insert, null, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dispatcher.domain.errors import TransitionError
from dispatcher.domain.ledger import (
    CONFIGURATION_PAUSE,
    KEEPS_LAST_ERROR,
    Due,
    Erased,
    Finished,
    Planned,
    Submitted,
    redact,
    stored_text,
)
from dispatcher.domain.models import Attempt, Delivery, DeliveryEvent, GatewayState
from dispatcher.domain.states import State, check_transition

CHUNK = 5000  # rows per bulk INSERT (one executemany each)
QUEUE_CHUNK = 500  # ids per bulk UPDATE ... WHERE id IN (...), well within every database's bound parameters
FIRST_STATES = frozenset({State.PLANNED, State.SKIPPED})  # a delivery is loaded planned, or skipped with why
# The current attempt is open while its delivery is in one of these states. When the delivery leaves one
# for a settled state (the worker's record, a webhook, a poll, reconciliation or an operator), the
# attempt's record is completed with the outcome that state means, unless it already has a final one.
OPEN_ATTEMPT = frozenset({State.SENDING, State.SUBMITTED, State.UNKNOWN})
ATTEMPT_OUTCOME = {
    State.SUBMITTED: "submitted",
    State.DELIVERED: "delivered",
    State.FAILED: "permanent",
    State.RETRY_WAIT: "transient",
}
PROVISIONAL = frozenset({"unknown", "submitted"})  # attempt outcomes that a later settlement replaces


def last_error(target: State, reason: str) -> str | None:
    """What a delivery shows as its last error after a move to ``target`` with ``reason`` (stored form)."""
    return reason if target in KEEPS_LAST_ERROR and reason else None


class SqlLedger:
    """Writes in the given session's transaction; the caller commits."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def plan(self, campaign_id: int, rows: Sequence[Planned], *, actor: str) -> None:
        """Bulk INSERT in chunks, one executemany each: sqlite3's executemany, psycopg's pipelined one.

        Without RETURNING; asking for it would switch to multi-row ``INSERT ... VALUES`` statements
        (insertmanyvalues), which psycopg parses client-side: measured 2-3x slower on PostgreSQL here.
        The new ids are read back by their idempotency keys, which are unique."""
        for row in rows:
            if row.state not in FIRST_STATES:
                raise TransitionError(f"a delivery starts planned or skipped, not {row.state}")
        stored = [(row, stored_text(row.values["kind"], row.reason)) for row in rows]
        self._insert(
            Delivery,
            [{**row.values, "state": row.state, "last_error": last_error(row.state, reason)} for row, reason in stored],
        )
        ids = {
            key: id_
            for key, id_ in self.session.execute(
                select(Delivery.idempotency_key, Delivery.id).where(Delivery.campaign_id == campaign_id)
            )
        }
        events = [
            {
                "delivery_id": ids[row.values["idempotency_key"]],
                "campaign_id": campaign_id,
                "actor": actor,
                "from_state": None,
                "to_state": row.state,
                "reason": reason,
            }
            for row, reason in stored
        ]
        self._insert(DeliveryEvent, events)

    def discard_draft(self, campaign_id: int) -> None:
        # the append-only trigger lets events go with their deliveries while the campaign is a draft
        self.session.execute(delete(Delivery).where(Delivery.campaign_id == campaign_id))

    def move(
        self,
        delivery: Delivery,
        target: State,
        *,
        actor: str,
        at: datetime,
        reason: str = "",
        error_class: str | None = None,
        provider_id: str | None = None,
        provider_event_id: str | None = None,
        data: dict[str, Any] | None = None,
        not_before: datetime | None = None,
    ) -> None:
        check_transition(delivery.state, target)
        reason = stored_text(delivery.kind, reason)
        self._complete_attempt(delivery, target, at=at, provider_id=provider_id)
        self._event(
            delivery,
            to_state=target,
            actor=actor,
            at=at,
            reason=reason,
            error_class=error_class,
            provider_id=provider_id,
            provider_event_id=provider_event_id,
            data=data,
        )
        delivery.state = str(target)
        if (error := last_error(target, reason)) is not None:
            delivery.last_error = error
        if not_before is not None:
            delivery.not_before = not_before

    def note(
        self,
        delivery: Delivery,
        *,
        actor: str,
        at: datetime,
        reason: str,
        error_class: str | None = None,
        provider_id: str | None = None,
        provider_event_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self._event(
            delivery,
            to_state=delivery.state,
            actor=actor,
            at=at,
            reason=stored_text(delivery.kind, reason),
            error_class=error_class,
            provider_id=provider_id,
            provider_event_id=provider_event_id,
            data=data,
        )

    def queue(self, due: Sequence[Due], *, actor: str, at: datetime) -> None:
        """One UPDATE and one multi-row INSERT of events per chunk of rows the caller has locked."""
        for row in due:
            check_transition(row.state, State.QUEUED)
        for start in range(0, len(due), QUEUE_CHUNK):
            rows = due[start : start + QUEUE_CHUNK]
            self.session.execute(
                update(Delivery)
                .where(Delivery.id.in_([r.id for r in rows]))
                .values(state=State.QUEUED, queued_at=at, updated_at=at)
                .execution_options(synchronize_session=False)
            )
            self.session.execute(
                insert(DeliveryEvent),
                [
                    {
                        "delivery_id": r.id,
                        "campaign_id": r.campaign_id,
                        "at": at,
                        "actor": actor,
                        "from_state": r.state,
                        "to_state": State.QUEUED,
                        "reason": stored_text(r.kind, r.reason),
                    }
                    for r in rows
                ],
            )

    def requeued(self, delivery: Delivery, *, at: datetime) -> None:
        delivery.queued_at = at

    def taken(self, ids: Sequence[int], *, at: datetime) -> None:
        """A worker took the message of these rows: ``queued_at`` restarts, so the sweeper, which
        republishes a row queued longer than DISPATCH_REPUBLISH_AFTER_SECONDS, leaves them to it."""
        for start in range(0, len(ids), QUEUE_CHUNK):
            self.session.execute(
                update(Delivery)
                .where(Delivery.id.in_(list(ids[start : start + QUEUE_CHUNK])), Delivery.state == State.QUEUED)
                .values(queued_at=at)
                .execution_options(synchronize_session=False)
            )

    def wait(self, delivery: Delivery, *, until: datetime) -> None:
        delivery.not_before = until

    def wait_all(self, campaign_id: int, *, kind: str, state: str, until: datetime) -> int:
        result = self.session.execute(
            update(Delivery)
            .where(Delivery.campaign_id == campaign_id, Delivery.kind == kind, Delivery.state == state)
            .values(not_before=until)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def claim(
        self, delivery: Delivery, *, actor: str, at: datetime, lease_until: datetime, gateway: str, reports: bool
    ) -> int | None:
        """The row is updated only if it is still ``queued`` (no row, no send); this attempt's provider id
        comes with its receipt, older ones stay on their Attempt rows."""
        check_transition(State.QUEUED, State.SENDING)
        number = delivery.attempt_count + 1
        result = self.session.execute(
            update(Delivery)
            .where(Delivery.id == delivery.id, Delivery.state == State.QUEUED)
            .values(
                state=State.SENDING,
                updated_at=at,
                lease_expires_at=lease_until,
                attempt_count=number,
                gateway=gateway,
                expects_report=reports,
                provider_id=None,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        reason = f"attempt {number} via {gateway}"
        self._event(delivery, from_state=State.QUEUED, to_state=State.SENDING, actor=actor, at=at, reason=reason)
        self.session.add(Attempt(delivery_id=delivery.id, number=number, gateway=gateway, started_at=at))
        self.session.expire(delivery)  # the UPDATE bypassed the ORM: read the row afresh when asked
        return number

    def renew(self, delivery_id: int, attempt: int, *, at: datetime, until: datetime) -> bool:
        """One UPDATE whose WHERE is the whole check: the row's state, its attempt and its lease."""
        result = self.session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                Delivery.state == State.SENDING,
                Delivery.attempt_count == attempt,
                Delivery.lease_expires_at > at,
            )
            .values(lease_expires_at=until)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined, no-any-return]

    def claim_many(
        self, rows: Sequence[Due], *, actor: str, at: datetime, lease_until: datetime, gateway: str, reports: bool
    ) -> dict[int, int]:
        """``claim`` for many rows the caller has locked: one ``UPDATE ... WHERE id IN (...) AND
        state='queued' RETURNING`` per chunk (the compare-and-set, row by row), then the events and
        attempts of the rows it took, one multi-row INSERT each. Returns delivery id -> attempt number."""
        check_transition(State.QUEUED, State.SENDING)
        by_id = {r.id: r for r in rows}
        claimed: dict[int, int] = {}
        for start in range(0, len(rows), QUEUE_CHUNK):
            chunk = [r.id for r in rows[start : start + QUEUE_CHUNK]]
            taken = self.session.execute(
                update(Delivery)
                .where(Delivery.id.in_(chunk), Delivery.state == State.QUEUED)
                .values(
                    state=State.SENDING,
                    updated_at=at,
                    lease_expires_at=lease_until,
                    attempt_count=Delivery.attempt_count + 1,
                    gateway=gateway,
                    expects_report=reports,
                    provider_id=None,
                )
                .returning(Delivery.id, Delivery.attempt_count)
                .execution_options(synchronize_session=False)
            ).all()
            claimed.update({id_: number for id_, number in taken})
        if not claimed:
            return claimed
        self.session.execute(
            insert(DeliveryEvent),
            [
                {
                    "delivery_id": id_,
                    "campaign_id": by_id[id_].campaign_id,
                    "at": at,
                    "actor": actor,
                    "from_state": State.QUEUED,
                    "to_state": State.SENDING,
                    "reason": f"attempt {number} via {gateway}",
                }
                for id_, number in claimed.items()
            ],
        )
        self.session.execute(
            insert(Attempt),
            [
                {"delivery_id": id_, "number": number, "gateway": gateway, "started_at": at}
                for id_, number in claimed.items()
            ],
        )
        return claimed

    def renew_many(self, attempts: Mapping[int, int], *, at: datetime, until: datetime) -> set[int]:
        """``renew`` for many claims (delivery id -> attempt) in one UPDATE per chunk; the ids renewed."""
        renewed: set[int] = set()
        pairs = list(attempts.items())
        for start in range(0, len(pairs), QUEUE_CHUNK):
            chunk = pairs[start : start + QUEUE_CHUNK]
            renewed.update(
                self.session.scalars(
                    update(Delivery)
                    .where(
                        tuple_(Delivery.id, Delivery.attempt_count).in_(chunk),
                        Delivery.state == State.SENDING,
                        Delivery.lease_expires_at > at,
                    )
                    .values(lease_expires_at=until)
                    .returning(Delivery.id)
                    .execution_options(synchronize_session=False)
                )
            )
        return renewed

    def submit_many(self, rows: Sequence[Submitted], *, actor: str, at: datetime) -> None:
        """Receipts for claims the caller has locked and found still ``sending`` for their attempt: what
        ``finish_attempt`` + ``identify`` + ``move(SUBMITTED)`` write one by one, in three statements
        (attempts and deliveries by executemany, events by one multi-row INSERT)."""
        if not rows:
            return
        check_transition(State.SENDING, State.SUBMITTED)
        attempts, deliveries = Attempt.__table__, Delivery.__table__  # Core: executemany with a WHERE by bindparam
        assert isinstance(attempts, Table) and isinstance(deliveries, Table)
        self.session.execute(
            update(attempts)
            .where(attempts.c.delivery_id == bindparam("b_delivery"), attempts.c.number == bindparam("b_number"))
            .values(
                # as finish_attempt: an outcome a report already settled is kept
                outcome=case(
                    (
                        or_(attempts.c.outcome.is_(None), *(attempts.c.outcome == p for p in sorted(PROVISIONAL))),
                        "submitted",
                    ),
                    else_=attempts.c.outcome,
                ),
                finished_at=at,
                document_sha256=bindparam("b_sha256"),
                error_code=None,
                evidence=bindparam("b_evidence"),
                detail=None,
                provider_id=bindparam("b_provider_id"),
            ),
            [
                {
                    "b_delivery": r.delivery_id,
                    "b_number": r.attempt,
                    "b_sha256": r.document_sha256,
                    "b_evidence": r.evidence,
                    "b_provider_id": r.provider_id,
                }
                for r in rows
            ],
        )
        self.session.execute(
            update(deliveries)
            .where(deliveries.c.id == bindparam("b_delivery"))
            .values(
                state=State.SUBMITTED,
                updated_at=at,
                provider_id=func.coalesce(deliveries.c.provider_id, bindparam("b_provider_id")),
                document_sha256=bindparam("b_sha256"),
                page_count=bindparam("b_pages"),
            ),
            [
                {
                    "b_delivery": r.delivery_id,
                    "b_provider_id": r.provider_id,
                    "b_sha256": r.document_sha256,
                    "b_pages": r.page_count,
                }
                for r in rows
            ],
        )
        self.session.execute(
            insert(DeliveryEvent),
            [
                {
                    "delivery_id": r.delivery_id,
                    "campaign_id": r.campaign_id,
                    "at": at,
                    "actor": actor,
                    "from_state": State.SENDING,
                    "to_state": State.SUBMITTED,
                    "reason": stored_text(r.kind, r.reason),
                    "provider_id": r.provider_id,
                }
                for r in rows
            ],
        )

    def finish_attempt(self, delivery: Delivery, number: int, *, at: datetime, finished: Finished) -> None:
        """The worker's record of its call. A receipt, or a late error, recorded after a status report
        already settled the attempt (delivered, failed, retried) keeps that outcome."""
        attempt = self._attempt(delivery.id, number)
        assert attempt is not None, f"delivery #{delivery.id} has no attempt {number}"
        settled = attempt.outcome is not None and attempt.outcome not in PROVISIONAL
        if not (settled and finished.outcome in ("submitted", "late")):
            attempt.outcome = finished.outcome
        attempt.finished_at = at
        attempt.document_sha256 = finished.document_sha256
        attempt.error_code, attempt.evidence = finished.error_code, finished.evidence
        attempt.detail = stored_text(delivery.kind, finished.detail) if finished.detail is not None else None
        if finished.provider_id is not None:
            attempt.provider_id = finished.provider_id
        if finished.document_sha256 is not None:
            delivery.document_sha256, delivery.page_count = finished.document_sha256, finished.page_count

    def identify(self, delivery: Delivery, provider_id: str) -> None:
        if delivery.provider_id is None:
            delivery.provider_id = provider_id
        self.attach(delivery, provider_id)

    def attach(self, delivery: Delivery, provider_id: str) -> None:
        attempt = self._attempt(delivery.id, delivery.attempt_count)
        if attempt is not None and attempt.provider_id is None:
            attempt.provider_id = provider_id

    def not_sent(self, delivery: Delivery, number: int, *, detail: str) -> None:
        attempt = self._attempt(delivery.id, number)
        if attempt is not None:
            attempt.outcome = "not-sent"
            attempt.detail = stored_text(delivery.kind, detail)

    def erase(self, delivery_ids: Sequence[int], *, marker: str, personal: Sequence[str]) -> Erased:
        """Row by row for deliveries and attempts (a person has few copies), one UPDATE for the events' data."""
        events = attempts = 0
        for start in range(0, len(delivery_ids), QUEUE_CHUNK):
            chunk = list(delivery_ids[start : start + QUEUE_CHUNK])
            for delivery in self.session.scalars(select(Delivery).where(Delivery.id.in_(chunk))):
                delivery.destination, delivery.supporter_id = marker, None
                if delivery.last_error is not None:
                    delivery.last_error = redact(delivery.last_error, personal, marker)
            for attempt in self.session.scalars(select(Attempt).where(Attempt.delivery_id.in_(chunk))):
                attempts += 1
                if attempt.evidence is not None:
                    attempt.evidence = {marker: True}
                if attempt.detail is not None:
                    attempt.detail = redact(attempt.detail, personal, marker)
            self.session.flush()
            count = select(func.count()).select_from(DeliveryEvent).where(DeliveryEvent.delivery_id.in_(chunk))
            events += self.session.scalar(count) or 0
            self.session.execute(
                update(DeliveryEvent)
                .where(DeliveryEvent.delivery_id.in_(chunk), DeliveryEvent.data.is_not(None))
                .values(data=null())
            )
        return Erased(events=events, attempts=attempts)

    # -- gateways ------------------------------------------------------------------------------------

    def pause_gateway(
        self,
        name: str,
        *,
        cause: str,
        at: datetime,
        reason: str,
        setting: str | None,
        trial_after: datetime | None = None,
    ) -> bool:
        row = self._gateway(name)
        if row.paused_at is not None and row.cause == CONFIGURATION_PAUSE:
            return False  # the first configuration fault stands until an operator resumes the gateway
        if row.paused_at is None:
            row.paused_at = at
        row.cause, row.reason, row.setting = cause, reason, setting
        row.trial_after, row.trial_at, row.updated_at = trial_after, None, at
        return True

    def resume_gateway(self, name: str, *, at: datetime, cause: str | None = None) -> bool:
        query = update(GatewayState).where(GatewayState.name == name, GatewayState.paused_at.is_not(None))
        if cause is not None:
            query = query.where(GatewayState.cause == cause)
        result = self.session.execute(
            query.values(
                paused_at=None,
                cause=None,
                reason="",
                setting=None,
                trial_after=None,
                trial_at=None,
                failures=0,
                failing_since=None,
                updated_at=at,
            ).execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def count_gateway_failure(self, name: str, *, at: datetime, window: timedelta) -> int:
        row = self._gateway(name)
        if row.failures == 0 or row.failing_since is None or at - row.failing_since > window:
            row.failures, row.failing_since = 1, at
        else:
            row.failures += 1
        row.updated_at = at
        return row.failures

    def clear_gateway_failures(self, name: str) -> None:
        self.session.execute(
            update(GatewayState)
            .where(GatewayState.name == name, GatewayState.failures > 0)
            .values(failures=0, failing_since=None)
            .execution_options(synchronize_session=False)
        )

    def take_gateway_trial(self, name: str, *, at: datetime, next_trial: datetime) -> bool:
        result = self.session.execute(
            update(GatewayState)
            .where(
                GatewayState.name == name,
                GatewayState.paused_at.is_not(None),
                GatewayState.cause != CONFIGURATION_PAUSE,
                GatewayState.trial_after <= at,
            )
            .values(trial_at=at, trial_after=next_trial, updated_at=at)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def _gateway(self, name: str) -> GatewayState:
        """The gateway's row, created when missing, locked until the transaction ends."""
        dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
        self.session.execute(dialect.insert(GatewayState).values(name=name).on_conflict_do_nothing())
        query = select(GatewayState).where(GatewayState.name == name).with_for_update()
        return self.session.scalars(query.execution_options(populate_existing=True)).one()

    def _complete_attempt(self, delivery: Delivery, target: State, *, at: datetime, provider_id: str | None) -> None:
        """A delivery leaving an open attempt's state for a settled one completes that attempt's record."""
        outcome = ATTEMPT_OUTCOME.get(target)
        if outcome is None or delivery.state not in OPEN_ATTEMPT or delivery.attempt_count == 0:
            return
        attempt = self._attempt(delivery.id, delivery.attempt_count)
        if attempt is None or (attempt.outcome is not None and attempt.outcome not in PROVISIONAL):
            return
        attempt.outcome = outcome
        attempt.finished_at = attempt.finished_at or at
        if attempt.provider_id is None and provider_id is not None:
            attempt.provider_id = provider_id

    def _attempt(self, delivery_id: int, number: int) -> Attempt | None:
        return self.session.scalar(select(Attempt).where(Attempt.delivery_id == delivery_id, Attempt.number == number))

    def _event(self, delivery: Delivery, *, to_state: str, from_state: str | None = None, **fields: Any) -> None:
        """One event row; ``from_state`` is the delivery's state as loaded unless given."""
        self.session.add(
            DeliveryEvent(
                delivery_id=delivery.id,
                campaign_id=delivery.campaign_id,
                from_state=from_state or delivery.state,
                to_state=str(to_state),
                **fields,
            )
        )

    def _insert(self, model: type[Delivery] | type[DeliveryEvent], rows: list[dict[str, Any]]) -> None:
        for start in range(0, len(rows), CHUNK):
            self.session.execute(insert(model), rows[start : start + CHUNK])
