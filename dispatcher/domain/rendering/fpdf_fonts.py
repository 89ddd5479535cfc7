"""The fax fonts as fpdf2 font objects: each parsed once per process, each subset made once per glyph set.

fpdf2 parses a font file on every ``add_font`` (its cmap and widths: 0.1 s for Noto Sans SC) and, when
the PDF is written, subsets the font in place with fontTools (another 0.1 s for a CJK font). Here a
document gets a copy of a font parsed once, sharing its read-only tables (cmap, widths, glyph ids) and
with the per-document parts (glyphs used, missing glyphs) of its own. The subset written for a set of
glyphs is kept (bounded, by font and glyph names): the next document that uses the same glyphs hands
fpdf2 that small font to subset again, which gives the same bytes at a fraction of the cost. Rendering
stays deterministic whether a process is fresh or warm (tests/rendering/test_font_reuse.py).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from functools import cache
from typing import Any, TypeGuard

from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.fonts import SubsetMap, TTFFont

from dispatcher.domain.rendering.fonts import FaxFont, fax_fonts

SUBSETS_KEPT = 512  # subset fonts kept per process, each a few kilobytes to a few tens of kilobytes

_subsets: OrderedDict[tuple[str, frozenset[str]], bytes] = OrderedDict()
_lock = threading.Lock()


@cache
def _parsed(font: FaxFont) -> TTFFont:
    """The font parsed by fpdf2, once per process; never written into a document itself."""
    scratch = FPDF()
    scratch.add_font(font.family, fname=str(font.path))
    parsed = scratch.fonts[font.family.lower()]
    assert isinstance(parsed, TTFFont)
    return parsed


def preload() -> None:
    """Parse the main fax font now: in a worker's parent before it forks its pool (every child inherits
    it), or at a web process's start, so that the first fax of an urgent letter does not wait for it."""
    _parsed(fax_fonts()[0])


def add_font(pdf: FPDF, font: FaxFont) -> None:
    """Add ``font`` to ``pdf`` as ``pdf.add_font`` would, from the copy parsed once per process."""
    parsed = _parsed(font)
    if parsed.color_font is not None:  # a colour font keeps drawing state per document: not shared
        pdf.add_font(font.family, fname=str(font.path))
        return
    own = TTFFont.__new__(TTFFont)
    for name in TTFFont.__slots__:
        if hasattr(parsed, name):  # fpdf2 leaves some slots unset
            setattr(own, name, getattr(parsed, name))
    own.i = len(pdf.fonts) + 1
    own.ttfont = _file(font, cid_cff=own.is_cff and own.is_cid_keyed)  # fpdf2 subsets it when writing the PDF
    own._hbfont = None  # opened from the file when shaping needs it
    own.missing_glyphs = []
    own.biggest_size_pt = 0
    own.subset = SubsetMap(own)
    pdf.fonts[parsed.fontkey] = own
    if own.is_cff and own.is_cid_keyed:
        pdf._set_min_pdf_version("1.6")  # as fpdf2's add_font does for such a font


class _CidCffFile(TTFont):  # type: ignore[misc]  # fontTools has no type hints
    """A CID-keyed CFF font (Noto Sans SC) as fpdf2 embeds it: fpdf2 writes the subset font whole, then
    embeds only its CFF table, compiled again; the whole write, thrown away, is skipped."""

    def save(self, file: Any, reorderTables: bool | None = True) -> None:
        return None


def _file(font: FaxFont | bytes, *, cid_cff: bool) -> TTFont:
    """The font file (or a subset kept) for one document. Its bounding boxes are kept as the font file has
    them, not computed again from the outlines of the glyphs kept (a quarter of a warm render's time, every
    charstring drawn): the whole font's box holds every subset's."""
    source = io.BytesIO(font) if isinstance(font, bytes) else font.path
    kind = _CidCffFile if cid_cff else TTFont
    return kind(source, recalcTimestamp=False, recalcBBoxes=False, lazy=True)


def use_known_subsets(pdf: FPDF, fonts: tuple[FaxFont, ...]) -> None:
    """Before the PDF is written: each font whose glyph set was subset before starts from that subset."""
    for font in fonts:
        own = pdf.fonts.get(font.family.lower())
        if not _kept(own):
            continue
        with _lock:
            known = _subsets.get(_key(font, own))
            if known is not None:
                _subsets.move_to_end(_key(font, own))
        if known is not None:
            own.ttfont = _file(known, cid_cff=own.is_cid_keyed)


def keep_subsets(pdf: FPDF, fonts: tuple[FaxFont, ...]) -> None:
    """After the PDF is written (fpdf2 subset each font in place): keep each subset for its glyph set."""
    for font in fonts:
        own = pdf.fonts.get(font.family.lower())
        if not _kept(own):
            continue
        key = _key(font, own)
        with _lock:
            if key in _subsets:
                continue
        data = io.BytesIO()
        TTFont.save(own.ttfont, data)  # the whole subset font, even where fpdf2 needs only its CFF table
        with _lock:
            _subsets[key] = data.getvalue()
            while len(_subsets) > SUBSETS_KEPT:
                _subsets.popitem(last=False)


def _kept(own: object) -> TypeGuard[TTFFont]:
    """Whether a font's subsets are kept: CFF fonts only (the CJK ones, whose subsetting costs), as their
    glyph names survive in the subset's file; a TrueType subset is written without them."""
    return isinstance(own, TTFFont) and own.is_cff


def _key(font: FaxFont, own: TTFFont) -> tuple[str, frozenset[str]]:
    return str(font.path), frozenset(own.subset.get_all_glyph_names())


def forget() -> None:
    """Drop every parsed font and kept subset, as in a fresh process (tests and benchmarks)."""
    _parsed.cache_clear()
    with _lock:
        _subsets.clear()
