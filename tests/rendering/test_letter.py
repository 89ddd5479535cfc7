"""The letter's text and HTML parts: paragraphs, escaping and the visible CC block."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.rendering import build_letter, load_letter
from dispatcher.domain.templating import compile_letter

from .conftest import EXAMPLE_DIR, LETTER_DATE, make_spec


def test_example_campaign_renders_with_cc_block(example_spec: CampaignSpec) -> None:
    letter = load_letter(example_spec, EXAMPLE_DIR, date=LETTER_DATE)
    assert letter.text.startswith("Dear President Xi Jinping,\n\n")
    assert "Sophie Richardson" in letter.text
    assert letter.text.rstrip().endswith(
        "CC:\nGuo Shengkun, Minister of Public Security, Ministry of Public Security\n"
        "Wang Yi, Foreign Minister, Ministry of Foreign Affairs"
    )
    assert '<p class="cc">CC:<br>\nGuo Shengkun, Minister of Public Security' in letter.html
    assert "Wang Yi, Foreign Minister, Ministry of Foreign Affairs</p>" in letter.html


def test_html_is_paragraphs(cjk_spec: CampaignSpec) -> None:
    letter = build_letter(cjk_spec, compile_letter("One\nline two\n\n\nThree", name="t"), date=LETTER_DATE)
    assert "<p>One<br>\nline two</p>\n<p>Three</p>" in letter.html
    assert letter.text.startswith("One\nline two\n\nThree\n\nCC:\nWang Yi")


def test_html_escapes_template_values() -> None:
    data_spec = make_spec(body="{{ sender.organisation }} & friends")
    spec = data_spec.model_copy(
        update={"sender": data_spec.sender.model_copy(update={"organisation": "<script>alert(1)</script>"})}
    )
    letter = build_letter(spec, compile_letter(spec.letter.body or "", name="t"), date=LETTER_DATE)
    assert "<script>" not in letter.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; friends" in letter.html
    assert "<script>alert(1)</script> & friends" in letter.text


def test_no_cc_no_block(tmp_path: Path) -> None:
    spec = make_spec().model_copy(update={"cc": []})
    letter = load_letter(spec, tmp_path, date=date(2026, 1, 2))
    assert "CC:" not in letter.text
    assert "CC:" not in letter.html
