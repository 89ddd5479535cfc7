"""The letter, rendered once per variant (see templating.Variant: the letter to each "To" addressee, as
the copy for each addressee): plain text plus an HTML twin, both ending in the CC block.

The campaign's template renders text (autoescape off); the HTML part puts that text's paragraphs into
templates/email/letter.html.j2, which escapes every line, so no template value can inject markup.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date as Date
from pathlib import Path

import jinja2

from dispatcher.domain.campaign_file import AddresseeSpec, CampaignSpec, letter_source
from dispatcher.domain.rendering.templates import EMAIL_LETTER, render
from dispatcher.domain.templating import FIRST, Variant, compile_letter, render_letter, variant_context

_BLANK_LINES = re.compile(r"\n[ \t]*\n+")


@dataclass(frozen=True, kw_only=True)
class RenderedLetter:
    """One variant of a campaign's letter: written to one "To" addressee, as the copy for one addressee."""

    subject: str
    text: str  # the letter, then the CC block
    html: str  # a small HTML document: the same paragraphs, escaped
    date: Date


def load_letter(spec: CampaignSpec, base_dir: Path, *, date: Date, variant: Variant = FIRST) -> RenderedLetter:
    """Read the template named by the campaign (or its inline body), compile and render one variant."""
    return build_letter(spec, load_template(spec, base_dir), date=date, variant=variant)


def load_template(spec: CampaignSpec, base_dir: Path) -> jinja2.Template:
    """The campaign's letter template (its file, or its inline body), compiled."""
    name, source = letter_source(spec, base_dir)
    return compile_letter(source, name=name)


def build_letter(
    spec: CampaignSpec,
    template: jinja2.Template,
    *,
    date: Date,
    variant: Variant = FIRST,
    templates: jinja2.Environment | None = None,
) -> RenderedLetter:
    """Render one variant of a compiled template (by default the letter to the first "To" addressee);
    raise TemplateProblemError if it fails."""
    body = render_letter(template, variant_context(spec, variant, date=date)).strip()
    paragraphs = paragraphs_of(body)
    cc = addressee_lines(spec.cc)
    text = "\n\n".join([*paragraphs, "\n".join(["CC:", *cc])] if cc else paragraphs) + "\n"
    html = letter_html(paragraphs, cc, templates=templates)
    return RenderedLetter(subject=spec.letter.subject, text=text, html=html, date=date)


def paragraphs_of(text: str) -> list[str]:
    """Split text at blank lines, dropping trailing spaces so both parts agree."""
    lines = "\n".join(line.rstrip() for line in text.splitlines())
    return [p.strip("\n") for p in _BLANK_LINES.split(lines) if p.strip()]


def addressee_lines(addressees: Sequence[AddresseeSpec]) -> list[str]:
    """One line per addressee: name, title, organisation (blank parts left out)."""
    return [", ".join(part for part in (a.name, a.title, a.organisation) if part) for a in addressees]


def letter_html(paragraphs: list[str], cc: list[str], *, templates: jinja2.Environment | None = None) -> str:
    """The letter's HTML part from templates/email/letter.html.j2: each paragraph's lines, then the CC block."""
    context = {"paragraphs": [p.split("\n") for p in paragraphs], "cc": cc}
    return render(EMAIL_LETTER, context, templates=templates)


def sha256_text(*parts: str) -> str:
    """SHA-256 of text parts joined by NUL, so ("ab", "c") and ("a", "bc") differ."""
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()
