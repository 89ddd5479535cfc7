"""Drawing instructions for a PDF page, as a template writes them: one JSON object per line, top to bottom.

templates/fax/cover.jsonl.j2 lays out the fax cover page this way. Each line is checked here (an unknown
key, a wrong type or a malformed colour is an error) and drawn in order, across the width between the
page margins, in one font: the fax's Noto Sans SC, with the fallbacks the document set up for other scripts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

Colour = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]  # "#rrggbb"


class _Instruction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(_Instruction):
    """Text across the page, wrapped; with ``fill``, on a band of that colour (the URGENT marker)."""

    draw: Literal["text"]
    text: str
    size: float  # points
    height: float  # millimetres per line
    align: Literal["L", "C", "R"] = "L"
    color: Colour = "#000000"
    fill: Colour | None = None


class Row(_Instruction):
    """A label in a column of its own, then the text wrapped beside it."""

    draw: Literal["row"]
    label: str
    text: str
    label_width: float  # millimetres
    label_size: float  # points
    label_color: Colour = "#000000"
    size: float  # points
    height: float  # millimetres per line
    color: Colour = "#000000"


class Gap(_Instruction):
    """Empty space."""

    draw: Literal["gap"]
    height: float  # millimetres


Instruction = Annotated[Text | Row | Gap, Field(discriminator="draw")]
_INSTRUCTION: TypeAdapter[Text | Row | Gap] = TypeAdapter(Instruction)


def parse_instructions(source: str) -> list[Text | Row | Gap]:
    """The instructions in a rendered template, one per non-blank line; raise ValueError on a bad one."""
    return [_INSTRUCTION.validate_json(line) for line in source.splitlines() if line.strip()]


def draw(pdf: FPDF, instructions: list[Text | Row | Gap], *, font: str) -> None:
    """Draw the instructions from the current position down, in ``font`` (already added to ``pdf``)."""
    for instruction in instructions:
        match instruction:
            case Text():
                with unshaped_if_counting_pages(pdf, instruction.text):
                    _text(pdf, instruction, font=font)
            case Row():
                with unshaped_if_counting_pages(pdf, instruction.label + instruction.text):
                    _row(pdf, instruction, font=font)
            case Gap():
                pdf.ln(instruction.height)


@contextmanager
def unshaped_if_counting_pages(pdf: FPDF, text: str) -> Iterator[None]:
    """Draw ``text`` without text shaping if it holds the page-count alias.

    Shaped, fpdf2 places each piece of a line at a fixed position and keeps the alias's whole width
    free for the number, so a gap opens after it; unshaped, the number and the words after it follow
    each other. The texts that hold the alias are ours (the cover's page count, the footer)."""
    alias = pdf.str_alias_nb_pages
    if not alias or alias not in text or not pdf.text_shaping:
        yield
        return
    pdf.set_text_shaping(False)
    try:
        yield
    finally:
        pdf.set_text_shaping(True)


def _text(pdf: FPDF, text: Text, *, font: str) -> None:
    """Full-width text, wrapped, on its fill colour if it has one."""
    pdf.set_font(font, size=text.size)
    pdf.set_text_color(text.color)
    if text.fill is not None:
        pdf.set_fill_color(text.fill)
    pdf.multi_cell(
        0, text.height, text.text, align=text.align, fill=text.fill is not None, new_x=XPos.LMARGIN, new_y=YPos.NEXT
    )


def _row(pdf: FPDF, row: Row, *, font: str) -> None:
    """The label in its column, then the text wrapped in the rest of the line."""
    pdf.set_font(font, size=row.label_size)
    pdf.set_text_color(row.label_color)
    pdf.cell(row.label_width, row.height, row.label)
    pdf.set_font(font, size=row.size)
    pdf.set_text_color(row.color)
    pdf.multi_cell(0, row.height, row.text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
