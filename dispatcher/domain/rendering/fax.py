"""The fax document: an A4 PDF with a cover page, then the letter, every page footed "page N of M".

templates/fax/cover.jsonl.j2 lays out the cover page (drawn by drawing.py); the letter pages and the
footers are drawn here. fpdf2 draws in Noto Sans SC, falling back to the fonts of fonts.py for the
scripts it lacks, and shapes the text with HarfBuzz where it needs it (Arabic letters join; Arabic
and Hebrew run right to left, and a paragraph that starts in one of them is set flush right). A
character that no font has is refused before anything is drawn, never left out. Only the fonts a
document uses are embedded. The page count is read from the rendered PDF, and the creation date is
fixed to the letter's date so the same inputs give the same bytes and SHA-256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

import jinja2
import phonenumbers
from fpdf import FPDF
from fpdf.bidi import auto_detect_base_direction
from fpdf.enums import TextDirection, TextEmphasis, XPos, YPos
from fpdf.fonts import TTFFont

from dispatcher.domain.campaign_file import AddresseeSpec, CampaignSpec
from dispatcher.domain.rendering import fpdf_fonts
from dispatcher.domain.rendering.drawing import Gap, Row, Text, draw, parse_instructions, unshaped_if_counting_pages
from dispatcher.domain.rendering.fonts import (
    CANNOT_DRAW,
    FaxFont,
    UndrawableTextError,
    describe,
    fonts_for,
    needs_no_glyph,
    needs_shaping,
    require_drawable,
)
from dispatcher.domain.rendering.letter import RenderedLetter, paragraphs_of
from dispatcher.domain.rendering.templates import FAX_COVER, render
from dispatcher.domain.templating import format_date

FONT = "NotoSansSC"  # the main font: fonts.fax_fonts()[0]
# Replaced by the total page count when the PDF is written; unlikely to occur in a letter.
PAGES_ALIAS = "{fax-pages}"
_BODY_SIZE = 11
_LINE = 5.5  # mm per body line
_TAB = "    "  # fpdf2 has no tab stops and would leave a tab out: four spaces stand for it


@dataclass(frozen=True, kw_only=True)
class FaxDocument:
    """The PDF to send, its page count (cover included) and its SHA-256, kept as evidence."""

    pdf: bytes
    page_count: int
    sha256: str


class _FaxPDF(FPDF):
    """FPDF with the "page N of M" footer on every page, and the font set on the page as soon as it is
    chosen."""

    def set_font(self, family: str | None = None, style: str | TextEmphasis = "", size: float = 0) -> None:
        """Choose the font, and set it on the current page at once.

        fpdf2 (2.8.9) sets a page's font with its first line of text. When that line starts in a
        fallback font, it sets the page's font inside the line, which it may wrap in q/Q: the font is
        then lost at Q, and every later line starting in the main font runs with no font, which viewers
        do not draw. Setting the font here, outside any line, keeps it for the page."""
        super().set_font(family, style, size)
        if self.page > 0 and not self.current_font_is_set_on_page and self.current_font is not None:
            self._out(self._set_font_for_page(self.current_font, self.font_size_pt))

    def footer(self) -> None:
        """Draw the page footer, so a page separated from the rest can be placed again."""
        self.set_y(-12)
        self.set_font(FONT, size=8)
        self.set_text_color(0)
        text = f"page {self.page_no()} of {PAGES_ALIAS}"
        with unshaped_if_counting_pages(self, text):
            self.cell(0, 5, text, align="C")


def render_fax(
    spec: CampaignSpec,
    letter: RenderedLetter,
    *,
    to: AddresseeSpec,
    fax_number: str,
    templates: jinja2.Environment | None = None,
) -> FaxDocument:
    """Render the fax to one number of one addressee: cover page, then the letter.

    Raise UndrawableTextError (a ValueError) if the cover or the letter holds a character no font has."""
    cover = render(FAX_COVER, _cover_context(spec, letter, to=to, fax_number=fax_number), templates=templates)
    instructions = [_without_tabs(instruction) for instruction in parse_instructions(cover)]
    paragraphs = [paragraph.replace("\t", _TAB) for paragraph in paragraphs_of(letter.text)]
    cover_text = "\n".join(_texts(instructions))
    require_drawable(cover_text, what="the fax cover page")
    require_drawable("\n".join(paragraphs), what="the letter")
    fonts = fonts_for("\n".join([cover_text, *paragraphs]))
    pdf = _new_pdf(spec, letter, fonts=fonts, shaped=needs_shaping("\n".join([cover_text, *paragraphs])))
    pdf.add_page()
    draw(pdf, instructions, font=FONT)
    _letter_pages(pdf, paragraphs)
    fpdf_fonts.use_known_subsets(pdf, fonts)
    data = bytes(pdf.output())
    fpdf_fonts.keep_subsets(pdf, fonts)
    _refuse_left_out(pdf)
    return FaxDocument(pdf=data, page_count=pdf.pages_count, sha256=hashlib.sha256(data).hexdigest())


def _new_pdf(spec: CampaignSpec, letter: RenderedLetter, *, fonts: tuple[FaxFont, ...], shaped: bool) -> _FaxPDF:
    """An A4 document with fixed metadata, ``fonts`` (parsed once per process), shaping if ``shaped``, and
    the page-count alias."""
    pdf = _FaxPDF(format="A4", unit="mm")
    pdf.set_creation_date(datetime.combine(letter.date, time(), tzinfo=UTC))
    pdf.set_title(letter.subject)
    pdf.set_author(spec.sender.organisation)
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.alias_nb_pages(PAGES_ALIAS)
    for font in fonts:
        fpdf_fonts.add_font(pdf, font)
    if len(fonts) > 1:
        pdf.set_fallback_fonts([font.family for font in fonts[1:]])
    if shaped:
        pdf.set_text_shaping(True)
    return pdf


def _refuse_left_out(pdf: FPDF) -> None:
    """Raise UndrawableTextError if fpdf2 recorded leaving a character out for want of a glyph (it keeps
    that record for unshaped text): the check before drawing should have refused it already, and a fax
    with a character missing is never sent."""
    for font in pdf.fonts.values():
        missing = font.missing_glyphs if isinstance(font, TTFFont) else []
        for char in (chr(code) for code in missing if not needs_no_glyph(chr(code))):
            raise UndrawableTextError(f"the fax contains {describe(char)}, {CANNOT_DRAW}")


def _without_tabs(instruction: Text | Row | Gap) -> Text | Row | Gap:
    """The instruction with each tab in its text replaced by spaces."""
    match instruction:
        case Text():
            return instruction.model_copy(update={"text": instruction.text.replace("\t", _TAB)})
        case Row():
            update = {"label": instruction.label.replace("\t", _TAB), "text": instruction.text.replace("\t", _TAB)}
            return instruction.model_copy(update=update)
    return instruction


def _texts(instructions: list[Text | Row | Gap]) -> list[str]:
    """Every text the instructions draw."""
    texts: list[str] = []
    for instruction in instructions:
        match instruction:
            case Text():
                texts.append(instruction.text)
            case Row():
                texts += [instruction.label, instruction.text]
    return texts


def _cover_context(spec: CampaignSpec, letter: RenderedLetter, *, to: AddresseeSpec, fax_number: str) -> dict[str, Any]:
    """What the cover template sees; ``pages`` is the alias fpdf2 replaces with the page count. Both
    fax numbers are in international format, whichever way they were written."""
    return {
        "sender": spec.sender,
        "to": to,
        "fax_number": international(fax_number, to.country),
        "caller_id": international(spec.sender.fax_caller_id, spec.sender.country),
        "subject": letter.subject,
        "date": format_date(letter.date),
        "pages": PAGES_ALIAS,
        "urgent": spec.campaign.urgency == "urgent",
    }


def international(number: str, country: str) -> str:
    """A fax number in the international notation of ITU-T E.123, groups apart by spaces only:
    "+86 10 6307 0900", "+1 212 555 0143" (read in ``country`` if it has no "+"); as given if it cannot
    be read as a number."""
    try:
        parsed = phonenumbers.parse(number, country.upper())
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL).replace("-", " ")


def _letter_pages(pdf: FPDF, paragraphs: list[str]) -> None:
    """The letter itself in black, paragraph by paragraph, breaking pages as needed; a paragraph whose
    first letter is of a right-to-left script is set flush right."""
    pdf.add_page()
    pdf.set_font(FONT, size=_BODY_SIZE)
    pdf.set_text_color(0)
    for paragraph in paragraphs:
        align = "R" if auto_detect_base_direction(paragraph) == TextDirection.RTL else "L"
        pdf.multi_cell(0, _LINE, paragraph, align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(_LINE * 0.6)
