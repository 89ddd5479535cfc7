"""Fax render time: cold (fonts parsed and subset for every fax, as before fpdf_fonts.py) against warm.

    python bench/fax_render.py [--faxes 40] [--repeats 3]

Renders the example campaign's letter to its first "To" addressee, each fax to another number (as a
campaign to many numbers does). The cold baseline forgets every parsed font and kept subset before each
fax: what every render cost when fonts were parsed and subset per document. Both are measured in this
run; the median of the repeats is printed, with the ratio. Checks that cold and warm faxes are the same
bytes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date
from pathlib import Path

from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.rendering import fpdf_fonts, load_letter, render_fax

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "campaigns" / "north-korean-refugees"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faxes", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    spec = load_spec(EXAMPLE / "campaign.toml")
    letter = load_letter(spec, EXAMPLE, date=date(2026, 11, 27))
    numbers = [f"+86 10 {6300 + i // 100:04d} {1000 + i * 37 % 9000:04d}" for i in range(options.faxes)]

    def run(*, cold: bool) -> tuple[float, list[str]]:
        fpdf_fonts.forget()
        hashes = []
        started = time.process_time()  # CPU seconds: other work on the machine does not count
        for number in numbers:
            if cold:
                fpdf_fonts.forget()
            hashes.append(render_fax(spec, letter, to=spec.to[0], fax_number=number).sha256)
        return (time.process_time() - started) / len(numbers), hashes

    cold, warm = [], []
    for _ in range(options.repeats):
        seconds, cold_hashes = run(cold=True)
        cold.append(seconds)
        seconds, warm_hashes = run(cold=False)
        warm.append(seconds)
        if cold_hashes != warm_hashes:
            raise SystemExit("cold and warm renders differ: the fax bytes depend on the process's caches")
    before, after = statistics.median(cold), statistics.median(warm)
    print(f"{'render, per fax':<44}{'CPU s':>10}{'faxes/s':>10}")
    print(f"{'cold: parse + subset every fax (baseline)':<44}{before:>10.3f}{1 / before:>10.1f}")
    print(f"{'warm: parsed once, subsets kept':<44}{after:>10.3f}{1 / after:>10.1f}")
    print(f"ratio (cold / warm): {before / after:.1f}x over {options.faxes} faxes x {options.repeats} runs")


if __name__ == "__main__":
    main()
