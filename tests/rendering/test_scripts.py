"""Letters in every script a letter to officials may need: each is drawn, none is dropped.

The fax's fonts (dispatcher/domain/rendering/fonts.py) cover CJK with Hangul, Arabic and Hebrew (shaped,
right to left), Cyrillic, Greek, Devanagari and Thai; a character that no font can draw is refused.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from pypdf import PdfReader
from pypdf.generic import ContentStream

from dispatcher.domain.rendering import FaxDocument, fonts, load_letter, render_fax
from dispatcher.domain.rendering.fonts import needs_shaping

from .conftest import LETTER_DATE, make_spec, pdf_page_text

SAMPLES = {
    "Korean": "감사합니다.",
    "Arabic": "شكرا لكم على اهتمامكم",
    "Hebrew": "תודה רבה על תשומת הלב",
    "Russian": "Спасибо за внимание",
    "Ukrainian": "Дякуємо, Україна",
    "Greek": "Ευχαριστούμε πολύ",
    "Hindi": "धन्यवाद, नमस्ते",
    "Thai": "ขอบคุณมาก",
}
ARABIC_SALUTATION = "معالي الوزير،"  # ends (so starts on the left) with an Arabic comma, drawn in the Arabic font
BODY = "{{ to.salutation }}\n\n" + "\n\n".join(f"{language}: {text}" for language, text in SAMPLES.items()) + "\n"


def _fax(body: str, tmp_path: Path) -> FaxDocument:
    spec = make_spec(body=body)
    letter = load_letter(spec, tmp_path, date=LETTER_DATE)
    return render_fax(spec, letter, to=spec.to[0], fax_number="+86 10 6307 0900")


def _letter_page(tmp_path: Path) -> str:
    """The letter page's text, whitespace removed. Noto Sans Arabic draws the dots of some letters (TEH,
    SHEEN) as glyphs of their own, which map to no text: pypdf reads each as a control character."""
    return re.sub(r"[\x00-\x1f]", "", pdf_page_text(_fax(BODY, tmp_path).pdf, 1))


@pytest.mark.parametrize(
    "words",
    [
        ["감사합니다."],
        ["شكرا", "لكم", "على", "اهتمامكم"],
        ["תודה", "רבה", "על", "תשומת", "הלב"],
        ["Спасибо", "за", "внимание"],
        ["Дякуємо,", "Україна"],
        ["Ευχαριστούμε", "πολύ"],
        ["धन्यवाद,", "नमस्ते"],
        ["ขอบคุณมาก"],
    ],
    ids=list(SAMPLES),
)
def test_each_script_is_in_the_fax(tmp_path: Path, words: list[str]) -> None:
    page = _letter_page(tmp_path)
    for word in words:
        assert word in page, word


def test_korean_keeps_its_hangul(tmp_path: Path) -> None:
    """The reported bug: "감사합니다." printed as "." and validation said ok."""
    assert "Korean:감사합니다.Arabic:" in _letter_page(tmp_path)


def test_right_to_left_words_are_laid_out_right_to_left(tmp_path: Path) -> None:
    """pypdf reads glyphs in the order they are placed on the line, left to right: the last word first."""
    page = _letter_page(tmp_path)
    assert "Arabic:اهتمامكمعلىلكمشكرا" in page
    assert "Hebrew:הלבתשומתעלרבהתודה" in page


def test_arabic_letters_take_their_joined_forms(tmp_path: Path) -> None:
    """Shaped Arabic draws MEEM (U+0645) in more than one form (initial, medial, final): several glyph codes
    of the Arabic font map back to it. Unshaped text would draw its one isolated form."""
    reader = PdfReader(io.BytesIO(_fax(BODY, tmp_path).pdf))
    fonts = reader.pages[1]["/Resources"]["/Font"]
    codes_for_meem = 0
    for ref in fonts.values():
        font = ref.get_object()
        if "/ToUnicode" in font:
            cmap = font["/ToUnicode"].get_object().get_data().decode("latin-1")
            codes_for_meem += len(re.findall(r"<[0-9A-F]+> <0645>", cmap))
    assert codes_for_meem >= 2


def test_a_character_no_font_can_draw_is_refused_not_dropped(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"U\+E000"):
        _fax("Dear Minister,\n\nPlease act \ue000 now.\n", tmp_path)


def test_a_character_on_the_cover_no_font_can_draw_is_refused(tmp_path: Path) -> None:
    spec = make_spec()
    spec = spec.model_copy(update={"sender": spec.sender.model_copy(update={"organisation": "Rights \U00013000"})})
    letter = load_letter(spec, tmp_path, date=LETTER_DATE)
    with pytest.raises(ValueError, match=r"U\+13000 \(EGYPTIAN HIEROGLYPH A001\)"):
        render_fax(spec, letter, to=spec.to[0], fax_number="+86 10 6307 0900")


def test_a_tab_is_a_space_on_the_fax_not_nothing(tmp_path: Path) -> None:
    text = PdfReader(io.BytesIO(_fax("Dear\tMinister,\n", tmp_path).pdf)).pages[1].extract_text()
    assert "Dear    Minister," in text.replace("\x00", "")


def test_many_scripts_same_input_same_bytes(tmp_path: Path) -> None:
    first, second = _fax(BODY, tmp_path), _fax(BODY, tmp_path)
    assert first.sha256 == second.sha256
    assert first.pdf == second.pdf


def test_a_right_to_left_paragraph_is_set_flush_right(tmp_path: Path) -> None:
    """A paragraph that starts in Arabic is placed against the right margin (it starts past 400 pt of the
    page's 595); one in English starts at the left one (59.5 pt: the 20 mm margin and fpdf2's 1 mm padding)."""
    placed: list[tuple[str, float]] = []

    def visit(text: str, cm: list[float], tm: list[float], font: object, size: object) -> None:
        if text.strip("\x00 \n"):
            placed.append((text, tm[4]))

    page = PdfReader(io.BytesIO(_fax(f"Dear Minister,\n\n{SAMPLES['Arabic']}\n", tmp_path).pdf)).pages[1]
    page.extract_text(visitor_text=visit)
    arabic = [x for text, x in placed if re.search("[\u0600-\u06ff]", text)]
    latin = [x for text, x in placed if "D" in text]
    assert arabic and min(arabic) > 400
    assert latin and round(min(latin), 1) == 59.5


def _text_without_font(pdf: bytes) -> list[str]:
    """Each page's text-showing operators that run with no font set (a viewer then shows nothing for
    them): the font is graphics state, saved by q and restored by Q."""
    found = []
    reader = PdfReader(io.BytesIO(pdf))
    for number, page in enumerate(reader.pages, start=1):
        font, saved = None, []
        for operands, operator in ContentStream(page.get_contents(), reader).operations:
            if operator == b"q":
                saved.append(font)
            elif operator == b"Q":
                font = saved.pop()
            elif operator == b"Tf":
                font = operands[0]
            elif operator in (b"Tj", b"TJ", b"'", b'"') and font is None:
                found.append(f"page {number}: {operator.decode()} {operands!r}")
    return found


@pytest.mark.parametrize(
    "body",
    [
        BODY,
        f"{ARABIC_SALUTATION}\n\n{SAMPLES['Arabic']}.\n\nDear Minister.\n",
        "감사합니다\n\nDear Minister.\n",
    ],
    ids=["every script", "right to left first", "Hangul first"],
)
def test_every_text_is_shown_in_a_font(tmp_path: Path, body: str) -> None:
    """fpdf2 2.8.9 sets the page's font inside a line it then wraps in q/Q when that line starts in a
    fallback font: the lines after it ran with no font, and poppler drew nothing of them."""
    assert _text_without_font(_fax(body, tmp_path).pdf) == []


@pytest.mark.parametrize(
    ("text", "shaped"),
    [
        ("Dear Minister, 习近平, 감사합니다, Спасибо, Ευχαριστούμε", False),
        (SAMPLES["Thai"], True),  # U+0E38 THAI CHARACTER SARA U is a combining mark
        (SAMPLES["Arabic"], True),
        (SAMPLES["Hebrew"], True),
        (SAMPLES["Hindi"], True),
        ("Cafe\u0301", True),  # an accent written apart: U+0301 COMBINING ACUTE ACCENT
    ],
)
def test_text_is_shaped_where_it_needs_it(text: str, shaped: bool) -> None:
    assert needs_shaping(text) is shaped


def test_a_character_fpdf2_leaves_out_is_refused_after_drawing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the check before drawing miss a character, fpdf2's own record of the glyphs it left out
    still refuses the document."""
    monkeypatch.setattr(fonts, "undrawable", lambda text: iter(()))
    with pytest.raises(ValueError, match=r"U\+E000 \(a private-use character\)"):
        _fax("Dear Minister,\n\nPlease act \ue000 now.\n", tmp_path)
