"""`python -m bench all|copies-smtp|copies-api|faxes|urgent|scale [--quick] [--runs R] [--count N] [--save]`

Runs each scenario against the real processes (`dispatch scheduler`, `dispatch worker`, `dispatch web`,
`dispatch campaign load/schedule`) on a fresh PostgreSQL database and a Redis prefix of its own, prints
its table, and writes the tables as JSON and markdown: to var/bench/ (or --out), and with --save also
under bench/results/ with the machine's description. Exits 1 when any check failed (a delivery that did
not end, or a reference received other than once), 2 when a needed tool is missing.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from bench.report import ROOT, Result, as_json, machine, markdown, save, table
from bench.runs import Options
from bench.scenarios import SCENARIOS
from bench.services import tools_missing


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["all", *SCENARIOS])
    parser.add_argument("--quick", action="store_true", help="small counts, for CI (a minute or two)")
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario, the median is shown (default 3)")
    parser.add_argument("--count", type=int, default=None, help="N for the scenario(s) instead of the defaults")
    parser.add_argument("--concurrency", type=int, default=2, help="`dispatch worker --concurrency` (default 2)")
    parser.add_argument(
        "--stall-seconds", type=float, default=180.0, help="give a run up after this long without progress"
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="DISPATCH_X=VALUE",
        help="a setting for every process of every deployment (repeatable), e.g. DISPATCH_CAMPAIGN_PER_MINUTE=100000",
    )
    parser.add_argument("--save", action="store_true", help="also write the results under bench/results/")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench", help="where the last results go")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, campaigns, oracles)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    missing = tools_missing()
    if missing:
        print(
            f"missing: {', '.join(missing)}; run scripts/bench-deps (installs Debian's postfix package)",
            file=sys.stderr,
        )
        return 2
    settings = dict(item.split("=", 1) for item in args.settings)
    workdir = Path(tempfile.mkdtemp(prefix="dispatch-bench-"))
    options = Options(
        workdir=workdir,
        runs=args.runs if args.runs is not None else (1 if args.quick else 3),
        count=args.count,
        quick=args.quick,
        concurrency=args.concurrency,
        stall_seconds=args.stall_seconds,
        settings=settings,
    )
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    results: list[Result] = []
    try:
        for name in names:
            try:
                result = SCENARIOS[name](options)
            except Exception as err:  # reported with the others; the next scenario still runs
                result = Result(name, "did not run to its end", 0, problems=[f"{type(err).__name__}: {err}"])
            results.append(result)
            print(table(result), flush=True)
            print(flush=True)
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    described = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "last.json").write_text(as_json(results, described, command), encoding="utf-8")
    (args.out / "last.md").write_text(markdown(results, described, command), encoding="utf-8")
    print(f"written: {args.out / 'last.json'}, {args.out / 'last.md'}")
    if args.save:
        for path in save(results, command, ROOT / "bench" / "results"):
            print(f"saved: {path.relative_to(ROOT)}")
    failed = [r.scenario for r in results if r.problems]
    if failed:
        print(f"checks failed in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
