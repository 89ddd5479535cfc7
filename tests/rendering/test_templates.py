"""The documents' own templates (templates/ at the repository root): what they render, and their escaping."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jinja2
import pytest

from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.rendering import RenderedLetter, build_letter, render_fax, render_supporter_copy
from dispatcher.domain.rendering.copy import unsubscribe_headers
from dispatcher.domain.rendering.email import EmailDocument
from dispatcher.domain.rendering.templates import default_environment, environment
from dispatcher.domain.templating import compile_letter

from .conftest import LETTER_DATE, make_spec, pdf_text, spec_data

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
MARKUP_NAME = "<script>x</script>"

UNSUBSCRIBE = "https://dispatch.example.org/unsubscribe/t0ken"


def _edited(tmp_path: Path, name: str, old: str, new: str) -> jinja2.Environment:
    """An environment reading a copy of templates/ in which one template has ``old`` replaced by ``new``."""
    folder = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, folder)
    path = folder / name
    source = path.read_text(encoding="utf-8")
    assert old in source, f"{old!r} is not in {name}"
    path.write_text(source.replace(old, new), encoding="utf-8")
    return environment(loader=jinja2.FileSystemLoader(folder))


def _letter(spec: CampaignSpec, **options: Any) -> RenderedLetter:
    return build_letter(spec, compile_letter(spec.letter.body or "", name="t"), date=LETTER_DATE, **options)


def _copy(spec: CampaignSpec, *, email: str = "s@e.net", name: str | None = None, **options: Any) -> EmailDocument:
    """The supporter copy of ``spec``'s letter to ``email``, with the test unsubscribe link and no outcomes."""
    return render_supporter_copy(
        spec,
        _letter(spec),
        supporter_email=email,
        supporter_name=name,
        reference="c",
        unsubscribe_url=UNSUBSCRIBE,
        outcomes=[],
        **options,
    )


def _markup_spec() -> CampaignSpec:
    """The To addressee named like markup, a CC organisation with an ampersand, a letter that uses both."""
    data = spec_data(body="{{ to.name }} & friends < 3, with {{ cc[0].organisation }}")
    data["to"][0]["name"] = MARKUP_NAME
    data["cc"][0]["organisation"] = "Xi & Co"
    return CampaignSpec.model_validate(data)


def test_html_templates_escape_and_text_templates_do_not() -> None:
    env = environment(loader=jinja2.DictLoader({"a.html.j2": "{{ v }}", "a.txt.j2": "{{ v }}"}))
    assert env.get_template("a.html.j2").render(v="<b>&") == "&lt;b&gt;&amp;"
    assert env.get_template("a.txt.j2").render(v="<b>&") == "<b>&"


def test_a_missing_value_is_an_error_not_a_blank() -> None:
    env = environment(loader=jinja2.DictLoader({"a.txt.j2": "Dear {{ nobody }},"}))
    with pytest.raises(jinja2.UndefinedError):
        env.get_template("a.txt.j2").render()


def test_fax_cover_is_drawn_from_its_template(tmp_path: Path) -> None:
    spec = make_spec()
    letter = _letter(spec)
    templates = _edited(tmp_path, "fax/cover.jsonl.j2", '"Signatory"', '"Signed by"')
    text = pdf_text(render_fax(spec, letter, to=spec.to[0], fax_number="+86 10 6307 0900", templates=templates).pdf)
    assert "SignedbyAdaExample,Director" in text
    assert "Signatory" not in text


def test_fax_cover_refuses_an_unknown_drawing_option(tmp_path: Path) -> None:
    spec = make_spec()
    templates = _edited(tmp_path, "fax/cover.jsonl.j2", '"size"', '"szie"')
    with pytest.raises(ValueError, match="szie"):
        render_fax(spec, _letter(spec), to=spec.to[0], fax_number="+1", templates=templates)


def test_fax_cover_shows_names_as_written() -> None:
    spec = _markup_spec()
    to = spec.to[0].model_copy(update={"organisation": "Xi & Co"})
    text = pdf_text(render_fax(spec, _letter(spec), to=to, fax_number="+1").pdf)
    assert "To<script>x</script>" in text
    assert "OrganisationXi&Co" in text
    assert "&lt;" not in text
    assert "&amp;" not in text


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        ("email/document.html.j2", "<html>", '<html lang="en">', '<html lang="en"><head>'),
        ("email/letter.html.j2", 'css_class="cc"', 'css_class="copies"', '<p class="copies">CC:<br>'),
    ],
)
def test_letter_html_comes_from_its_templates(tmp_path: Path, name: str, old: str, new: str, expected: str) -> None:
    letter = _letter(make_spec(), templates=_edited(tmp_path, name, old, new))
    assert expected in letter.html
    assert "Wang Yi, Foreign Minister" in letter.html


def test_letter_html_escapes_names_and_letter_text() -> None:
    letter = _letter(_markup_spec())
    assert "<script>" not in letter.html
    assert "&lt;script&gt;x&lt;/script&gt; &amp; friends &lt; 3, with Xi &amp; Co</p>" in letter.html
    assert "Wang Yi, Foreign Minister, Xi &amp; Co</p>" in letter.html
    assert "<script>x</script> & friends < 3, with Xi & Co\n\nCC:" in letter.text
    assert "Wang Yi, Foreign Minister, Xi & Co" in letter.text


@pytest.mark.parametrize(
    ("name", "old", "new", "part", "expected"),
    [
        ("copy/supporter.txt.j2", "{{ intro }}", "Sent: {{ intro }}", "text", "Sent: Here is the letter Example"),
        ("copy/supporter.html.j2", "<p>{{ intro }}</p>", "<h1>{{ intro }}</h1>", "html", "<h1>Here is the letter"),
        ("copy/supporter.html.j2", "<hr>", '<hr class="letter">', "html", '<hr class="letter">'),
        ("copy/phrases.toml", "Copy: {subject}", "Sent: {subject}", "subject", "Sent: Nine refugees"),
        ("copy/phrases.toml", "on your behalf", "for you", "text", "Example Rights sent for you to"),
    ],
)
def test_supporter_copy_comes_from_its_templates(
    tmp_path: Path, name: str, old: str, new: str, part: str, expected: str
) -> None:
    spec = make_spec()
    templates = _edited(tmp_path, name, old, new)
    copy = _copy(spec, email="s@example.net", name="Grace", templates=templates)
    message = copy.message
    parts = {"text": message.text, "html": message.html or "", "subject": message.subject}
    assert expected in parts[part]
    assert old not in parts[part]


def test_supporter_copy_escapes_html_only() -> None:
    spec = _markup_spec()
    spec = spec.model_copy(update={"sender": spec.sender.model_copy(update={"organisation": "Rights & <Co>"})})
    copy = _copy(spec, email="s@example.net", name="Eve & <b>Bob</b>")
    html, text = copy.message.html or "", copy.message.text
    assert "<script>" not in html
    assert "<b>" not in html
    assert "<p>Dear Eve &amp; &lt;b&gt;Bob&lt;/b&gt;,</p>" in html
    assert "Rights &amp; &lt;Co&gt; sent on your behalf to &lt;script&gt;x&lt;/script&gt;, and" in html
    assert "To: &lt;script&gt;x&lt;/script&gt;, President, General Office<br>" in html
    assert "CC: Wang Yi, Foreign Minister, Xi &amp; Co</p>" in html
    assert text.startswith("Dear Eve & <b>Bob</b>,\n\n")
    assert "Rights & <Co> sent on your behalf to <script>x</script>, and" in text
    assert "To: <script>x</script>, President, General Office\nCC: Wang Yi, Foreign Minister, Xi & Co\n" in text


def test_supporter_copy_names_every_to_addressee() -> None:
    data = spec_data()
    data["to"] = [data["to"][0] | {"name": name} for name in ("A", "B", "C")]
    spec = CampaignSpec.model_validate(data)
    copy = _copy(spec)
    assert "sent on your behalf to A, B and C, and what became of it." in copy.message.text
    assert "sent on your behalf to A, B and C, and what became of it." in (copy.message.html or "")


def test_default_environment_reads_this_checkouts_templates() -> None:
    template = default_environment().get_template("email/letter.html.j2")
    assert template.filename is not None
    assert Path(template.filename).resolve() == TEMPLATES_DIR / "email" / "letter.html.j2"


def test_a_copy_carries_one_click_unsubscribe_and_list_id_headers() -> None:
    spec = make_spec()
    copy = _copy(spec)
    assert dict(copy.message.headers) == {
        "List-Unsubscribe": "<https://dispatch.example.org/unsubscribe/t0ken>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": f'"{spec.campaign.title}" <{spec.campaign.name}.example.org>',
    }
    assert "unsubscribe: https://dispatch.example.org/unsubscribe/t0ken" in copy.message.text
    assert '<a href="https://dispatch.example.org/unsubscribe/t0ken">Unsubscribe</a>' in (copy.message.html or "")


def test_a_title_that_is_not_plain_ascii_leaves_the_list_id_without_a_phrase() -> None:
    spec = make_spec()
    spec = spec.model_copy(update={"campaign": spec.campaign.model_copy(update={"title": 'Réfugiés "nord"'})})
    headers = unsubscribe_headers(spec, UNSUBSCRIBE)
    assert headers["List-Id"] == f"<{spec.campaign.name}.example.org>"


def test_a_translation_is_text_never_a_format_string() -> None:
    data = spec_data()
    data["supporters"] = {
        "lists": ["petition"],
        "translations": {"fr": {"greeting_named": "Bonjour {name} {name.__class__} {0} {{name}},"}},
    }
    spec = CampaignSpec.model_validate(data)
    copy = _copy(spec, name="Grace", locale="fr-BE")
    assert copy.message.text.startswith("Bonjour Grace {name.__class__} {0} {Grace},\n")
