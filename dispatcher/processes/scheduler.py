"""The `dispatch scheduler` loop: one scheduling tick (dispatcher.domain.scheduling) every interval, and at
once when a command wakes it (dispatcher/processes/wakeup.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.scheduling import Publisher, SchedulerConfig, TickResult, Waiting, run_once
from dispatcher.processes.wakeup import Wakeup

log = logging.getLogger(__name__)


def run_forever(
    factory: sessionmaker[Session],
    publisher: Publisher,
    reconciler: Publisher,
    *,
    clock: Callable[[], datetime],
    stop: threading.Event,
    interval: float,
    config: SchedulerConfig,
    on_tick: Callable[[TickResult], None] | None = None,
    waiting: Waiting | None = None,
    wakeup: Wakeup | None = None,
) -> None:
    """Tick every ``interval`` seconds until ``stop`` is set, and as soon as ``wakeup`` is woken; ``waiting``
    counts a broker queue's messages (the sweeper republishes only rows whose queue holds none)."""
    while not stop.is_set():
        try:
            result = run_once(factory, publisher, reconciler, now=clock(), config=config, waiting=waiting)
        except Exception:  # a database restart or a broker hiccup must not stop the scheduler
            log.exception("scheduler tick failed; trying again in %.1fs", interval)
        else:
            if on_tick is not None:
                on_tick(result)
        if wakeup is None:
            stop.wait(interval)
        elif not stop.is_set():
            wakeup.wait(interval)
