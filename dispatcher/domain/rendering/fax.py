"""The fax document: an A4 PDF with a cover page, then the letter, every page footed "page N of M".

fpdf2 draws it with Noto Sans SC (from pylopdf-fonts-zh-cn), so Chinese names such as 习近平 render
with a real font and no system library is needed. The page count is read from the rendered PDF, and
the creation date is fixed to the letter's date so the same inputs give the same bytes and SHA-256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, time
from functools import cache

import pylopdf_fonts_zh_cn
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from dispatcher.domain.campaign_file import AddresseeSpec, CampaignSpec
from dispatcher.domain.rendering.letter import RenderedLetter, paragraphs_of
from dispatcher.domain.templating import format_date

FONT = "NotoSansSC"
# Replaced by the total page count when the PDF is written; unlikely to occur in a letter.
PAGES_ALIAS = "{fax-pages}"
_BODY_SIZE = 11
_LINE = 5.5  # mm per body line
_LABEL_WIDTH = 38  # mm for the cover page labels


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
        self.cell(0, 5, f"page {self.page_no()} of {PAGES_ALIAS}", align="C")


@cache
def _font_path() -> str:
    """Path of the bundled CJK-capable sans font."""
    return str(pylopdf_fonts_zh_cn.sans_path())


def render_fax(spec: CampaignSpec, letter: RenderedLetter, *, to: AddresseeSpec, fax_number: str) -> FaxDocument:
    """Render the fax to one number of one addressee: cover page, then the letter."""
    pdf = _new_pdf(spec, letter)
    _cover_page(pdf, spec, letter, to=to, fax_number=fax_number)
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


def _cover_page(pdf: FPDF, spec: CampaignSpec, letter: RenderedLetter, *, to: AddresseeSpec, fax_number: str) -> None:
    """The cover: sender, an URGENT marker if urgent, then who it is for, from whom, and how long."""
    pdf.add_page()
    pdf.set_font(FONT, size=18)
    _line(pdf, spec.sender.organisation, height=9)
    pdf.set_font(FONT, size=9)
    for address_line in spec.sender.address:
        _line(pdf, address_line, height=4.5)
    pdf.ln(6)
    if spec.campaign.urgency == "urgent":
        _urgent_marker(pdf)
    pdf.set_font(FONT, size=22)
    _line(pdf, "FAX", height=12)
    pdf.ln(2)
    for label, value in _cover_rows(spec, letter, to=to, fax_number=fax_number):
        _row(pdf, label, value)


def _cover_rows(
    spec: CampaignSpec, letter: RenderedLetter, *, to: AddresseeSpec, fax_number: str
) -> list[tuple[str, str]]:
    """The cover page's label/value rows; empty values are left out."""
    sender = spec.sender
    rows = [
        ("To", to.name),
        ("Title", to.title),
        ("Organisation", to.organisation),
        ("Fax", fax_number),
        ("", ""),
        ("From", sender.organisation),
        ("Signatory", _signatory(spec)),
        ("Fax (caller id)", sender.fax_caller_id),
        ("Reply to", sender.reply_to or sender.email),
        ("", ""),
        ("Date", format_date(letter.date)),
        ("Pages", f"{PAGES_ALIAS} (including this cover page)"),
        ("Subject", letter.subject),
    ]
    return [(label, value) for label, value in rows if value or not label]


def _signatory(spec: CampaignSpec) -> str:
    """The signatory with their title, e.g. "Sophie Richardson, China Director"."""
    return ", ".join(p for p in (spec.sender.signatory, spec.sender.signatory_title) if p)


def _urgent_marker(pdf: FPDF) -> None:
    """A black band with "URGENT" in white: survives a low-resolution fax better than colour."""
    pdf.set_font(FONT, size=20)
    pdf.set_fill_color(0, 0, 0)
    pdf.set_text_color(255, 255, 255)
    pdf.cell(0, 12, "URGENT", align="C", fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0, 0, 0)
    pdf.ln(6)


def _row(pdf: FPDF, label: str, value: str) -> None:
    """One cover row: the label in grey, the value wrapped beside it; an empty row is a gap."""
    if not label:
        pdf.ln(4)
        return
    pdf.set_font(FONT, size=10)
    pdf.set_text_color(90, 90, 90)
    pdf.cell(_LABEL_WIDTH, 7, label)
    pdf.set_text_color(0, 0, 0)
    pdf.set_font(FONT, size=12)
    pdf.multi_cell(0, 7, value, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _letter_pages(pdf: FPDF, letter: RenderedLetter) -> None:
    """The letter itself, paragraph by paragraph, breaking pages as needed."""
    pdf.add_page()
    pdf.set_font(FONT, size=_BODY_SIZE)
    for paragraph in paragraphs_of(letter.text):
        pdf.multi_cell(0, _LINE, paragraph, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(_LINE * 0.6)


def _line(pdf: FPDF, text: str, *, height: float) -> None:
    """One full-width line of text (wrapped if too long)."""
    pdf.multi_cell(0, height, text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
