"""The preview writes the very fax a worker sends: same bytes for the same addressee and number."""

from __future__ import annotations

import io
from pathlib import Path

from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.campaign_file import load_spec
from dispatcher.domain.db import transaction
from dispatcher.domain.models import Campaign, Delivery
from dispatcher.domain.planning import load_campaign
from dispatcher.domain.rendering import write_preview
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.validation import validate

from ..builders import build_campaign, xi_jinping
from .conftest import LETTER_DATE


def _cover_text(pdf: bytes) -> str:
    """The cover page's text with its spaces (pypdf puts a NUL between the glyphs of Noto Sans SC)."""
    return PdfReader(io.BytesIO(pdf)).pages[0].extract_text().replace("\x00", "")


def _load(factory: sessionmaker[Session], path: Path) -> None:
    spec = load_spec(path)
    report = validate(spec, file=path)
    with transaction(factory) as session:
        load_campaign(session, spec, report, source=path)
        campaign = session.scalars(select(Campaign)).one()
        campaign.letter_date = LETTER_DATE  # as scheduling fixes it


def test_preview_fax_is_byte_identical_to_the_sent_fax(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """Xi Jinping's first fax number typed as a national number: the worker's delivery holds it in E.164."""
    path = build_campaign(tmp_path / "campaign", to=[xi_jinping(fax=["010 6307 0900"])], cc=[])
    _load(factory, path)
    with factory() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.channel == "fax")).one()
        assert delivery.destination == "+861063070900"
        sent = DocumentCache().render(delivery)
    [preview] = write_preview(
        load_spec(path), path.parent, pdf_path=tmp_path / "p.pdf", eml_path=None, date=LETTER_DATE
    ).letters
    assert preview.fax is not None
    assert preview.fax.sha256 == sent.sha256
    assert (tmp_path / "p.pdf").read_bytes() == sent.message.pdf  # type: ignore[union-attr]


def test_cover_prints_fax_numbers_in_international_format(tmp_path: Path) -> None:
    path = build_campaign(tmp_path / "campaign", to=[xi_jinping(fax=["010 6307 0900"])], cc=[])
    [preview] = write_preview(
        load_spec(path), path.parent, pdf_path=tmp_path / "p.pdf", eml_path=None, date=LETTER_DATE
    ).letters
    assert preview.fax is not None
    cover = _cover_text(preview.fax.pdf)
    assert "Fax +86 10 6307 0900" in cover
    assert "Fax (caller id)+1 212 555 0143" in cover  # pypdf puts no space after a label that fills its column


def test_the_page_count_takes_its_own_width_on_the_cover(tmp_path: Path) -> None:
    """fpdf2 lays out shaped text holding the page-count alias with the alias's width kept free: a gap
    opened between the count and the words after it."""
    path = build_campaign(tmp_path / "campaign")
    [preview] = write_preview(
        load_spec(path), path.parent, pdf_path=tmp_path / "p.pdf", eml_path=None, date=LETTER_DATE
    ).letters
    assert preview.fax is not None
    assert "\nPages 2 (including this cover page)\n" in _cover_text(preview.fax.pdf)
