"""Each scenario's table (figure, median of the runs, each run, ratios against the baselines of the same
invocation, what bounds the figure), printed and written as JSON and markdown; and the machine's
description that goes with saved results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    what: str
    unit: str
    runs: list[float]
    ratio: str = ""
    bound: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")


@dataclass
class Result:
    scenario: str
    title: str
    count: int
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def row(self, what: str) -> Row | None:
        return next((r for r in self.rows if r.what == what), None)

    def add(self, what: str, unit: str, runs: list[float], *, ratio: str = "", bound: str = "") -> Row:
        row = Row(what, unit, runs, ratio, bound)
        self.rows.append(row)
        return row


def ratio(figure: Row | None, base: Row | None, *, label: str) -> str:
    """``figure``'s median over ``base``'s, e.g. "0.05x naive"; higher is better for rates."""
    if figure is None or base is None or not base.runs or not figure.runs or base.median == 0:
        return ""
    return f"{figure.median / base.median:.2f}x {label}"


def _number(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def table(result: Result) -> str:
    header = ["figure", "median", "unit", "runs", "ratio", "bounded by"]
    lines = [
        [r.what, _number(r.median), r.unit, " ".join(_number(v) for v in r.runs), r.ratio, r.bound] for r in result.rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = [f"## {result.scenario}: {result.title} (N = {result.count:,})", ""]
    out.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    out += [f"- {note}" for note in result.notes]
    out += [f"- PROBLEM: {problem}" for problem in result.problems]
    return "\n".join(out)


def markdown(results: list[Result], machine: dict[str, str], command: str) -> str:
    out = ["# Benchmark results", "", f"`{command}`", "", "| machine | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in machine.items()]
    for result in results:
        out += ["", f"## {result.scenario}: {result.title} (N = {result.count:,})", ""]
        out += ["| figure | median | unit | runs | ratio | bounded by |", "|---|---:|---|---|---|---|"]
        for r in result.rows:
            runs = " ".join(_number(v) for v in r.runs)
            out.append(f"| {r.what} | {_number(r.median)} | {r.unit} | {runs} | {r.ratio} | {r.bound} |")
        out += [""] + [f"- {n}" for n in result.notes] + [f"- **problem**: {p}" for p in result.problems]
    return "\n".join(out).rstrip() + "\n"


def as_json(results: list[Result], machine: dict[str, str], command: str) -> str:
    data = {
        "command": command,
        "machine": machine,
        "results": [{**asdict(r), "medians": {row.what: row.median for row in r.rows}} for r in results],
    }
    return json.dumps(data, indent=2, default=str)


def machine() -> dict[str, str]:
    """CPU model, cores, RAM, OS, Python, PostgreSQL and Redis versions, git commit, time."""
    from bench.services import service_versions

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    described = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "os": _os(),
        "python": platform.python_version(),
        **service_versions(),
        "git commit": _git("rev-parse", "HEAD"),
        "git dirty": "yes" if _git("status", "--porcelain") else "no",
    }
    return described


def _os() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))} (Linux {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
        return done.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def save(results: list[Result], command: str, folder: Path) -> list[Path]:
    """Write ``results`` with the machine's description as <time>.json and <time>.md under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    described = machine()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    json_path, md_path = folder / f"{stamp}.json", folder / f"{stamp}.md"
    json_path.write_text(as_json(results, described, command), encoding="utf-8")
    md_path.write_text(markdown(results, described, command), encoding="utf-8")
    return [json_path, md_path]
