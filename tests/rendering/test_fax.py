"""The fax PDF: real fonts for Chinese names, page count known, the same bytes for the same input."""

from __future__ import annotations

from pathlib import Path

from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.rendering import FaxDocument, load_letter, render_fax

from .conftest import EXAMPLE_DIR, LETTER_DATE, make_spec, pdf_page_text, pdf_pages, pdf_text


def _fax(spec: CampaignSpec, base: Path) -> FaxDocument:
    letter = load_letter(spec, base, date=LETTER_DATE)
    return render_fax(spec, letter, to=spec.to[0], fax_number=spec.to[0].fax[0])


def test_example_campaign_fax_has_cover_and_letter(example_spec: CampaignSpec) -> None:
    fax = _fax(example_spec, EXAMPLE_DIR)
    text = pdf_text(fax.pdf)
    assert fax.pdf.startswith(b"%PDF-")
    assert fax.page_count == pdf_pages(fax.pdf) == 2
    for expected in (
        "URGENT",
        "XiJinping",
        "+861063070900",
        "HumanRightsWatch",
        "SophieRichardson",
        "+12125550143",
        "china-advocacy@example.org",
        "27November2026",
        "2(includingthiscoverpage)",
        "DetentionofnineNorthKoreanrefugees",
        "page1of2",
        "page2of2",
        "CC:GuoShengkun",
    ):
        assert expected in text, expected


def test_cover_page_reads_top_to_bottom(example_spec: CampaignSpec) -> None:
    cover = pdf_page_text(_fax(example_spec, EXAMPLE_DIR).pdf, 0)
    assert cover.startswith("HumanRightsWatch350FifthAvenue,34thFloorNewYork,NY10118-3299USAURGENTFAX")
    rows = [
        "ToXiJinping",
        "TitlePresident",
        "OrganisationGeneralSecretaryOffice,CentralCommitteeoftheCommunistPartyofChina",
        "Fax+861063070900",
        "FromHumanRightsWatch",
        "SignatorySophieRichardson,ChinaDirector,AsiaDivision",
        "Fax(callerid)+12125550143",
        "Replytochina-advocacy@example.org",
        "Date27November2026",
        "Pages2(includingthiscoverpage)",
        "SubjectDetentionofnineNorthKoreanrefugees",
        "page1of2",
    ]
    assert cover.endswith("".join(rows))


def test_chinese_names_render(cjk_spec: CampaignSpec, tmp_path: Path) -> None:
    text = pdf_text(_fax(cjk_spec, tmp_path).pdf)
    assert "习近平" in text
    assert "王毅" in text


def test_long_letter_gives_more_pages(tmp_path: Path) -> None:
    short = _fax(make_spec(), tmp_path)
    body = "{% for i in range(120) %}Paragraph {{ i }} about 习近平 and 王毅.\n\n{% endfor %}"
    long = _fax(make_spec(body=body), tmp_path)
    assert long.page_count > short.page_count
    assert long.page_count == pdf_pages(long.pdf)
    assert f"page{long.page_count}of{long.page_count}" in pdf_text(long.pdf)


def test_same_input_same_bytes(cjk_spec: CampaignSpec, tmp_path: Path) -> None:
    first, second = _fax(cjk_spec, tmp_path), _fax(cjk_spec, tmp_path)
    assert first.sha256 == second.sha256
    assert first.pdf == second.pdf


def test_normal_urgency_has_no_urgent_marker(tmp_path: Path) -> None:
    spec = make_spec()
    spec = spec.model_copy(update={"campaign": spec.campaign.model_copy(update={"urgency": "normal"})})
    assert "URGENT" not in pdf_text(_fax(spec, tmp_path).pdf)
