"""The fax document: an A4 PDF with a cover page, then the letter, every page footed "page N of M".

templates/fax/cover.jsonl.j2 lays out the cover page (drawn by drawing.py); the letter pages and the
footers are drawn here. fpdf2 draws everything with Noto Sans SC (from pylopdf-fonts-zh-cn), so Chinese
names such as 习近平 render with a real font and no system library is needed. The page count is read
from the rendered PDF, and the creation date is fixed to the letter's date so the same inputs give the
same bytes and SHA-256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, time
from functools import cache
from typing import Any

import jinja2
import pylopdf_fonts_zh_cn
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from dispatcher.domain.campaign_file import AddresseeSpec, CampaignSpec
from dispatcher.domain.rendering.drawing import draw, parse_instructions
from dispatcher.domain.rendering.letter import RenderedLetter, paragraphs_of
from dispatcher.domain.rendering.templates import FAX_COVER, render
from dispatcher.domain.templating import format_date

FONT = "NotoSansSC"
# Replaced by the total page count when the PDF is written; unlikely to occur in a letter.
PAGES_ALIAS = "{fax-pages}"
_BODY_SIZE = 11
_LINE = 5.5  # mm per body line


@dataclass(frozen=True, kw_only=True)
class FaxDocument:
    """The PDF to send, its page count (cover included) and its SHA-256, kept as evidence."""

    pdf: bytes
    page_count: int
    sha256: str


class _FaxPDF(FPDF):
    """FPDF with the "page N of M" footer on every page."""

    def footer(self) -> None:
        """Draw the page footer, so a page separated from the rest can be placed again."""
        self.set_y(-12)
        self.set_font(FONT, size=8)
        self.set_text_color(0)
        self.cell(0, 5, f"page {self.page_no()} of {PAGES_ALIAS}", align="C")


@cache
def _font_path() -> str:
    """Path of the bundled CJK-capable sans font."""
    return str(pylopdf_fonts_zh_cn.sans_path())


def render_fax(
    spec: CampaignSpec,
    letter: RenderedLetter,
    *,
    to: AddresseeSpec,
    fax_number: str,
    templates: jinja2.Environment | None = None,
) -> FaxDocument:
    """Render the fax to one number of one addressee: cover page, then the letter."""
    pdf = _new_pdf(spec, letter)
    cover = render(FAX_COVER, _cover_context(spec, letter, to=to, fax_number=fax_number), templates=templates)
    pdf.add_page()
    draw(pdf, parse_instructions(cover), font=FONT)
    _letter_pages(pdf, letter)
    data = bytes(pdf.output())
    return FaxDocument(pdf=data, page_count=pdf.pages_count, sha256=hashlib.sha256(data).hexdigest())


def _new_pdf(spec: CampaignSpec, letter: RenderedLetter) -> _FaxPDF:
    """An A4 document with fixed metadata, the font and the page-count alias set up."""
    pdf = _FaxPDF(format="A4", unit="mm")
    pdf.set_creation_date(datetime.combine(letter.date, time(), tzinfo=UTC))
    pdf.set_title(letter.subject)
    pdf.set_author(spec.sender.organisation)
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.alias_nb_pages(PAGES_ALIAS)
    pdf.add_font(FONT, fname=_font_path())
    return pdf


def _cover_context(spec: CampaignSpec, letter: RenderedLetter, *, to: AddresseeSpec, fax_number: str) -> dict[str, Any]:
    """What the cover template sees; ``pages`` is the alias fpdf2 replaces with the page count."""
    return {
        "sender": spec.sender,
        "to": to,
        "fax_number": fax_number,
        "subject": letter.subject,
        "date": format_date(letter.date),
        "pages": PAGES_ALIAS,
        "urgent": spec.campaign.urgency == "urgent",
    }


def _letter_pages(pdf: FPDF, letter: RenderedLetter) -> None:
    """The letter itself in black, paragraph by paragraph, breaking pages as needed."""
    pdf.add_page()
    pdf.set_font(FONT, size=_BODY_SIZE)
    pdf.set_text_color(0)
    for paragraph in paragraphs_of(letter.text):
        pdf.multi_cell(0, _LINE, paragraph, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(_LINE * 0.6)
