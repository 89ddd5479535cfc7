"""The email to one addressee, the supporter copy, and the preview files."""

from __future__ import annotations

import email
import email.message
import email.policy
from dataclasses import replace
from pathlib import Path

import pytest

from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.messages import EmailMessage
from dispatcher.domain.rendering import load_letter, render_email, render_supporter_copy, write_preview
from dispatcher.domain.rendering.mime import to_bytes, to_mime

from .conftest import EXAMPLE_DIR, LETTER_DATE, pdf_pages


def _parts(message: email.message.Message) -> dict[str, str]:
    parts = {}
    for part in message.walk():
        if not part.is_multipart():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            text = payload.decode(part.get_content_charset() or "utf-8")
            parts[part.get_content_type()] = text.replace("\r\n", "\n")  # the SMTP policy writes CRLF
    return parts


def test_email_to_one_addressee(cjk_spec: CampaignSpec, tmp_path: Path) -> None:
    letter = load_letter(cjk_spec, tmp_path, date=LETTER_DATE)
    document = render_email(cjk_spec, letter, to_email="office@example.cn", reference="d-42.fax")
    message = document.message
    assert message.sender == "Example Rights <letters@example.org>"
    assert list(message.to) == ["office@example.cn"]
    assert message.reply_to == "replies@example.org"
    assert message.subject == "Nine refugees"
    assert message.message_id == "<d-42.fax@example.org>"
    assert "习近平" in message.text
    assert message.html is not None
    assert "习近平" in message.html


def test_email_hash_is_stable_and_follows_content(cjk_spec: CampaignSpec, tmp_path: Path) -> None:
    letter = load_letter(cjk_spec, tmp_path, date=LETTER_DATE)
    first = render_email(cjk_spec, letter, to_email="a@example.cn", reference="k1")
    again = render_email(cjk_spec, letter, to_email="a@example.cn", reference="k1")
    later = render_email(
        cjk_spec,
        load_letter(cjk_spec, tmp_path, date=LETTER_DATE.replace(day=28)),
        to_email="a@example.cn",
        reference="k1",
    )
    assert first.sha256 == again.sha256
    assert len(first.sha256) == 64
    spec = cjk_spec.model_copy(update={"letter": cjk_spec.letter.model_copy(update={"body": "{{ date }}"})})
    assert (
        render_email(
            spec, load_letter(spec, tmp_path, date=LETTER_DATE), to_email="a@example.cn", reference="k1"
        ).sha256
        != later.sha256
    )


def test_reference_that_would_break_the_header_is_refused(cjk_spec: CampaignSpec, tmp_path: Path) -> None:
    letter = load_letter(cjk_spec, tmp_path, date=LETTER_DATE)
    with pytest.raises(ValueError, match="Message-ID"):
        render_email(cjk_spec, letter, to_email="a@example.cn", reference="bad key\r\nBcc: x@y")


def test_eml_parses_back(cjk_spec: CampaignSpec, tmp_path: Path) -> None:
    letter = load_letter(cjk_spec, tmp_path, date=LETTER_DATE)
    document = render_email(cjk_spec, letter, to_email="office@example.cn", reference="d-1")
    parsed = email.message_from_bytes(to_mime(document.message).as_bytes())
    assert parsed["Message-ID"] == "<d-1@example.org>"
    parts = _parts(parsed)
    assert set(parts) == {"text/plain", "text/html"}
    assert "CC:\nWang Yi, Foreign Minister, Ministry of Foreign Affairs" in parts["text/plain"]
    assert "王毅" in parts["text/plain"]
    assert '<p class="cc">CC:<br>' in parts["text/html"]


def _same_message(message: EmailMessage) -> None:
    """What the SMTP gateway sends (to_bytes) reads back as to_mime's message: headers and bodies."""
    slow = email.message_from_bytes(to_mime(message).as_bytes(), policy=email.policy.default)
    fast = email.message_from_bytes(to_bytes(message), policy=email.policy.default)
    for header in ("From", "To", "Cc", "Reply-To", "Subject", "Message-ID", "MIME-Version", *message.headers):
        assert fast[header] == slow[header], header
    assert _parts(fast) == _parts(slow)
    assert b"\r\n" in to_bytes(message) and b"\r\n" not in to_bytes(message).replace(b"\r\n", b"")


def test_the_bytes_sent_read_back_as_the_message_built(cjk_spec: CampaignSpec, tmp_path: Path) -> None:
    letter = load_letter(cjk_spec, tmp_path, date=LETTER_DATE)
    _same_message(render_email(cjk_spec, letter, to_email="office@example.cn", reference="d-1").message)
    message = render_email(cjk_spec, letter, to_email="office@example.cn", reference="d-2").message
    _same_message(
        replace(message, sender="人权观察 <advocacy@example.org>", headers={"List-Id": "名单 <l.example.org>"})
    )
    _same_message(replace(message, text="x" * 1200 + "\nshort\n"))  # a line too long for 7bit
    _same_message(replace(message, to=["用户@example.cn"]))  # not ASCII: the standard builder's way


def test_the_bytes_sent_refuse_a_header_with_a_line_break(cjk_spec: CampaignSpec, tmp_path: Path) -> None:
    letter = load_letter(cjk_spec, tmp_path, date=LETTER_DATE)
    message = render_email(cjk_spec, letter, to_email="office@example.cn", reference="d-1").message
    with pytest.raises(ValueError, match="linefeed"):
        to_bytes(replace(message, subject="Hello\r\nBcc: someone@example.org"))
    with pytest.raises(ValueError, match="linefeed"):
        to_bytes(replace(message, headers={"List-Id": "a\nBcc: someone@example.org"}))


@pytest.mark.parametrize(
    ("name", "greeting"), [("Grace Hopper", "Dear Grace Hopper,"), (None, "Hello,"), ("  ", "Hello,")]
)
def test_supporter_copy(example_spec: CampaignSpec, name: str | None, greeting: str) -> None:
    letter = load_letter(example_spec, EXAMPLE_DIR, date=LETTER_DATE)
    copy = render_supporter_copy(
        example_spec,
        letter,
        supporter_email="grace.supporter@example.net",
        supporter_name=name,
        reference="copy-7",
        unsubscribe_url="https://dispatch.example.org/unsubscribe/t0ken",
        outcomes=[],
    )
    message = copy.message
    assert list(message.to) == ["grace.supporter@example.net"]
    assert message.text.startswith(greeting + "\n\n")
    assert "Here is the letter Human Rights Watch sent on your behalf to Xi Jinping, and what became of it." in (
        message.text
    )
    assert "To: Xi Jinping, President, General Secretary Office" in message.text
    assert "CC: Wang Yi, Foreign Minister, Ministry of Foreign Affairs" in message.text
    assert letter.text.strip() in message.text
    assert message.message_id == "<copy-7@example.org>"
    assert message.html is not None
    assert "Here is the letter Human Rights Watch sent on your behalf" in message.html


def test_supporter_copy_escapes_the_name(example_spec: CampaignSpec) -> None:
    letter = load_letter(example_spec, EXAMPLE_DIR, date=LETTER_DATE)
    copy = render_supporter_copy(
        example_spec,
        letter,
        supporter_email="x@example.net",
        supporter_name="<b>Eve</b>",
        reference="c",
        unsubscribe_url="https://dispatch.example.org/unsubscribe/t0ken",
        outcomes=[],
    )
    assert copy.message.html is not None
    assert "&lt;b&gt;Eve&lt;/b&gt;" in copy.message.html
    assert "<b>" not in copy.message.html


def test_preview_writes_pdf_and_eml(example_spec: CampaignSpec, tmp_path: Path) -> None:
    pdf_path, eml_path = tmp_path / "letter.pdf", tmp_path / "letter.eml"
    [preview] = write_preview(example_spec, EXAMPLE_DIR, pdf_path=pdf_path, eml_path=eml_path, date=LETTER_DATE).letters
    assert preview.fax is not None
    assert preview.pdf_path == pdf_path
    assert pdf_pages(pdf_path.read_bytes()) == preview.fax.page_count
    parsed = email.message_from_bytes(eml_path.read_bytes())
    assert parsed["To"] == "gabzfwz@mps.gov.cn"  # the first addressee with an email is a CC
    assert parsed["Message-ID"] == "<preview-north-korean-refugees-2015@example.org>"
    assert set(_parts(parsed)) == {"text/plain", "text/html"}
    lines = list(preview)
    assert lines[0].startswith(f"{pdf_path} (fax, {preview.fax.page_count} pages, sha256 ")
    assert lines[1].startswith(f"{eml_path} (email to gabzfwz@mps.gov.cn, sha256 ")


def test_preview_without_any_email_uses_a_placeholder(example_spec: CampaignSpec, tmp_path: Path) -> None:
    spec = example_spec.model_copy(update={"cc": []})
    [preview] = write_preview(spec, EXAMPLE_DIR, pdf_path=None, eml_path=tmp_path / "x.eml", date=LETTER_DATE).letters
    assert preview.fax is None
    assert preview.email is not None
    assert list(preview.email.message.to) == ["no-email@example.invalid"]
