"""Campaign files the runs load with `dispatch campaign load`: the example campaign
(config/campaigns/north-korean-refugees/) with N supporters copied at dispatch, or with N addressees
reached by fax, or a single-letter urgent one. Written with tests/builders.py."""

from __future__ import annotations

from pathlib import Path

from tests.builders import EXAMPLE_DIR, build_campaign, official

LETTER_BYTES = 4096
FILLER = (
    "We also ask that the authorities allow independent monitors access to the detainees, inform their "
    "families of their whereabouts, and ensure that they are not returned to a country where they face "
    "persecution, torture or other serious harm.\n\n"
)


def letter_template(size: int = LETTER_BYTES) -> str:
    """The example's letter, padded with paragraphs of plain text to ``size`` bytes of template."""
    text = (EXAMPLE_DIR / "letter.txt.j2").read_text(encoding="utf-8")
    while len(text.encode()) < size:
        text += FILLER
    return text[:size]


def fax_number(index: int) -> str:
    """A distinct, valid Beijing fax number per index (+86 10 6xxx xxxx)."""
    return f"+86 10 6{index:07d}"


def copies_campaign(folder: Path, name: str, supporters: int) -> Path:
    """One official reached by email, and ``supporters`` supporters (consent given) copied at dispatch:
    ``supporters`` + 1 emails."""
    rows = [(f"supporter{i}@example.org", f"Supporter {i}") for i in range(supporters)]
    return build_campaign(
        folder,
        name=name,
        supporters=rows,
        template=letter_template(),
        to=[official("A. Minister", title="Minister", email=["minister@example.gov.cn"])],
        cc=[],
        extra={"supporters": {"copies": "at-dispatch"}},
    )


def fax_campaign(folder: Path, name: str, addressees: int, *, first: int = 0) -> Path:
    """``addressees`` officials, each with one fax number of their own, no supporters: that many faxes."""
    people = [official(f"Official {i}", title="Director", fax=[fax_number(first + i)]) for i in range(addressees)]
    return build_campaign(folder, name=name, to=people, cc=[], supporters_file=None)
