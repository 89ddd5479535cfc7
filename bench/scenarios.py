"""The five scenarios of issue 10, each run ``--runs`` times against the real processes; every figure
is the median of its runs, compared with baselines measured in the same invocation."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench import campaigns, fax_loop, naive
from bench.checks import Ledger, Oracle, check, reaching_per_reference
from bench.deployment import Deployment, base_env
from bench.processes import MemoryWatch
from bench.report import Result, Row, ratio
from bench.runs import (
    Options,
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
    if not wait_for_log(scheduler, "ticking"):  # its start-up line (dispatcher/processes/cli.py)
        log("the scheduler did not log its start-up line; going on")
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
) -> tuple[float, float, float]:
    """`dispatch campaign schedule NAME`, then wait until ``received()`` reaches ``expected``: (wall time
    at the schedule call, seconds from that call until the last one was received, the command's seconds)."""
    wall = time.time()
    started = time.perf_counter()
    command, _ = deployed.run("campaign", "schedule", name)
    done = wait_for_count(received, expected, group=deployed.group, stall_seconds=options.stall_seconds, what=what)
    return wall, done - started, command


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
        except RuntimeError as err:  # RunFailed, or a process or command that failed: the next run goes on
            verdict_into(result, run, [str(err)])
    known = bounds(
        {**extra, **options.settings}, "smtp", latency=0.0, concurrency=options.concurrency, count=n, copies=True
    )
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
        _, seconds, _ = send_campaign(
            deployed, options, name=name, expected=n + 1, received=sink.dump.read, what="smtp-sink"
        )
        ledger = Ledger(deployed.settings["DISPATCH_DATABASE_URL"])
        try:  # the worker records a send after the sink took it: stopped only once the ledger settled
            settle(ledger, [name], timeout=60)
            verdict = check(ledger.references([name]), sink.dump.references, where="smtp-sink")
        finally:
            ledger.close()
        for key in ("scheduler", "worker"):
            deployed.group.stop(started[key])  # type: ignore[arg-type]
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
        wait_until(lambda: naive.sent(url) == {"sent": n}, timeout=60)  # its UPDATE follows the send
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


# -- 2. copies over an HTTP email API ---------------------------------------------------------------


def copies_api(options: Options) -> Result:
    n = count_for("copies-api", options)
    title = f"supporter copies through the Postmark emulator answering in {API_LATENCY * 1000:.0f} ms"
    result = Result("copies-api", title, n)
    rates: list[float] = []
    extra = {"DISPATCH_EMAIL_GATEWAY": "postmark"}
    for run in range(1, options.runs + 1):
        folder = options.workdir / f"copies-api-{run}"
        log(f"copies-api run {run}/{options.runs}: {n} copies")
        try:
            with deployment(options, folder, extra=extra, latency=API_LATENCY) as deployed:
                oracle = Oracle(folder / "oracle" / "oracle-postmark.jsonl")
                name = f"bench-api-{run}"
                deployed.run("campaign", "load", str(campaigns.copies_campaign(folder / "campaign", name, n)))
                start_processes(deployed, options, web=True)
                _, seconds, _ = send_campaign(
                    deployed, options, name=name, expected=n + 1, received=oracle.count, what="the Postmark emulator"
                )
                rates.append(n / seconds)
                log(f"  dispatch: {n / seconds:.1f} copies/s")
                verdict_into(result, run, _oracle_verdict(deployed, [name], oracle, where="the Postmark emulator"))
        except RuntimeError as err:  # RunFailed, or a process or command that failed: the next run goes on
            verdict_into(result, run, [str(err)])
    ideal = options.concurrency / API_LATENCY
    known = bounds(
        {**extra, **options.settings},
        "postmark",
        latency=API_LATENCY,
        concurrency=options.concurrency,
        count=n,
        copies=True,
    )
    row = result.add("dispatch (scheduler + worker)", "copies/s", rates)
    ideal_row = result.add(
        f"ideal: {options.concurrency} worker processes / {API_LATENCY * 1000:.0f} ms",
        "copies/s",
        [ideal] * len(rates),
        ratio="ideal",
    )
    row.ratio = ratio(row, ideal_row, label="ideal")
    row.bound = bound_text(known, row.median if rates else None)
    result.notes.append(
        "from the `campaign schedule` call until the emulator accepted every copy (and the letter); "
        "the ideal is the worker's concurrency over the emulator's latency, one email per call"
    )
    return result


def _oracle_verdict(deployed: Deployment, names: list[str], oracle: Oracle, *, where: str) -> list[str]:
    ledger = Ledger(deployed.settings["DISPATCH_DATABASE_URL"])
    try:
        settle(ledger, names)
        return check(ledger.references(names), reaching_per_reference(oracle.read()), where=where).problems
    finally:
        ledger.close()


# -- 3. faxes at provider latency ---------------------------------------------------------------------


def faxes(options: Options) -> Result:
    n = count_for("faxes", options)
    result = Result("faxes", f"faxes through the Telnyx emulator answering in {FAX_LATENCY * 1000:.0f} ms", n)
    rates: list[float] = []
    bare: list[float] = []
    for run in range(1, options.runs + 1):
        folder = options.workdir / f"faxes-{run}"
        log(f"faxes run {run}/{options.runs}: {n} faxes")
        try:
            with deployment(options, folder, extra={}, latency=FAX_LATENCY) as deployed:
                oracle = Oracle(folder / "oracle" / "oracle-telnyx.jsonl")
                name = f"bench-faxes-{run}"
                deployed.run("campaign", "load", str(campaigns.fax_campaign(folder / "campaign", name, n)))
                started = start_processes(deployed, options, web=True)
                wall, _, _ = send_campaign(
                    deployed, options, name=name, expected=n, received=oracle.count, what="the Telnyx emulator"
                )
                last = max(a.at.timestamp() for a in oracle.read())
                rates.append(n / (last - wall))
                log(f"  dispatch: {n / (last - wall):.2f} faxes/s")
                verdict_into(result, run, _oracle_verdict(deployed, [name], oracle, where="the Telnyx emulator"))
                for key in ("scheduler", "worker"):
                    deployed.group.stop(started[key])  # type: ignore[arg-type]
                bare.append(_bare_loop(deployed, options, n, result, run))
                log(f"  bare httpx loop: {bare[-1]:.2f} faxes/s")
        except RuntimeError as err:  # RunFailed, or a process or command that failed: the next run goes on
            verdict_into(result, run, [str(err)])
    ideal = options.concurrency / FAX_LATENCY
    known = bounds({**options.settings}, "telnyx", latency=FAX_LATENCY, concurrency=options.concurrency, count=n)
    row = result.add("dispatch (scheduler + worker + web)", "faxes/s", rates)
    ideal_row = result.add(
        f"ideal: {options.concurrency} worker processes / {FAX_LATENCY * 1000:.0f} ms",
        "faxes/s",
        [ideal] * len(rates),
        ratio="ideal",
    )
    bare_row = result.add(f"bare httpx loop, {options.concurrency} at a time", "faxes/s", bare, ratio="baseline")
    row.ratio = " ".join(filter(None, [ratio(row, ideal_row, label="ideal"), ratio(row, bare_row, label="bare loop")]))
    row.bound = bound_text(known, row.median if rates else None)
    bare_row.bound = "the emulator's latency"
    result.notes.append(
        "from the `campaign schedule` call until the emulator accepted the last fax (its own receive time); "
        "the bare loop posts the same number of faxes to the same emulator, no ledger and no rendering"
    )
    return result


def _bare_loop(deployed: Deployment, options: Options, n: int, result: Result, run: int) -> float:
    settings = deployed.emulator_settings
    numbers = [campaigns.fax_number(n + i).replace(" ", "") for i in range(n)]
    with fax_loop.document_server() as docs:
        seconds, accepted = fax_loop.send_all(
            base_url=settings["DISPATCH_TELNYX_BASE_URL"],
            api_key=settings["DISPATCH_TELNYX_API_KEY"],
            numbers=numbers,
            concurrency=options.concurrency,
            docs_url=docs,
        )
    if accepted != n:
        verdict_into(result, run, [f"bare loop: the emulator accepted {accepted} of {n}"])
    return n / seconds


# -- 4. urgent letter latency -------------------------------------------------------------------------


def urgent(options: Options) -> Result:
    """Each run schedules ``k`` single-fax campaigns through the API (``POST /api/campaigns/NAME/schedule``
    to the running `dispatch web`, as the console does), then ``k`` more with the `dispatch campaign schedule`
    command (a new process each: its start-up counts)."""
    k = count_for("urgent", options)
    result = Result("urgent", "single-letter campaigns scheduled now: schedule call to fax accepted", k)
    series: dict[str, tuple[list[float], list[float]]] = {"api": ([], []), "cli": ([], [])}
    commands: list[float] = []
    for run in range(1, options.runs + 1):
        folder = options.workdir / f"urgent-{run}"
        log(f"urgent run {run}/{options.runs}: {k} campaigns through the API, {k} with the command")
        try:
            with deployment(options, folder, extra={}, latency=FAX_LATENCY) as deployed:
                oracle = Oracle(folder / "oracle" / "oracle-telnyx.jsonl")
                names = {via: [f"bench-urgent-{run}-{via}-{i}" for i in range(k)] for via in series}
                for i, name in enumerate(names["api"] + names["cli"]):
                    path = campaigns.fax_campaign(folder / name, name, 1, first=i)
                    deployed.run("campaign", "load", str(path))
                deployed.run("user", "add", "bench", "--role", "manager", "--no-password")
                _, token = deployed.run("token", "create", "bench", "--label", "bench")
                start_processes(deployed, options, web=True)
                ledger = Ledger(deployed.settings["DISPATCH_DATABASE_URL"])
                sent = 0
                try:
                    with httpx.Client(
                        base_url=f"http://127.0.0.1:{deployed.web_port}",
                        headers={"Authorization": f"Bearer {token.strip()}"},
                        timeout=30,
                    ) as api:
                        for via in series:
                            latencies: list[float] = []
                            for name in names[via]:
                                sent += 1
                                wall = time.time()
                                if via == "api":
                                    answer = api.post(f"/api/campaigns/{name}/schedule", json={})
                                    if answer.status_code != 200:
                                        raise RuntimeError(f"schedule {name}: {answer.status_code} {answer.text[:200]}")
                                else:
                                    command, _ = deployed.run("campaign", "schedule", name)
                                    commands.append(command)
                                wait_for_count(
                                    oracle.count, sent, group=deployed.group, stall_seconds=options.stall_seconds,
                                    what=name,
                                )  # fmt: skip
                                accepted = max(oracle.read(), key=lambda a: a.at)
                                latencies.append(accepted.at.timestamp() - wall)
                                settle(ledger, [name], timeout=30)  # idle again before the next one
                                time.sleep(0.5)
                            series[via][0].append(statistics.median(latencies))
                            series[via][1].append(_percentile(latencies, 95))
                            log(f"  {via}: p50 {series[via][0][-1]:.2f}s p95 {series[via][1][-1]:.2f}s")
                finally:
                    ledger.close()
                every = names["api"] + names["cli"]
                verdict_into(result, run, _oracle_verdict(deployed, every, oracle, where="the Telnyx emulator"))
        except RuntimeError as err:  # RunFailed, or a process or command that failed: the next run goes on
            verdict_into(result, run, [str(err)])
    command_row = result.add(
        "the `campaign schedule` command alone (median)", "s", [statistics.median(commands)] if commands else []
    )
    tick = _tick_seconds(options)
    wake = f"its commit wakes the scheduler at once on PostgreSQL (LISTEN/NOTIFY), else up to one tick ({tick} s)"
    bounds = {
        "api": f"the HTTP call to the running web process; {wake}",
        "cli": f"the schedule command ({command_row.median:.2f} s to its exit, mostly Python's start-up); {wake}",
    }
    labels = {"api": "through the API", "cli": "with the command"}
    for position, via in enumerate(series):
        p50s, p95s = series[via]
        result.rows.insert(2 * position, Row(f"p50, {labels[via]}: call to fax accepted", "s", p50s, bound=bounds[via]))
        result.rows.insert(
            2 * position + 1, Row(f"p95, {labels[via]}: call to fax accepted", "s", p95s, bound=bounds[via])
        )
    result.notes.append(
        "each campaign is loaded beforehand, then scheduled on an idle system (scheduler, worker and web running), "
        "first through `POST /api/campaigns/NAME/schedule` with an API token, then with `dispatch campaign "
        "schedule`; the time ends at the emulator's own receive time of the fax"
    )
    return result


def _tick_seconds(options: Options) -> str:
    try:
        from dispatcher.domain.settings import load_settings

        value = options.settings.get("DISPATCH_TICK_SECONDS") or load_settings().tick_seconds
        return f"{float(value):g}"
    except Exception:
        return "?"


def _percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# -- 5. scale -------------------------------------------------------------------------------------------


def scale(options: Options) -> Result:
    big = count_for("scale", options)
    sizes = sorted({max(big // 10, 1), big})
    result = Result("scale", "copies over SMTP at two sizes: planning, end to end, peak RSS", big)
    figures: dict[str, list[float]] = {}
    extra = {"DISPATCH_EMAIL_GATEWAY": "smtp", "DISPATCH_SMTP_SECURITY": "plain"}

    def add(what: str, value: float) -> None:
        figures.setdefault(what, []).append(value)

    for run in range(1, options.runs + 1):
        for n in sizes:
            folder = options.workdir / f"scale-{n}-{run}"
            log(f"scale run {run}/{options.runs}: {n} copies")
            try:
                with deployment(options, folder, extra=extra, latency=0.0) as deployed:
                    _scale_run(deployed, options, folder, n, add, result, run)
            except RuntimeError as err:  # RunFailed, or a process or command that failed: the next run goes on
                verdict_into(result, run, [f"N={n}: {err}"])
    small = f" {sizes[0]:,}"
    for what, runs in figures.items():
        row = result.add(what, "MiB" if "RSS" in what else ("copies/s" if "/s" in what else "s"), runs)
        if len(sizes) > 1 and what.endswith(f" {big:,}"):
            row.ratio = ratio(row, result.row(what.removesuffix(f" {big:,}") + small), label=f"N={sizes[0]:,}")
    result.notes.append(
        "plan: the `dispatch campaign load` command (validation, CSV import, planning; process start-up "
        "included); end to end: from the `campaign schedule` call until smtp-sink held every copy; peak RSS: "
        "the highest VmHWM seen for each process, sampled every 0.5 s"
    )
    return result


def _scale_run(
    deployed: Deployment,
    options: Options,
    folder: Path,
    n: int,
    add: Callable[[str, float], None],
    result: Result,
    run: int,
) -> None:
    sink = start_smtp_sink(deployed.group, folder, name="smtp-sink")
    try:
        deployed.settings.update({"DISPATCH_SMTP_HOST": "127.0.0.1", "DISPATCH_SMTP_PORT": str(sink.port)})
        name = f"bench-scale-{run}"
        plan_seconds, _ = deployed.run("campaign", "load", str(campaigns.copies_campaign(folder / "campaign", name, n)))
        add(f"plan {n:,}", plan_seconds)
        started = start_processes(deployed, options, web=False)
        watch = MemoryWatch()
        for key in ("scheduler", "worker"):
            watch.watch(started[key])  # type: ignore[arg-type]
        watch.start()
        try:
            _, seconds, _ = send_campaign(
                deployed, options, name=name, expected=n + 1, received=sink.dump.read, what="smtp-sink"
            )
        finally:
            watch.stop()
        add(f"end to end {n:,}", seconds)
        add(f"copies/s {n:,}", n / seconds)
        children: dict[str, int] = {}
        for process, _pid, role, mib in sorted(watch.by_process(), key=lambda item: (item[0], item[1])):
            if role == "main":
                add(f"peak RSS {process}{' main' if process == 'worker' else ''} {n:,}", mib)
            else:
                children[process] = children.get(process, 0) + 1
                add(f"peak RSS {process} child {children[process]} {n:,}", mib)
        ledger = Ledger(deployed.settings["DISPATCH_DATABASE_URL"])
        try:
            settle(ledger, [name], timeout=30)
            verdict_into(
                result, run, check(ledger.references([name]), sink.dump.references, where="smtp-sink").problems
            )
        finally:
            ledger.close()
    finally:
        deployed.group.stop(sink.process)
        sink.remove_dump()


SCENARIOS: dict[str, Callable[[Options], Result]] = {
    "copies-smtp": copies_smtp,
    "copies-api": copies_api,
    "faxes": faxes,
    "urgent": urgent,
    "scale": scale,
}
