"""Supporter copies over SMTP: how many a second from the ledger to an SMTP sink.

    python bench/copies_pace.py inprocess [--copies N] [--profile FILE]   # the worker path in this process
    python bench/copies_pace.py processes [--copies N] [--concurrency C]  # `dispatch scheduler` + `worker`

Both use a throw-away PostgreSQL database (``DISPATCH_BENCH_POSTGRES_URL``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``; dropped at the end), Redis at
``DISPATCH_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) under a key prefix of its own, and
Postfix's ``smtp-sink`` (Debian package ``postfix``) on a free localhost port as the SMTP server; the
aiosmtpd sink of the tests when ``smtp-sink`` is not installed.

The campaign is the example one with N generated supporters, copies ``at-dispatch`` (due at once); only the
``copies`` queue is consumed, so the letters' faxes are never sent.

- ``inprocess``: scheduler ticks (``run_once``) and the worker's ``deliver_many`` on each broker message's
  ids, in this process, with the shared limits in Redis: copies/s over the sends, and with ``--profile``
  a cProfile of the worker's part (top entries printed, the stats written to FILE).
- ``processes``: ``dispatch scheduler`` and ``dispatch worker --queues copies --concurrency C`` as real
  processes; the time from ``dispatch campaign schedule`` until every copy is ``submitted``, and the
  longest length of the broker's ``copies`` queue seen (sampled every 0.5 s).

Gateway limits are lifted for the run (``DISPATCH_GATEWAY_LIMITS=smtp=100000/s:100``) unless ``--limits``
says otherwise (``--limits default`` keeps the documented defaults).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import services  # noqa: E402
from dispatcher.domain import db  # noqa: E402
from dispatcher.domain.models import Delivery  # noqa: E402
from tests.builders import build_campaign  # noqa: E402

REDIS_URL = os.environ.get("DISPATCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "b" * 48
LIFTED = "smtp=100000/s:100"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_server() -> Iterator[tuple[str, int, str]]:
    """(host, port, what): Postfix's smtp-sink when installed, else the tests' aiosmtpd sink."""
    port = free_port()
    sink = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)
    if sink:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        proc = subprocess.Popen([sink, *user, f"127.0.0.1:{port}", "1024"])
        what = "postfix smtp-sink"
    else:
        code = (
            "import sys,time;from workers.sandbox.core import SandboxState;"
            "from workers.sandbox.smtp_sink import SmtpSink;"
            f"s=SmtpSink(SandboxState(provider='smtp'),port={port});s.start();time.sleep(10**6)"
        )
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        what = "aiosmtpd sink"
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield "127.0.0.1", port, what
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def postgres_database() -> Iterator[str]:
    """bench.services' throw-away database (dropped at the end), migrated."""
    with services.postgres_database() as url:
        db.upgrade(url)
        yield url


def campaign_file(work: Path, copies: int) -> Path:
    rows = [(f"supporter{i}@example.org", f"Supporter {i}") for i in range(copies)]
    return build_campaign(work, supporters=rows, extra={"supporters": {"copies": "at-dispatch"}})


def environment(url: str, host: str, port: int, prefix: str, limits: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DISPATCH_DATABASE_URL": url,
        "DISPATCH_BROKER_URL": REDIS_URL,
        "DISPATCH_QUEUE_PREFIX": prefix,
        "DISPATCH_SECRET_KEY": SECRET,
        "DISPATCH_EMAIL_GATEWAY": "smtp",
        "DISPATCH_SMTP_HOST": host,
        "DISPATCH_SMTP_PORT": str(port),
        "DISPATCH_SMTP_SECURITY": "plain",
        "DISPATCH_CHECK_CREDENTIALS": "false",
        "DISPATCH_TELNYX_API_KEY": "KEYbench",
        "DISPATCH_TELNYX_CONNECTION_ID": "bench",
        "DISPATCH_TELNYX_PUBLIC_KEY": "A" * 43 + "=",
        "DISPATCH_TELNYX_BASE_URL": "http://127.0.0.1:9",
        "DISPATCH_LOG_LEVEL": "WARNING",
    }
    if limits != "default":
        env["DISPATCH_GATEWAY_LIMITS"] = limits
    return env


def submitted(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.scalar(
                    select(func.count()).where(Delivery.kind == "copy", Delivery.state.in_(["submitted", "delivered"]))
                )
                or 0
            )
    finally:
        engine.dispose()


def run_inprocess(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, postgres_database() as url, smtp_server() as (host, port, what):
        prefix = f"copiesbench{uuid.uuid4().hex[:6]}:"
        os.environ.update(environment(url, host, port, prefix, args.limits))
        from dispatcher.domain import control
        from dispatcher.domain.campaign_file import load_spec
        from dispatcher.domain.planning import load_campaign
        from dispatcher.domain.scheduling import SchedulerConfig, run_once
        from dispatcher.domain.settings import Settings
        from dispatcher.domain.validation import validate
        from workers.delivery import deliver_many
        from workers.runtime import build_worker_context

        settings = Settings()
        path = campaign_file(Path(tmp), args.copies)
        spec = load_spec(path)
        report = validate(spec, file=path)
        context = build_worker_context(settings, queues=["copies"])
        with db.transaction(context.factory) as session:
            load_campaign(session, spec, report, source=path)
            control.schedule(session, spec.campaign.name, now=datetime.now(UTC))
        config = SchedulerConfig.from_settings(settings)
        profile = cProfile.Profile() if args.profile else None
        worked = 0.0
        started = time.perf_counter()
        while True:
            messages: list[Sequence[int]] = []

            def collect(queue: str, ids: Sequence[int], into: list[Sequence[int]] = messages) -> None:
                if queue == "copies":
                    into.append(ids)

            run_once(
                context.factory,
                collect,
                lambda queue, ids: None,
                now=datetime.now(UTC),
                config=config,
            )
            if not messages:
                break
            for ids in messages:
                t0 = time.perf_counter()
                if profile:
                    profile.enable()
                deliver_many(context, list(ids))
                if profile:
                    profile.disable()
                worked += time.perf_counter() - t0
        total = time.perf_counter() - started
        sent = submitted(url)
        print(f"server: {what}; limits: {args.limits}")
        print(f"copies submitted: {sent} of {args.copies}")
        print(f"worker time: {worked:.2f} s -> {sent / worked:.0f} copies/s; with ticks: {total:.2f} s")
        if profile:
            profile.dump_stats(args.profile)
            stats = pstats.Stats(profile)
            stats.sort_stats("cumulative").print_stats(35)
            stats.sort_stats("tottime").print_stats(25)


def run_processes(args: argparse.Namespace) -> None:
    import redis

    with tempfile.TemporaryDirectory() as tmp, postgres_database() as url, smtp_server() as (host, port, what):
        prefix = f"copiesbench{uuid.uuid4().hex[:6]}:"
        env = environment(url, host, port, prefix, args.limits)
        path = campaign_file(Path(tmp), args.copies)
        dispatch = [sys.executable, "-m", "dispatcher"]
        subprocess.run([*dispatch, "campaign", "load", str(path)], env=env, check=True, cwd=tmp, capture_output=True)
        procs = [
            subprocess.Popen(
                [*dispatch, "worker", "--queues", "copies", "--concurrency", str(args.concurrency)],
                env=env,
                cwd=tmp,
                start_new_session=True,
            ),
        ]
        client = redis.Redis.from_url(REDIS_URL)
        queue_key = f"{prefix}copies"
        try:
            time.sleep(args.warmup)  # the worker's pool up before the clock starts
            procs.append(subprocess.Popen([*dispatch, "scheduler"], env=env, cwd=tmp, start_new_session=True))
            started = time.perf_counter()
            subprocess.run(
                [*dispatch, "campaign", "schedule", "north-korean-refugees-2015"], env=env, check=True, cwd=tmp
            )
            longest, sent = 0, 0
            while time.perf_counter() - started < args.timeout:
                longest = max(longest, int(client.llen(queue_key)))  # type: ignore[arg-type]
                sent = submitted(url)
                if sent >= args.copies:
                    break
                time.sleep(0.5)
            seconds = time.perf_counter() - started
        finally:
            for proc in procs:
                with _quiet():
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)
        print(f"server: {what}; limits: {args.limits}; worker --concurrency {args.concurrency}")
        print(f"copies submitted: {sent} of {args.copies} in {seconds:.1f} s -> {sent / seconds:.0f} copies/s")
        print(f"longest copies queue seen: {longest} messages")


@contextmanager
def _quiet() -> Iterator[None]:
    with suppress(ProcessLookupError):
        yield


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["inprocess", "processes"])
    parser.add_argument("--copies", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--limits", default=LIFTED, help="DISPATCH_GATEWAY_LIMITS, or 'default'")
    parser.add_argument("--profile", help="inprocess: write cProfile stats here and print the top entries")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--warmup", type=float, default=4)
    args = parser.parse_args(argv)
    (run_inprocess if args.mode == "inprocess" else run_processes)(args)


if __name__ == "__main__":
    main()
