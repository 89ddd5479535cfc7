"""A claim's lease: renewed while its worker is working on the send, and checked right before the send.

The claim (workers/delivery.py) gives a ``sending`` delivery a lease of DISPATCH_LEASE_SECONDS. From
the claim until the outcome is recorded, a heartbeat thread renews it every third of its length, by
compare-and-set on the row still being ``sending`` for this very attempt (``SqlLedger.renew``), and
renews the in-flight slot the send holds in Redis with it. A worker that dies renews neither: about one
lease later the scheduler's sweep turns the row ``unknown`` (reconciled, never resent blindly) and the
slot has expired, so other sends may take it.

A batch of supporter copies (workers/batch.py) has one heartbeat for all its claims (:class:`BatchLease`):
one UPDATE renews them all, and one confirms a chunk's claims right before the chunk is sent.

Immediately before the gateway call the same compare-and-set runs once more (:meth:`Lease.renew`, from
``workers.delivery._send``): when the row is no longer ``sending`` for this attempt, or its lease has
already run out, the send does not start. So nothing leaves after the sweeper, reconciliation or
another worker may have acted on an expired claim.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.ledger_sql import SqlLedger
from workers.limits import Slot

log = logging.getLogger(__name__)

BEATS_PER_LEASE = 3  # renewals per lease length: two may be late or fail before the lease runs out


class _Heartbeat:
    """A heartbeat thread (a context manager) that renews claims every third of the lease, and with them
    the in-flight slot the send holds; subclasses say which claims (``_renew_claims``)."""

    def __init__(
        self, *, factory: sessionmaker[Session], length: timedelta, clock: Callable[[], datetime], name: str
    ) -> None:
        self.factory = factory
        self.length = length
        self.clock = clock
        self._slot: Slot | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=name, daemon=True)

    def hold(self, slot: Slot | None) -> None:
        """The in-flight slot taken for the send, renewed with the lease; None once it is given back."""
        self._slot = slot

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.length.total_seconds())

    def _beat(self) -> None:
        every = self.length.total_seconds() / BEATS_PER_LEASE
        while not self._stop.wait(every):
            self._renew_claims()
            self._renew_slot()

    def _renew_claims(self) -> None:
        raise NotImplementedError

    def _renew_slot(self) -> None:
        """The slot is renewed while the call holds it, whatever became of the claims: the call is real."""
        slot = self._slot
        if slot is None:
            return
        try:
            slot.renew()
        except Exception as err:
            log.warning("renewing the in-flight slot of %s failed: %s", self._holder(), type(err).__name__)

    def _holder(self) -> str:
        raise NotImplementedError


class Lease(_Heartbeat):
    """The lease of one claimed attempt, and the heartbeat that keeps it (a context manager)."""

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        delivery_id: int,
        attempt: int,
        length: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        super().__init__(factory=factory, length=length, clock=clock, name=f"lease-{delivery_id}")
        self.delivery_id = delivery_id
        self.attempt = attempt

    def renew(self) -> bool:
        """A full lease from now, by compare-and-set in the ledger; False when the claim is lost."""
        now = self.clock()
        with transaction(self.factory) as session:
            return SqlLedger(session).renew(self.delivery_id, self.attempt, at=now, until=now + self.length)

    def _renew_claims(self) -> None:
        try:
            kept = self.renew()
        except Exception as err:  # the next beat tries again; the check before the send decides
            log.warning("renewing the lease of delivery %s failed: %s", self.delivery_id, type(err).__name__)
            return
        if not kept and not self._stop.is_set():
            log.warning(
                "delivery %s: the lease of attempt %s was lost while the worker was still on it; "
                "no send starts for it, and one in progress is reconciled",
                self.delivery_id,
                self.attempt,
            )

    def _holder(self) -> str:
        return f"delivery {self.delivery_id}"


class BatchLease(_Heartbeat):
    """The leases of a batch's claims (delivery id -> attempt), kept by one heartbeat: every third of the
    lease, one UPDATE renews every claim the batch still holds (``SqlLedger.renew_many``), and the batch's
    in-flight slot with them. ``confirm`` is the check right before a chunk's sends, by the same
    compare-and-set for the chunk's claims alone; ``release`` drops claims whose outcome is recorded."""

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        attempts: dict[int, int],
        length: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        super().__init__(factory=factory, length=length, clock=clock, name=f"lease-batch-{len(attempts)}")
        self.attempts = dict(attempts)
        self._lock = threading.Lock()

    def confirm(self, ids: list[int]) -> set[int]:
        """A full lease from now for the claims ``ids`` that are still held; the ids confirmed."""
        with self._lock:
            attempts = {i: self.attempts[i] for i in ids if i in self.attempts}
        return self._renew(attempts)

    def release(self, ids: list[int]) -> None:
        with self._lock:
            for delivery_id in ids:
                self.attempts.pop(delivery_id, None)

    def _renew(self, attempts: dict[int, int]) -> set[int]:
        if not attempts:
            return set()
        now = self.clock()
        with transaction(self.factory) as session:
            return SqlLedger(session).renew_many(attempts, at=now, until=now + self.length)

    def _renew_claims(self) -> None:
        with self._lock:
            attempts = dict(self.attempts)
        try:
            kept = self._renew(attempts)
        except Exception as err:  # the next beat tries again; the check before each chunk decides
            log.warning("renewing the leases of a batch failed: %s", type(err).__name__)
            return
        if len(kept) < len(attempts) and not self._stop.is_set():
            log.warning(
                "%d claim(s) of a batch lost their lease while the worker was still on them; "
                "no send starts for them, and one in progress is reconciled",
                len(attempts) - len(kept),
            )

    def _holder(self) -> str:
        return "a batch"
