"""The benchmark harness (bench/, `python -m bench`) keeps working: its checks count right, and one
scenario runs end to end at CI size against the real processes, PostgreSQL, Redis and Postfix's
smtp-sink. Nothing here asserts a speed: figures only have to be there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.checks import check
from bench.services import Dump, tools_missing

ROOT = Path(__file__).resolve().parent.parent


def test_check_finds_missing_doubled_stray_and_unended_deliveries() -> None:
    ledger = {"a": "submitted", "b": "delivered", "c": "queued", "d": "failed", "e": "submitted"}
    received = Counter({"a": 1, "b": 2, "d": 1, "zz": 1})
    verdict = check(ledger, received, where="the sink")
    assert verdict.deliveries == 5
    assert verdict.problems == [
        "deliveries not ended: {'queued': 1}",
        "deliveries ended without being sent: {'failed': 1}",
        "2 deliveries never reached the sink",  # c and e
        "1 deliveries reached the sink more than once",
        "1 references reached the sink that the ledger does not hold",
    ]


def test_check_passes_when_each_delivery_arrived_once() -> None:
    assert check({"a": "submitted", "b": "delivered"}, {"a": 1, "b": 1}, where="the sink").ok


def test_dump_counts_messages_and_references_as_the_file_grows(tmp_path: Path) -> None:
    path = tmp_path / "dump"
    message = (
        "X-Client-Addr: 127.0.0.1\nX-Client-Proto: ESMTP\nReceived: from x\n\tby smtp-sink;\n"
        "Message-ID: <{ref}@example.org>\nSubject: s\n\nMessage-ID: <not-a-header@example.org>\n\n"
    )
    whole = message.format(ref="k1") + message.format(ref="k2") + message.format(ref="k1")
    cut = whole.index("Message-ID: <k2") + 5  # the second message's Message-ID line half written
    dump = Dump(path)
    path.write_text(whole[:cut])
    assert dump.read() == 2 and dump.references == Counter({"k1": 1})
    path.write_text(whole)
    assert dump.read() == 3 and dump.references == Counter({"k1": 2, "k2": 1})


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.skipif(
    bool(tools_missing()), reason="Postfix's smtp-sink/smtp-source are not installed (scripts/bench-deps)"
)
def test_copies_smtp_quick_runs_end_to_end(tmp_path: Path) -> None:
    """`python -m bench copies-smtp --quick`: 50 copies through `dispatch scheduler` and `dispatch worker`,
    smtp-source and the naive baseline; exit 0 only when every copy ended and reached smtp-sink once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "copies-smtp", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [result] = json.loads((tmp_path / "last.json").read_text())["results"]
    assert (result["scenario"], result["count"], result["problems"]) == ("copies-smtp", 50, [])
    runs = {row["what"]: row["runs"] for row in result["rows"]}
    for what in ("dispatch (scheduler + worker)", "naive Celery baseline", "smtp-source, 10 sessions"):
        assert len(runs[what]) == 1 and runs[what][0] > 0, runs
    assert "copies-smtp" in (tmp_path / "last.md").read_text()
