"""Faxes at the provider's pace, and an urgent letter's latency, through the real processes.

    python bench/fax_pace.py [--faxes 200] [--concurrency 2] [--urgent 20] [--latency 0.2] [--code DIR]

Starts the Telnyx emulator (in this process, answering every send after ``--latency`` seconds), then
`dispatch web`, `dispatch scheduler` and `dispatch worker --concurrency N` as real processes on a fresh
PostgreSQL database (``dispatch_bench_<hex>`` at DISPATCH_BENCH_POSTGRES_URL's server, dropped at the
end) and Redis (queue prefix ``bench-fax-<pid>-``, its keys deleted at the end). ``--code`` runs those
processes from another checkout (e.g. main, for the figures before a change); the emulator and this
script stay this checkout's.

1. **faxes**: one campaign to ``--faxes`` "To" addressees, each with a fax number of its own, loaded, then
   scheduled with `dispatch campaign schedule`; submissions per second from the first acceptance to the
   last, against the ideal (concurrency / latency), and the time from the schedule call to the last.
2. **urgent**: ``--urgent`` campaigns of one fax each, loaded first, then scheduled one after another on
   the idle system: time from starting `dispatch campaign schedule` to the emulator's answer accepting the
   fax (its acceptance time plus its latency), p50 and p95.

The shared limits keep their defaults unless the environment sets them (DISPATCH_GATEWAY_LIMITS,
DISPATCH_CAMPAIGN_PER_MINUTE): Telnyx's documented 10/s and 8 in flight, and 600 sends a minute per
campaign, both 10/s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import redis
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import services  # noqa: E402
from dispatcher.domain import db  # noqa: E402
from workers.sandbox.serve import DEFAULT_PORTS, Running, serve_all  # noqa: E402
from workers.sandbox.server import free_port  # noqa: E402

BROKER = os.environ.get("DISPATCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

CAMPAIGN = """[campaign]
name = "{name}"
title = "Bench"
urgency = "urgent"
route_policy = "first-success"
route_order = "fax-first"

[campaign.schedule]
mode = "now"

[sender]
organisation = "Example Rights"
signatory = "Ada Example"
signatory_title = "Director"
email = "letters@example.org"
reply_to = "letters@example.org"
fax_caller_id = "+1 212 555 0143"
country = "US"

[letter]
subject = "Nine refugees"
body = '''{{{{ to.salutation }}}}

We write to you about the nine refugees detained since November, and ask for their release.

Sincerely,
{{{{ sender.signatory }}}}
'''
"""
ADDRESSEE = """
[[{role}]]
name = "Official {n}"
title = "Minister"
salutation = "Dear Minister,"
organisation = "Ministry {n}"
country = "CN"
timezone = "Asia/Shanghai"
fax = ["+86 10 {area:04d} {line:04d}"]
"""


def campaign_file(folder: Path, name: str, numbers: range) -> Path:
    """A campaign to one "To" addressee per number, each with a fax number of their own: each fax is a cover
    page and a one-page letter."""
    parts = [CAMPAIGN.format(name=name)]
    for n in numbers:
        parts.append(ADDRESSEE.format(role="to", n=n, area=6000 + n // 10000, line=n % 10000))
    path = folder / f"{name}.toml"
    path.write_text("".join(parts))
    return path


class Processes:
    def __init__(self, env: dict[str, str], logs: Path, code: Path) -> None:
        self.env, self.logs, self.code = env, logs, code  # `python -m` runs the code of its working directory
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{args[0]}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", *args],
            env=self.env,
            cwd=self.code,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running.append(process)
        return process

    def run(self, *args: str) -> float:
        """Run a command to its end; the seconds it took."""
        started = time.time()
        command = [sys.executable, "-m", "dispatcher", *args]
        subprocess.run(command, env=self.env, cwd=self.code, check=True, capture_output=True)
        return time.time() - started

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each started command, its children (a worker's pool)
        included, by command name; Linux /proc."""
        ticks = os.sysconf("SC_CLK_TCK")
        stats = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                stats[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
        out: dict[str, float] = {}
        for process in self.running:
            name = str(process.args[3])  # type: ignore[index]
            family = {process.pid} | {pid for pid, (parent, _) in stats.items() if parent == process.pid}
            out[name] = out.get(name, 0.0) + sum(stats[pid][1] for pid in family if pid in stats)
        return out

    def stop_all(self) -> None:
        for process in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


@contextlib.contextmanager
def database() -> Iterator[str]:
    """bench.services' throw-away database (dropped at the end), migrated."""
    with services.postgres_database() as url:
        db.upgrade(url)
        yield url


def accepted(running: Running) -> dict[str, float]:
    """Destination -> when the emulator accepted its first fax (epoch seconds)."""
    out: dict[str, float] = {}
    for entry in running.states["telnyx"].oracle():
        out.setdefault(entry.destination, datetime.fromisoformat(entry.accepted_at).timestamp())
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faxes", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--urgent", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose `dispatch` runs")
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the processes and drop the database first
    prefix = f"bench-fax-{os.getpid()}-"
    work = Path(tempfile.mkdtemp(prefix="fax-pace-"))
    web_port = free_port()
    web_url = f"http://127.0.0.1:{web_port}"
    with database() as url:
        running = serve_all(web_url=web_url, oracle_dir=work, ports={name: free_port() for name in DEFAULT_PORTS})
        running.states["telnyx"].latency = options.latency
        env = {
            **os.environ,
            **running.settings,
            "PYTHONPATH": str(options.code.resolve()),
            "DISPATCH_DATABASE_URL": url,
            "DISPATCH_BROKER_URL": BROKER,
            "DISPATCH_QUEUE_PREFIX": prefix,
            "DISPATCH_SECRET_KEY": secrets.token_hex(32),
            "DISPATCH_PUBLIC_BASE_URL": web_url,
            "DISPATCH_FAX_GATEWAY": "telnyx",
            "DISPATCH_CHECK_CREDENTIALS": "false",
            "DISPATCH_LOG_LEVEL": "WARNING",
        }
        group = Processes(env, work, options.code.resolve())
        try:
            measure(options, group, running, work, web_url, url)
        finally:
            group.stop_all()
            running.stop()
            client = redis.Redis.from_url(BROKER)
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)
            print(f"logs in {work}", file=sys.stderr)


def measure(
    options: argparse.Namespace, group: Processes, running: Running, work: Path, web_url: str, url: str
) -> None:
    big = campaign_file(work, "bench-faxes", range(options.faxes))
    urgent = [campaign_file(work, f"bench-urgent-{i}", range(10000 + i, 10001 + i)) for i in range(options.urgent)]
    for path in (big, *urgent):
        group.run("campaign", "load", str(path))
    port = web_url.rsplit(":", 1)[1]
    group.start("web", "--port", port)
    group.start("scheduler")
    group.start("worker", "--concurrency", str(options.concurrency), "--queues", "fax,reconcile")
    wait_for(lambda: _healthy(web_url), timeout=60, what="dispatch web")
    time.sleep(5)  # the worker's pool up and the scheduler ticking (both log nothing at WARNING)

    cpu_before, own_before = group.cpu_seconds(), time.process_time()
    started = time.time()
    group.run("campaign", "schedule", "bench-faxes")
    telnyx = running.states["telnyx"]  # counted cheaply: this process also runs the emulator, which must not wait
    wait_for(lambda: len(telnyx.oracle()) >= options.faxes, timeout=600, what="every fax accepted", every=0.25)
    times = sorted(accepted(running).values())
    rate = (len(times) - 1) / (times[-1] - times[0])
    ideal = options.concurrency / options.latency
    shape = f"concurrency {options.concurrency}, latency {options.latency}s"
    print(f"faxes: {options.faxes} to {options.faxes} numbers, {shape}")
    print(f"  submissions/s (first to last acceptance): {rate:.2f}  ideal {ideal:.1f}  = {rate / ideal:.0%} of ideal")
    print(f"  schedule call to last acceptance: {times[-1] - started:.1f}s")
    cpu = {name: seconds - cpu_before.get(name, 0.0) for name, seconds in group.cpu_seconds().items()}
    cpu["emulator (this process)"] = time.process_time() - own_before
    print("  CPU ms per fax: " + "  ".join(f"{name} {1000 * used / options.faxes:.0f}" for name, used in cpu.items()))

    if options.urgent:
        urgent_letters(options, group, running, url)


def urgent_letters(options: argparse.Namespace, group: Processes, running: Running, url: str) -> None:
    latencies, commands, marks = [], [], []
    for i in range(options.urgent):
        before = set(accepted(running))
        time.sleep(1.5)  # idle: the previous fax's webhooks and the scheduler's ticks settled
        started = time.time()
        commands.append(group.run("campaign", "schedule", f"bench-urgent-{i}"))
        count, telnyx = len(before), running.states["telnyx"]
        wait_for(lambda: len(telnyx.oracle()) > count, timeout=60, what="the urgent fax")  # noqa: B023
        (destination,) = set(accepted(running)) - before
        latencies.append(accepted(running)[destination] + options.latency - started)
        marks.append((started, started + commands[-1], accepted(running)[destination]))
    print(f"urgent: {options.urgent} single-fax campaigns, schedule call to the emulator's 202 (acceptance + latency)")
    print(
        f"  p50 {statistics.median(latencies):.2f}s  p95 {percentile(latencies, 0.95):.2f}s  "
        f"min {min(latencies):.2f}s  max {max(latencies):.2f}s"
    )
    print(f"  of which the schedule command itself: p50 {statistics.median(commands):.2f}s  max {max(commands):.2f}s")
    breakdown(url, marks)


def breakdown(url: str, marks: list[tuple[float, float, float]]) -> None:
    """Medians of each step of the urgent faxes, from the ledger's events: command, its end to the tick that
    queued the fax, the queue to the worker's claim, the claim to the emulator's acceptance."""
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT c.name, e.to_state, e.at FROM delivery_events e JOIN campaigns c ON c.id = e.campaign_id "
                "WHERE c.name LIKE 'bench-urgent-%' AND e.to_state IN ('queued', 'sending') ORDER BY e.at"
            )
        ).all()
    engine.dispose()
    at: dict[tuple[str, str], float] = {}
    for name, state, when in rows:
        at.setdefault((name, state), when.timestamp())
    steps: dict[str, list[float]] = {"command": [], "to queued": [], "to claimed": [], "to accepted": []}
    for i, (started, ended, done) in enumerate(marks):
        queued, sending = at[(f"bench-urgent-{i}", "queued")], at[(f"bench-urgent-{i}", "sending")]
        for step, seconds in zip(
            steps, (ended - started, queued - ended, sending - queued, done - sending), strict=True
        ):
            steps[step].append(seconds)
    print("  medians: " + "  ".join(f"{step} {statistics.median(values):.2f}s" for step, values in steps.items()))


def _healthy(web_url: str) -> bool:
    try:
        return httpx.get(f"{web_url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
