"""Postmark gateway throughput: ``send`` one message per call against ``send_many`` over ``/email/batch``.

    python bench/postmark_batch.py [--copies N] [--latency SECONDS] [--concurrency C] [--repeats R]

The Postmark emulator runs in a child process (its own interpreter: it does not share this one's GIL),
answering every send after ``--latency`` (default 0.05 s, issue 10's "HTTP email API" scenario), without
webhooks. This process sends N supporter copies of about 4 KB through the real PostmarkGateway from C
threads, each with its own share of the copies: once with ``send`` per copy, once with ``send_many`` (500
per request). The ideal is what the latency alone allows: C / latency per second for ``send``, and
C x 500 / latency for ``send_many`` while the copies fill every request. The median of the runs is printed
with its ratio to the ideal; every copy must be accepted exactly once (the emulator's oracle says so).
Only the gateway is measured: no ledger, no rendering, no worker.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dispatcher.domain.messages import EmailMessage, Receipt  # noqa: E402
from workers.gateways.email.postmark import PostmarkGateway, PostmarkSettings  # noqa: E402
from workers.sandbox.core import SandboxState  # noqa: E402
from workers.sandbox.postmark import create_app  # noqa: E402
from workers.sandbox.server import free_port, serve  # noqa: E402

TOKEN = "bench-token"


def emulator(port: int, latency: float, ready: Any, stop: Any) -> None:
    """The child process: the Postmark emulator on ``port`` until ``stop`` is set."""
    state = SandboxState(provider="postmark", latency=latency)
    with serve(create_app(state, server_token=TOKEN), port=port):
        ready.set()
        stop.wait()


def copies(n: int, run: str) -> list[EmailMessage]:
    text = "Dear supporter,\n\n" + "The letter you signed went to the minister today. " * 80
    return [
        EmailMessage(
            sender="Campaign Desk <desk@advocacy.example>",
            to=[f"supporter{i}.{run}@example.net"],
            subject="Your copy of the letter",
            text=text,
            html=f"<p>{text}</p>",
            reference=f"{run}-{i}",
            message_id=f"<{run}-{i}@advocacy.example>",
            headers={"List-Unsubscribe": f"<https://dispatch.example/unsubscribe/{run}-{i}>"},
        )
        for i in range(n)
    ]


def gateway(url: str) -> PostmarkGateway:
    client = httpx.Client(timeout=httpx.Timeout(30.0), limits=httpx.Limits(max_connections=64))
    return PostmarkGateway(PostmarkSettings(server_token=TOKEN, base_url=url), client=client)


def timed(url: str, messages: list[EmailMessage], threads: int, send: Callable[..., Sequence[Any]]) -> float:
    """Seconds to send every message from ``threads`` threads, each given its share."""
    gw = gateway(url)
    shares = [messages[i::threads] for i in range(threads)]
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = [outcome for share in pool.map(lambda s: send(gw, s), shares) for outcome in share]
    elapsed = time.perf_counter() - start
    gw.close()
    refused = [r for r in results if not isinstance(r, Receipt)]
    if refused:
        raise SystemExit(f"{len(refused)} copies not accepted, e.g. {refused[0]!r}")
    return elapsed


def one_by_one(gw: PostmarkGateway, share: list[EmailMessage]) -> list[Any]:
    return [gw.send(m) for m in share]


def batched(gw: PostmarkGateway, share: list[EmailMessage]) -> list[Any]:
    return gw.send_many(share)


def accepted_once(url: str) -> dict[str, int]:
    oracle = httpx.get(url + "/_sandbox/oracle", timeout=30).json()["accepted"]
    counts: dict[str, int] = {}
    for entry in oracle:
        counts[entry["reference"]] = counts.get(entry["reference"], 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=2000)
    parser.add_argument("--single-copies", type=int, default=200, help="copies for the one-per-call baseline")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    port = free_port()
    ready, stop = multiprocessing.Event(), multiprocessing.Event()
    child = multiprocessing.Process(target=emulator, args=(port, args.latency, ready, stop), daemon=True)
    child.start()
    try:
        if not ready.wait(30):
            raise SystemExit("the emulator did not start")
        url = f"http://127.0.0.1:{port}"
        rows = []
        for label, send, n, per_request in (
            ("send, one copy per call", one_by_one, args.single_copies, 1),
            ("send_many, /email/batch", batched, args.copies, PostmarkGateway.max_batch),
        ):
            rates = []
            for run in range(args.repeats):
                messages = copies(n, f"{send.__name__}{run}")
                rates.append(n / timed(url, messages, args.concurrency, send))
                print(f"  {label}: run {run + 1}: {rates[-1]:,.0f}/s", file=sys.stderr)
            share = -(-n // args.concurrency)  # copies per thread
            ideal = args.concurrency * min(per_request, share) / args.latency
            rows.append((label, n, statistics.median(rates), ideal))
        counts = accepted_once(url)
        twice = {ref: c for ref, c in counts.items() if c != 1}
        print(f"\nPostmark emulator answering in {args.latency * 1000:.0f} ms, {args.concurrency} threads:")
        print(f"{'':28} {'copies':>7} {'median/s':>10} {'ideal/s':>10} {'of ideal':>9}")
        for label, n, rate, ideal in rows:
            print(f"{label:28} {n:>7,} {rate:>10,.0f} {ideal:>10,.0f} {rate / ideal:>9.0%}")
        print(f"accepted: {len(counts):,} references, {len(twice)} not exactly once")
    finally:
        stop.set()
        child.join(10)


if __name__ == "__main__":
    main()
