"""What every scenario's run shares: a deployment on a fresh database and Redis prefix with the
emulators up; waiting for a worker to answer; waiting, with a stall guard, until the receiving end has
every message; and the configured limits that bound a figure."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.deployment import Deployment
from bench.processes import Group, Started
from bench.services import REDIS_URL, postgres_database, redis_prefix


@dataclass
class Options:
    workdir: Path
    runs: int = 3
    count: int | None = None
    quick: bool = False
    concurrency: int = 2
    stall_seconds: float = 180.0
    settings: dict[str, str] = field(default_factory=dict)  # --set DISPATCH_X=Y, for every deployment


class RunFailed(RuntimeError):
    """A run that could not finish (a process died, or nothing moved for too long)."""


@contextmanager
def deployment(options: Options, folder: Path, *, extra: dict[str, str], latency: float) -> Iterator[Deployment]:
    """A deployment of its own (database, Redis prefix, emulators answering after ``latency`` s, ledger
    migrated); every process it started is stopped at the end, then the database and keys removed."""
    folder.mkdir(parents=True, exist_ok=True)
    with postgres_database() as url, redis_prefix() as prefix:
        group = Group(folder / "logs")
        try:
            deployed = Deployment.create(
                folder, group, database_url=url, prefix=prefix, extra={**extra, **options.settings}
            )
            deployed.start_emulators(latency=latency)
            deployed.upgrade()
            yield deployed
        finally:
            group.stop_all()


def wait_for_worker(prefix: str, process: Started, *, timeout: float = 120.0) -> None:
    """Until a Celery worker answers a ping on the broker under ``prefix``."""
    from bench.naive import make_app

    app = make_app(REDIS_URL, prefix)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise RunFailed(f"{process.name} ended at start: {process.tail()}")
            if app.control.ping(timeout=0.5):
                return
        raise RunFailed(f"{process.name} did not answer within {timeout:.0f}s: {process.tail()}")
    finally:
        app.close()


def wait_for_log(process: Started, text: str, *, timeout: float = 20.0) -> bool:
    """Until ``process`` logged ``text`` (True), or ``timeout`` passed with it still running (False: a
    reworded log line must not stop the bench). RunFailed if it ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.log.read_text(errors="replace"):
            return True
        if process.popen.poll() is not None:
            raise RunFailed(f"{process.name} ended at start: {process.tail()}")
        time.sleep(0.1)
    return False


def wait_for_count(
    count: Callable[[], int],
    expected: int,
    *,
    group: Group,
    stall_seconds: float,
    what: str,
    every: float = 0.1,
) -> float:
    """Poll ``count()`` until it reaches ``expected``; the perf_counter time it was first seen there.
    RunFailed when a process of ``group`` ended, or the count did not move for ``stall_seconds``."""
    last, moved = -1, time.monotonic()
    while True:
        seen = count()
        now = time.perf_counter()
        if seen >= expected:
            return now
        if seen != last:
            last, moved = seen, time.monotonic()
        elif time.monotonic() - moved > stall_seconds:
            raise RunFailed(f"{what}: {seen} of {expected} after no progress for {stall_seconds:.0f}s")
        dead = group.dead()
        if dead:
            raise RunFailed(f"{dead[0].name} ended during the run ({seen} of {expected}): {dead[0].tail()}")
        time.sleep(every)


def wait_until(check: Callable[[], bool], *, timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


# -- what bounds a figure: the configured limits, as the workers read them -----------------------------


def bounds(
    settings: dict[str, str], gateway: str, *, latency: float, concurrency: int, count: int, copies: bool = False
) -> list[tuple[str, float]]:
    """Known ceilings (name, sends per second) for one campaign through ``gateway``: the campaign limit,
    the gateway's rate and its calls in flight over the latency, the worker processes over the latency.
    The campaign limit counts letters per minute: a campaign of ``count`` sends within one minute's
    allowance is not held by it, so it is left out then, and supporter ``copies`` are never held by it.
    Copies go in batches (workers/batch.py): one call in flight per worker process, each carrying up to
    the gateway's ``max_batch`` messages. Read from the settings and the gateway's documented defaults; a
    part that cannot be read is left out (the workers may change how they are limited)."""
    found: list[tuple[str, float]] = []
    try:
        from dispatcher.domain.settings import load_settings

        values = {k.removeprefix("DISPATCH_").lower(): v for k, v in settings.items() if k.startswith("DISPATCH_")}
        configured = load_settings(**values)
    except Exception:
        return found
    per_minute = getattr(configured, "campaign_per_minute", None)
    if per_minute and count > per_minute and not copies:
        found.append((f"campaign limit {per_minute}/min", per_minute / 60))
    try:
        from workers.batch import SEND_CHUNK
        from workers.gateways.registry import gateway_class

        cls = gateway_class(gateway)
        override = configured.gateway_limit_overrides.get(gateway)
        per_second = override.per_second if override else configured.gateway_per_second or cls.per_second
        in_flight = (override.in_flight if override else None) or configured.gateway_in_flight or cls.in_flight
        found.append((f"{gateway} limit {per_second}/s", float(per_second)))
        per_call = min(cls.max_batch, SEND_CHUNK) if copies else 1
        if latency > 0 and not copies:
            found.append((f"{gateway} {in_flight} in flight / {latency * 1000:.0f} ms", in_flight / latency))
    except Exception:
        per_call = 1
    if latency > 0:
        name = f"{concurrency} worker processes" + (f" x {per_call} a call" if per_call > 1 else "")
        found.append((f"{name} / {latency * 1000:.0f} ms", concurrency * per_call / latency))
    return found


def bound_text(known: list[tuple[str, float]], measured: float | None = None) -> str:
    """The lowest known ceiling, and the share of it that was reached."""
    if not known:
        return ""
    rate = min(r for _, r in known)
    names = " and ".join(name for name, r in known if r == rate)
    share = f", {measured / rate:.0%} of it" if measured else ""
    return f"{names} = {rate:,.1f}/s{share}"
