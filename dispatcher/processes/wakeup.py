"""Waking the scheduler as soon as a command made deliveries due, rather than at its next tick.

On PostgreSQL a command that makes deliveries due (`campaign schedule`, `resume`, `delivery retry`) sends
``NOTIFY`` on CHANNEL in its own transaction. PostgreSQL delivers a notification only when its transaction
commits, so the scheduler, which LISTENs between ticks, wakes to find the rows already committed. A wake-up
is only a hint: the tick claims by the same locked compare-and-set rules as every tick, and a wake-up lost
(the listening connection dropped) only leaves the work to the next tick, DISPATCH_TICK_SECONDS later.
On SQLite a command in another process cannot wake the scheduler, which ticks as before; in one process
(the demo) an event does it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "dispatch_scheduler"


class Wakeup(Protocol):
    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True when woken before."""


def notify(session: Session) -> None:
    """Wake the scheduler once this session's transaction commits (PostgreSQL; nothing elsewhere)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))


class EventWakeup:
    """The scheduler's wake-up in one process (the demo): ``wake`` from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wake(self) -> None:
        self._event.set()

    def wait(self, seconds: float) -> bool:
        woken = self._event.wait(seconds)
        self._event.clear()
        return woken


class PostgresWakeup:
    """LISTEN on CHANNEL over a connection of its own, kept between ticks and opened again when lost."""

    def __init__(self, engine: Engine, *, stop: threading.Event | None = None) -> None:
        self._engine = engine
        self._stop = stop or threading.Event()  # set: the wait ends within a second (SIGTERM)
        self._connection: Connection | None = None

    def wait(self, seconds: float) -> bool:
        try:
            listening = self._listening()
            deadline = time.monotonic() + seconds
            woken = False
            while not woken and not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
                woken = any(True for _ in listening.notifies(timeout=min(left, 1.0), stop_after=1))
            if woken:  # the others were committed before the tick that follows: it serves them all
                for _ in listening.notifies(timeout=0):
                    pass
                log.info("scheduler: woken by a command; ticking now")
            return woken
        except Exception as err:  # a database restart: tick on the interval until listening again
            log.warning("scheduler: listening for wake-ups failed (%s); ticking every interval", type(err).__name__)
            self.close()
            time.sleep(seconds)
            return False

    def _listening(self) -> psycopg.Connection[Any]:
        if self._connection is None:
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql(f"LISTEN {CHANNEL}")
            self._connection = connection
            log.info("scheduler: listening for wake-ups (PostgreSQL NOTIFY %s)", CHANNEL)
        driver: psycopg.Connection[Any] = self._connection.connection.driver_connection  # type: ignore[assignment]
        return driver

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.invalidate()  # not back to the pool: it is still LISTENing
                connection.close()
            except Exception as err:
                log.debug("closing the wake-up connection failed: %s", type(err).__name__)
