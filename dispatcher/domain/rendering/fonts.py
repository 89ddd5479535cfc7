"""The fax's fonts: Noto Sans SC first, then a Noto font for every other script, each read once per process.

fpdf2 draws a character in the first of these fonts that has it (``set_fallback_fonts``) and, where the
text needs it (:func:`needs_shaping`), shapes it with HarfBuzz (``set_text_shaping``), so Arabic letters
join, Indic syllables form, and Arabic and Hebrew run right to left. Every font comes from the package
index:

- Noto Sans SC (pylopdf-fonts-zh-cn): Latin, Chinese, Japanese kana, basic Greek and Cyrillic;
- Noto Sans (manimgx-fonts): the rest of Latin, Greek and Cyrillic;
- Noto Sans KR (pylopdf-fonts-ko): Hangul;
- Noto Sans Arabic, Hebrew, Devanagari, Thai, and the other scripts below, Noto Sans Symbols and
  Noto Emoji (manimgx-fonts).

A character that none of them has would be left out of the page (or drawn as an empty box):
:func:`undrawable` finds it first, so that validation reports it and rendering refuses it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import manimgx_fonts
import pylopdf_fonts_ko
import pylopdf_fonts_zh_cn
from fontTools.ttLib import TTFont

from dispatcher.domain.characters import describe as describe_control

# The fonts of manimgx-fonts used after Noto Sans SC and Noto Sans KR, in the order they are tried.
_SCRIPT_FONTS = (
    "NotoSansArabic",
    "NotoSansHebrew",
    "NotoSansDevanagari",
    "NotoSansThai",
    "NotoSansBengali",
    "NotoSansGurmukhi",
    "NotoSansGujarati",
    "NotoSansOriya",
    "NotoSansTamil",
    "NotoSansTelugu",
    "NotoSansKannada",
    "NotoSansMalayalam",
    "NotoSansSinhala",
    "NotoSansMyanmar",
    "NotoSansKhmer",
    "NotoSansLao",
    "NotoSansArmenian",
    "NotoSansGeorgian",
    "NotoSansEthiopic",
    "NotoSansSymbols",
    "NotoEmoji",
)
# Format characters (Unicode category Cf) that are drawn: the prepended concatenation marks.
_VISIBLE_FORMAT = frozenset("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd")
_RIGHT_TO_LEFT = frozenset({"R", "AL", "AN"})  # bidirectional classes of right-to-left text
_MARKS = frozenset({"Mn", "Mc", "Me"})
_JOINERS = frozenset("\u200c\u200d")  # zero-width non-joiner and joiner
_UNNAMED = {"Co": "a private-use character", "Cn": "an unassigned code point", "Cs": "a surrogate"}

CANNOT_DRAW = "which the fax's fonts cannot draw"


@dataclass(frozen=True)
class FaxFont:
    """One font file, and the family name fpdf2 knows it by."""

    family: str
    path: Path


class UndrawableTextError(ValueError):
    """Text holds a character that no fax font has: drawing it would leave it out of the page."""


@cache
def fax_fonts() -> tuple[FaxFont, ...]:
    """Every fax font, the main one (Noto Sans SC) first, then the fallbacks in the order they are tried."""
    folder = Path(manimgx_fonts.__file__).parent
    return (
        FaxFont("NotoSansSC", Path(pylopdf_fonts_zh_cn.sans_path())),
        FaxFont("NotoSans", folder / "NotoSans[wght].ttf"),
        FaxFont("NotoSansKR", Path(pylopdf_fonts_ko.sans_path())),
        *(FaxFont(name, folder / f"{name}[wght].ttf") for name in _SCRIPT_FONTS),
    )


@cache
def coverage(font: FaxFont) -> frozenset[int]:
    """The code points ``font`` has a glyph for, read from its cmap once per process."""
    with TTFont(font.path, lazy=True) as file:
        return frozenset(file.getBestCmap())


@lru_cache(maxsize=8192)
def font_for(char: str) -> FaxFont | None:
    """The first fax font that has ``char``; None if none has it."""
    code = ord(char)
    return next((font for font in fax_fonts() if code in coverage(font)), None)


def fonts_for(text: str) -> tuple[FaxFont, ...]:
    """The main font, then each fallback that draws a character of ``text``, in their order."""
    used = {font_for(char) for char in set(text)}
    main, *fallbacks = fax_fonts()
    return (main, *(font for font in fallbacks if font in used))


def needs_shaping(text: str) -> bool:
    """Whether ``text`` must be shaped to read right: it holds a right-to-left character (Arabic, Hebrew),
    a combining mark (the vowel signs and viramas of Devanagari and other Indic scripts, Thai tone
    marks, accents written apart) or a joiner. Shaping costs time, so other text is drawn as it is."""
    return any(
        unicodedata.bidirectional(char) in _RIGHT_TO_LEFT or unicodedata.category(char) in _MARKS or char in _JOINERS
        for char in set(text)
    )


def needs_no_glyph(char: str) -> bool:
    """A line break, or a character that only affects its neighbours (zero-width joiner, direction
    marks, variation selectors): nothing is drawn for it, shaped or not."""
    code = ord(char)
    if char == "\n" or 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF:
        return True
    return unicodedata.category(char) == "Cf" and char not in _VISIBLE_FORMAT


def undrawable(text: str) -> Iterator[tuple[int, str]]:
    """Each character of ``text`` that no fax font can draw, with its index."""
    for index, char in enumerate(text):
        if not needs_no_glyph(char) and font_for(char) is None:
            yield index, char


def require_drawable(text: str, *, what: str) -> None:
    """Raise UndrawableTextError naming the first character of ``text`` that no fax font can draw."""
    for _, char in undrawable(text):
        raise UndrawableTextError(f"{what} contains {describe(char)}, {CANNOT_DRAW}")


def describe(char: str) -> str:
    """A character as "U+13000 (EGYPTIAN HIEROGLYPH A001)"; one without a name by its kind."""
    name = unicodedata.name(char, "")
    if name:
        return f"U+{ord(char):04X} ({name})"
    category = unicodedata.category(char)
    if category in _UNNAMED:
        return f"U+{ord(char):04X} ({_UNNAMED[category]})"
    return describe_control(char)
