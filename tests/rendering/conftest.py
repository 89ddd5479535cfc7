"""Fixtures for rendering tests: the example campaign and a small campaign with Chinese names."""

from __future__ import annotations

import io
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from dispatcher.domain.campaign_file import CampaignSpec, load_spec

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "config" / "campaigns" / "north-korean-refugees"
LETTER_DATE = date(2026, 11, 27)

CJK_BODY = """{{ to.salutation }}

We write to you, {{ to.name }} (习近平), and to Foreign Minister 王毅, about the nine refugees.

Sincerely,
{{ sender.signatory }}
"""


def spec_data(**letter: Any) -> dict[str, Any]:
    """A minimal valid campaign: one To with a fax and an email, one CC; the letter given inline."""
    return {
        "campaign": {"name": "test-campaign", "title": "Test", "urgency": "urgent"},
        "sender": {
            "organisation": "Example Rights",
            "signatory": "Ada Example",
            "signatory_title": "Director",
            "email": "letters@example.org",
            "reply_to": "replies@example.org",
            "fax_caller_id": "+12125550143",
        },
        "letter": {"subject": "Nine refugees", "body": CJK_BODY, **letter},
        "to": [
            {
                "name": "Xi Jinping",
                "title": "President",
                "organisation": "General Office",
                "salutation": "Dear President Xi Jinping,",
                "country": "CN",
                "timezone": "Asia/Shanghai",
                "fax": ["+86 10 6307 0900"],
                "email": ["office@example.cn"],
            }
        ],
        "cc": [
            {
                "name": "Wang Yi",
                "title": "Foreign Minister",
                "organisation": "Ministry of Foreign Affairs",
                "country": "CN",
                "timezone": "Asia/Shanghai",
                "email": ["wang@example.cn"],
            }
        ],
    }


def make_spec(**letter: Any) -> CampaignSpec:
    return CampaignSpec.model_validate(spec_data(**letter))


def pdf_text(pdf: bytes) -> str:
    """All text of a PDF with whitespace removed.

    pypdf does not read fpdf2's embedded CID encoding for this CFF font as two-byte codes, so it puts
    a NUL (or a space) between glyphs; removing both leaves the text as written.
    """
    reader = PdfReader(io.BytesIO(pdf))
    return re.sub(r"[\s\x00]+", "", "".join(page.extract_text() for page in reader.pages))


def pdf_page_text(pdf: bytes, index: int) -> str:
    """The text of one page, whitespace removed as in pdf_text."""
    return re.sub(r"[\s\x00]+", "", PdfReader(io.BytesIO(pdf)).pages[index].extract_text())


def pdf_pages(pdf: bytes) -> int:
    return len(PdfReader(io.BytesIO(pdf)).pages)


@pytest.fixture(scope="session")
def example_spec() -> CampaignSpec:
    return load_spec(EXAMPLE_DIR / "campaign.toml")


@pytest.fixture
def cjk_spec() -> CampaignSpec:
    return make_spec()
