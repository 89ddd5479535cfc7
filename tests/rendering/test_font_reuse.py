"""The fax fonts are parsed once per process and their subsets reused, and that changes no byte of a fax.

A fax rendered in a fresh process (a worker's first, or `dispatch web` serving it) and one rendered with
every font and subset already in memory must be the same bytes: the SHA-256 the worker records is the
one the web's PDF has.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fpdf import fonts as fpdf_fonts_module

from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.rendering import FaxDocument, fpdf_fonts, load_letter, render_fax

from .conftest import LETTER_DATE, make_spec

OTHER_BODY = "{{ to.salutation }}\n\n감사합니다, شكرا and 王毅.\n"


def _fax(spec: CampaignSpec, base: Path, *, number: str = "+86 10 6307 0900") -> FaxDocument:
    letter = load_letter(spec, base, date=LETTER_DATE)
    return render_fax(spec, letter, to=spec.to[0], fax_number=number)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every font file fpdf2 parses into a font object, in order."""
    seen: list[str] = []
    original = fpdf_fonts_module.TTFFont.__init__

    def spy(self: fpdf_fonts_module.TTFFont, fpdf: object, font_file_path: Path, *args: object, **kw: object) -> None:
        seen.append(Path(font_file_path).name)
        original(self, fpdf, font_file_path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(fpdf_fonts_module.TTFFont, "__init__", spy)
    yield seen


def test_fonts_are_parsed_once_per_process(parses: list[str], tmp_path: Path) -> None:
    fpdf_fonts.forget()
    _fax(make_spec(), tmp_path)
    first = list(parses)
    assert first, "the first fax parses its fonts"
    _fax(make_spec(), tmp_path, number="+86 10 6599 1234")
    _fax(make_spec(body=OTHER_BODY), tmp_path)
    assert parses[: len(first)] == first
    assert not set(parses[len(first) :]) & set(first), "a font parsed before is parsed again"


def test_warm_and_cold_renders_give_the_same_bytes(tmp_path: Path) -> None:
    specs = [make_spec(), make_spec(body=OTHER_BODY), make_spec()]
    fpdf_fonts.forget()
    cold = []
    for spec in specs:
        cold.append(_fax(spec, tmp_path))
        fpdf_fonts.forget()  # each as a fresh process would render it
    warm = [_fax(spec, tmp_path) for spec in specs]  # the third reuses the first's subset
    assert [doc.sha256 for doc in warm] == [doc.sha256 for doc in cold]
    assert [doc.pdf for doc in warm] == [doc.pdf for doc in cold]


def test_another_number_in_a_warm_process_matches_a_cold_render(tmp_path: Path) -> None:
    fpdf_fonts.forget()
    _fax(make_spec(), tmp_path)
    warm = _fax(make_spec(), tmp_path, number="+86 10 6599 8765")
    fpdf_fonts.forget()
    cold = _fax(make_spec(), tmp_path, number="+86 10 6599 8765")
    assert warm.pdf == cold.pdf


def test_preloading_parses_the_main_font_before_the_first_fax(parses: list[str], tmp_path: Path) -> None:
    fpdf_fonts.forget()
    fpdf_fonts.preload()  # a worker's parent before it forks, a web process at its start
    assert parses == ["NotoSansSC-Regular.otf"]
    _fax(make_spec(), tmp_path)
    assert parses == ["NotoSansSC-Regular.otf"]
