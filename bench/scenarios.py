"""The five scenarios of issue 10, each run ``--runs`` times against the real processes; every figure
is the median of its runs, compared with baselines measured in the same invocation."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import campaigns, fax_loop, naive
from bench.checks import Ledger, Oracle, check, reaching_per_reference
from bench.deployment import Deployment, base_env
from bench.processes import MemoryWatch
from bench.report import Result, ratio
from bench.runs import (
    Options,
    RunFailed,
    bound_text,
    bounds,
    deployment,
    wait_for_count,
    wait_for_log,
    wait_for_worker,
    wait_until,
)
from bench.services import REDIS_URL, run_smtp_source, start_smtp_sink

SMTP_SESSIONS = 10  # smtp-source's parallel sessions
API_LATENCY = 0.05  # the Postmark emulator's answer time
FAX_LATENCY = 0.2  # the Telnyx emulator's answer time

DEFAULTS = {"copies-smtp": 20_000, "copies-api": 20_000, "faxes": 2_000, "urgent": 50, "scale": 200_000}
QUICK = {"copies-smtp": 50, "copies-api": 50, "faxes": 20, "urgent": 5, "scale": 500}


def count_for(scenario: str, options: Options) -> int:
    if options.count is not None:
        return options.count
    return (QUICK if options.quick else DEFAULTS)[scenario]


def log(message: str) -> None:
    print(f"  [{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# -- sending a loaded campaign through the real processes ---------------------------------------------


def start_processes(deployed: Deployment, options: Options, *, web: bool) -> dict[str, object]:
    started: dict[str, object] = {}
    if web:
        started["web"] = deployed.start_web()
    worker = deployed.start_worker(options.concurrency)
    scheduler = deployed.start_scheduler()
    wait_for_worker(deployed.settings["DISPATCH_QUEUE_PREFIX"], worker)
    wait_for_log(scheduler, "ticking")
    started.update(worker=worker, scheduler=scheduler)
    return started


def send_campaign(
    deployed: Deployment,
    options: Options,
    *,
    name: str,
    expected: int,
    received: Callable[[], int],
    what: str,
) -> tuple[float, float]:
    """`dispatch campaign schedule NAME`, then wait until ``received()`` reaches ``expected``:
    (wall time at the schedule call, seconds from that call until the last one was received)."""
    wall = time.time()
    started = time.perf_counter()
    deployed.run("campaign", "schedule", name)
    done = wait_for_count(received, expected, group=deployed.group, stall_seconds=options.stall_seconds, what=what)
    return wall, done - started


def settle(ledger: Ledger, names: list[str], *, timeout: float = 120.0) -> None:
    """Wait (untimed) until no delivery of ``names`` is still on its way (webhooks may lag the send)."""
    open_states = {"planned", "queued", "sending", "retry_wait", "unknown"}
    wait_until(lambda: not (set(ledger.states(names)) & open_states), timeout=timeout)


def verdict_into(result: Result, run: int, problems: list[str]) -> None:
    result.problems += [f"run {run}: {p}" for p in problems]


# -- 1. copies over SMTP ----------------------------------------------------------------------------


def copies_smtp(options: Options) -> Result:
    n = count_for("copies-smtp", options)
    result = Result("copies-smtp", "supporter copies over SMTP to smtp-sink", n)
    figures: dict[str, list[float]] = {"dispatch": [], "smtp-source": [], "naive": [], "size": []}
    extra = {"DISPATCH_EMAIL_GATEWAY": "smtp", "DISPATCH_SMTP_SECURITY": "plain"}
    for run in range(1, options.runs + 1):
        folder = options.workdir / f"copies-smtp-{run}"
        log(f"copies-smtp run {run}/{options.runs}: {n} copies")
        try:
            with deployment(options, folder, extra=extra, latency=0.0) as deployed:
                rate, size = _dispatch_copies_smtp(deployed, options, folder, n, result, run)
                figures["dispatch"].append(rate)
                figures["size"].append(size)
                log(f"  dispatch: {rate:.1f} copies/s; smtp-source with {size} bytes")
                figures["smtp-source"].append(_smtp_source(deployed, folder, n, size, result, run))
                figures["naive"].append(_naive(deployed, options, folder, n, size, result, run))
        except RunFailed as err:
            verdict_into(result, run, [str(err)])
    known = bounds({**extra, **options.settings}, "smtp", latency=0.0, concurrency=options.concurrency)
    dispatch = result.add("dispatch (scheduler + worker)", "copies/s", figures["dispatch"])
    naive_row = result.add("naive Celery baseline", "emails/s", figures["naive"], ratio="baseline")
    source = result.add(f"smtp-source, {SMTP_SESSIONS} sessions", "emails/s", figures["smtp-source"], ratio="limit")
    dispatch.ratio = " ".join(
        filter(None, [ratio(dispatch, naive_row, label="naive"), ratio(dispatch, source, label="smtp-source")])
    )
    dispatch.bound = bound_text(known, dispatch.median if dispatch.runs else None)
    source.bound = "smtp-sink and the machine"
    result.add("message size at the sink", "bytes", figures["size"])
    result.notes.append(
        "dispatch: from the `campaign schedule` call until smtp-sink held every copy (and the letter); "
        "naive: one Celery task per email, a new SMTP connection each, one row UPDATE per send; "
        f"smtp-source: the same count and size, {SMTP_SESSIONS} sessions"
    )
    return result


def _dispatch_copies_smtp(
    deployed: Deployment, options: Options, folder: Path, n: int, result: Result, run: int
) -> tuple[float, int]:
    sink = start_smtp_sink(deployed.group, folder, name="smtp-sink")
    try:
        deployed.settings.update({"DISPATCH_SMTP_HOST": "127.0.0.1", "DISPATCH_SMTP_PORT": str(sink.port)})
        name = f"bench-copies-{run}"
        path = campaigns.copies_campaign(folder / "campaign", name, n)
        deployed.run("campaign", "load", str(path))
        started = start_processes(deployed, options, web=False)
        _, seconds = send_campaign(deployed, options, name=name, expected=n + 1, received=sink.dump.read, what="smtp-sink")
        for key in ("scheduler", "worker"):
            deployed.group.stop(started[key])  # type: ignore[arg-type]
        ledger = Ledger(deployed.settings["DISPATCH_DATABASE_URL"])
        try:
            settle(ledger, [name], timeout=10)
            verdict = check(ledger.references([name]), sink.dump.references, where="smtp-sink")
        finally:
            ledger.close()
        sink.dump.read()
        if sink.dump.messages != n + 1:
            verdict.add(f"smtp-sink took {sink.dump.messages} messages, {n + 1} expected")
        verdict_into(result, run, verdict.problems)
        size = round(sink.dump.size / max(sink.dump.messages, 1))
        return n / seconds, size
    finally:
        deployed.group.stop(sink.process)
        sink.remove_dump()


def _smtp_source(deployed: Deployment, folder: Path, n: int, size: int, result: Result, run: int) -> float:
    sink = start_smtp_sink(deployed.group, folder, name="smtp-sink-source")
    try:
        seconds = run_smtp_source(sink.port, count=n, size=size, sessions=SMTP_SESSIONS)
        wait_until(lambda: sink.dump.read() >= n, timeout=30, every=0.1)
        if sink.dump.messages != n:
            verdict_into(result, run, [f"smtp-source: the sink took {sink.dump.messages} of {n} messages"])
        return n / seconds
    finally:
        deployed.group.stop(sink.process)
        sink.remove_dump()


def _naive(deployed: Deployment, options: Options, folder: Path, n: int, size: int, result: Result, run: int) -> float:
    sink = start_smtp_sink(deployed.group, folder, name="smtp-sink-naive")
    url = deployed.settings["DISPATCH_DATABASE_URL"]
    prefix = deployed.settings["DISPATCH_QUEUE_PREFIX"] + "naive-"
    try:
        naive.create_table(url, n)
        env = base_env(
            BENCH_NAIVE_DATABASE_URL=url,
            BENCH_NAIVE_BROKER_URL=REDIS_URL,
            BENCH_NAIVE_PREFIX=prefix,
            BENCH_NAIVE_SMTP=f"127.0.0.1:{sink.port}",
        )
        argv = [sys.executable, "-m", "celery", "-A", "bench.naive", "worker", "-Q", naive.QUEUE]
        argv += ["--concurrency", str(options.concurrency), "--pool", "prefork", "--without-gossip"]
        argv += ["--without-mingle", "--loglevel", "WARNING"]
        worker = deployed.group.start("naive-worker", argv, env=env, cwd=folder)
        wait_for_worker(prefix, worker)
        started = time.perf_counter()
        naive.publish(n, body_bytes=max(size - 400, 100), broker_url=REDIS_URL, prefix=prefix)
        done = wait_for_count(
            sink.dump.read, n, group=deployed.group, stall_seconds=options.stall_seconds, what="naive baseline"
        )
        deployed.group.stop(worker)
        states = naive.sent(url)
        problems = [] if states == {"sent": n} else [f"naive baseline rows by state: {states}"]
        received = {k: v for k, v in sink.dump.references.items() if k.startswith("naive-")}
        if len(received) != n or any(v != 1 for v in received.values()):
            problems.append(f"naive baseline: {len(received)} distinct messages of {n}, some more than once")
        verdict_into(result, run, problems)
        return n / (done - started)
    finally:
        deployed.group.stop(sink.process)
        sink.remove_dump()
