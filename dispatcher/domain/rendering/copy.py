"""The supporter copy: the letter as sent, emailed to one supporter with the list of its recipients.

Its subject, text and HTML come from templates/copy/ (subject.txt.j2, supporter.txt.j2, supporter.html.j2).
Supporter names and addresses are personal data: this module renders, it never logs.
"""

from __future__ import annotations

from typing import Any

import jinja2

from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.rendering.email import EmailDocument, build_email
from dispatcher.domain.rendering.letter import RenderedLetter, addressee_lines, paragraphs_of
from dispatcher.domain.rendering.templates import COPY_HTML, COPY_SUBJECT, COPY_TEXT, render


def render_supporter_copy(
    spec: CampaignSpec,
    letter: RenderedLetter,
    *,
    supporter_email: str,
    supporter_name: str | None,
    reference: str,
    templates: jinja2.Environment | None = None,
) -> EmailDocument:
    """One supporter's copy, greeting them by name when known; same sender and Message-ID scheme."""
    context = _context(spec, letter, supporter_name)
    return build_email(
        spec,
        to_email=supporter_email,
        reference=reference,
        subject=render(COPY_SUBJECT, context, templates=templates).strip(),
        text=render(COPY_TEXT, context, templates=templates),
        html=render(COPY_HTML, context, templates=templates),
    )


def _context(spec: CampaignSpec, letter: RenderedLetter, supporter_name: str | None) -> dict[str, Any]:
    """What the copy's templates see: the supporter's name (None if blank), sender, recipients, the letter."""
    to, cc = addressee_lines(spec.to), addressee_lines(spec.cc)
    return {
        "supporter_name": (supporter_name or "").strip() or None,
        "organisation": spec.sender.organisation,
        "to_names": [a.name for a in spec.to],
        "recipients": [("To", line) for line in to] + [("CC", line) for line in cc],
        "subject": letter.subject,
        "letter_text": letter.text.rstrip("\n"),
        "letter_paragraphs": [p.split("\n") for p in paragraphs_of(letter.text)],
    }
