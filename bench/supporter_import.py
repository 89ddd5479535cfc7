"""Importing a supporter list at volume, against a naive baseline measured in the same run.

    python bench/supporter_import.py [--rows N] [--baseline-rows N] [--database sqlite|postgres|both]
                                     [--no-tracemalloc]

- import: ``read_rows`` + ``import_rows`` (dispatcher/domain/supporter_import.py): the file streamed,
  1,000 rows per SELECT and per executemany INSERT, one transaction.
- naive (baseline): the stand-in the import replaced, copied below: the whole file read into memory,
  ``csv.DictReader``, then for each row one SELECT for the member and one ORM object (flushed by the next
  row's SELECT), one transaction. It is slow, so it imports ``--baseline-rows`` rows (20,000 by default);
  the import is measured at that size too, so that time and memory compare at one size.

Each measurement runs in a fresh process against a fresh, migrated, empty ledger (a SQLite file in a temp
dir, or a throw-away PostgreSQL database at ``DISPATCH_BENCH_POSTGRES_URL``, dropped at the end): once to
take the time and how much the peak resident memory grew during the import (Linux's VmHWM, reset just
before it), and once under ``tracemalloc`` for the peak of Python's allocations (several times slower:
its time is not used). The generated file: one row in 100 has an invalid address,
one in 50 refuses consent, the rest consent; 20 domains; a custom column. See bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dispatcher.domain import db  # noqa: E402
from dispatcher.domain.emails import normalise_email  # noqa: E402
from dispatcher.domain.models import Supporter, SupporterList  # noqa: E402
from dispatcher.domain.supporter_import import import_rows, read_rows  # noqa: E402

PG_ADMIN_URL = os.environ.get("DISPATCH_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DOMAINS = [f"mail{i}.example.org" for i in range(19)] + ["example.com"]


def write_file(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "first_name", "last_name", "consent", "consent_date", "locale", "postcode"])
        for i in range(rows):
            email = f"not-an-address-{i}" if i % 100 == 99 else f"Supporter.{i}@{DOMAINS[i % len(DOMAINS)]}"
            consent = "no" if i % 50 == 49 else "yes"
            writer.writerow([email, f"Given{i}", f"Family{i}", consent, "2026-11-02", "fr" if i % 3 else "en", i])


# --- the baseline: the stand-in the import replaced (whole file in memory, one SELECT per row) ------------


def naive_import(session: Session, list_name: str, data: bytes) -> int:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    lst = session.scalar(select(SupporterList).where(SupporterList.name == list_name))
    if lst is None:
        lst = SupporterList(name=list_name)
        session.add(lst)
        session.flush()
    seen: set[str] = set()
    added = 0
    for row in reader:
        cells = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
        email = normalise_email(cells.get("email", ""))
        if email is None or email in seen:
            continue
        seen.add(email)
        consent = cells.get("consent", "").lower() in ("yes", "y", "true", "1")
        existing = session.scalar(select(Supporter).where(Supporter.list_id == lst.id, Supporter.email == email))
        name = " ".join(p for p in (cells.get("first_name"), cells.get("last_name")) if p) or None
        if existing is None and consent:
            session.add(Supporter(list_id=lst.id, email=email, name=name, consent=True, fields={}))
            added += 1
        elif existing is not None:
            existing.name, existing.consent = name, consent
    session.flush()
    return added


# --- ledgers, and one measurement in a child process --------------------------------------------------


@contextmanager
def fresh_ledger(kind: str, workdir: Path) -> Iterator[str]:
    """The URL of a migrated, empty ledger, removed afterwards."""
    if kind == "sqlite":
        path = workdir / f"ledger-{uuid.uuid4().hex[:8]}.db"
        db.upgrade(f"sqlite:///{path}")
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    name = f"dispatch_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
        db.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- one measurement, in a child process ------------------------------------------------------------------


def status_kb(field: str) -> int:
    """A size from Linux's /proc/self/status, in kB."""
    found = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert found is not None
    return int(found.group(1))


def child(what: str, url: str, path: str, traced: bool) -> None:
    factory = db.session_factory(db.make_engine(url))
    if traced:
        tracemalloc.start()
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the present size
    before = status_kb("VmRSS")
    start = time.perf_counter()
    with db.transaction(factory) as session:
        if what == "naive":
            added = naive_import(session, "bench", Path(path).read_bytes())
        else:
            with open(path, "rb") as stream:
                added = import_rows(session, "bench", read_rows(stream, source=path), now=datetime.now(UTC)).added
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if traced else None
    grown = (status_kb("VmHWM") - before) * 1024
    print(json.dumps({"added": added, "seconds": seconds, "rss": grown, "python": peak}))


def measure(what: str, url: str, path: Path, *, traced: bool) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", what, url, str(path), "1" if traced else "0"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


@dataclass
class Row:
    database: str
    what: str
    rows: int
    added: int
    seconds: float
    rss: float
    python: float | None
    baseline: Row | None = None

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def bench(kind: str, rows: int, baseline_rows: int, workdir: Path, traced: bool) -> list[Row]:
    files = {}
    for n in sorted({rows, baseline_rows}):
        files[n] = workdir / f"list-{n}.csv"
        write_file(files[n], n)

    def run(what: str, n: int) -> Row:
        measured: dict[str, float] = {}
        for pass_traced in (False, True) if traced else (False,):
            with fresh_ledger(kind, workdir) as url:
                result = measure(what, url, files[n], traced=pass_traced)
            if pass_traced:
                measured["python"] = result["python"]
            else:
                measured.update(result)
            print(f"{kind} {what} {n}: {result['seconds']:.2f}s (traced: {pass_traced})", file=sys.stderr)
        return Row(kind, what, n, int(measured["added"]), measured["seconds"], measured["rss"], measured.get("python"))

    naive = run("naive", baseline_rows)
    small = run("import", baseline_rows)
    big = run("import", rows) if rows != baseline_rows else small
    if naive.added != small.added:
        raise SystemExit(f"{kind}: the baseline added {naive.added} members, the import {small.added}")
    small.baseline = big.baseline = naive
    return [naive, small] + ([big] if big is not small else [])


def print_table(rows: list[Row]) -> None:
    names = {"naive": "naive, whole file, row by row (baseline)", "import": "import_rows, streamed, batches"}
    header = (
        f"{'database':<9} {'what':<42} {'rows':>7} {'added':>7} {'seconds':>8} {'rows/s':>7} {'peak RSS':>9} "
        f"{'peak py':>8} {'ratio vs baseline':>17}"
    )
    print(header)
    print("-" * len(header))
    mib: Callable[[float | None], str] = lambda v: "" if v is None else f"{v / 2**20:.1f}M"  # noqa: E731
    for row in rows:
        ratio = "baseline" if row.baseline is None else f"{row.rate / row.baseline.rate:.1f}x rows/s"
        print(
            f"{row.database:<9} {names[row.what]:<42} {row.rows:>7} {row.added:>7} {row.seconds:>8.2f} "
            f"{row.rate:>7.0f} {mib(row.rss):>9} {mib(row.python):>8} {ratio:>17}"
        )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2], argv[3], argv[4] == "1")
        return
    parser = argparse.ArgumentParser(description="Supporter list import at volume vs a naive baseline.")
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the big file (default 200,000)")
    parser.add_argument("--baseline-rows", type=int, default=20_000, help="rows for the baseline (default 20,000)")
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--no-tracemalloc", action="store_true", help="skip the second, traced pass (no 'peak py' column)"
    )
    args = parser.parse_args(argv)
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    workdir = Path(tempfile.mkdtemp(prefix="dispatch-bench-import-"))
    started = time.perf_counter()
    try:
        rows: list[Row] = []
        for kind in kinds:
            (workdir / kind).mkdir()
            rows += bench(kind, args.rows, args.baseline_rows, workdir / kind, not args.no_tracemalloc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"supporter import: {args.rows} rows streamed vs a naive baseline at {args.baseline_rows} rows "
        f"(one run each, a fresh process and ledger per run); {os.cpu_count()} CPUs; "
        f"{time.perf_counter() - started:.0f}s in all"
    )
    print_table(rows)


if __name__ == "__main__":
    main()
