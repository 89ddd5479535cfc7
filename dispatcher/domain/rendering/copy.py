"""The supporter copy: the letter as sent, emailed to one supporter with the list of its recipients.

Supporter names and addresses are personal data: this module renders, it never logs.
"""

from __future__ import annotations

from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.rendering.email import EmailDocument, build_email
from dispatcher.domain.rendering.letter import (
    RenderedLetter,
    addressee_lines,
    html_document,
    html_paragraph,
    paragraphs_of,
)


def render_supporter_copy(
    spec: CampaignSpec, letter: RenderedLetter, *, supporter_email: str, supporter_name: str | None, reference: str
) -> EmailDocument:
    """One supporter's copy, greeting them by name when known; same sender and Message-ID scheme."""
    intro = _intro(spec, supporter_name)
    recipients = _recipients(spec)
    letter_paragraphs = paragraphs_of(letter.text)
    text = "\n\n".join([*intro, "\n".join(recipients), "---", *letter_paragraphs]) + "\n"
    html = _html(intro, recipients, letter_paragraphs)
    return build_email(
        spec,
        to_email=supporter_email,
        reference=reference,
        subject=f"Copy: {letter.subject}",
        text=text,
        html=html,
    )


def _intro(spec: CampaignSpec, supporter_name: str | None) -> list[str]:
    """Greeting and the one-sentence explanation of what this email is."""
    greeting = f"Dear {supporter_name.strip()}," if supporter_name and supporter_name.strip() else "Hello,"
    names = _join_names([a.name for a in spec.to])
    return [
        greeting,
        f"Here is the letter {spec.sender.organisation} sent on your behalf to {names}.",
        "It was sent to:",
    ]


def _recipients(spec: CampaignSpec) -> list[str]:
    """Every addressee, "To" first then "CC", with title and organisation."""
    to = [f"To: {line}" for line in addressee_lines(spec.to)]
    return to + [f"CC: {line}" for line in addressee_lines(spec.cc)]


def _join_names(names: list[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _html(intro: list[str], recipients: list[str], letter_paragraphs: list[str]) -> str:
    """The HTML part: the intro, the recipient list, a rule, then the letter, all escaped."""
    parts = [html_paragraph([line]) for line in intro]
    parts.append(html_paragraph(recipients))
    parts.append("<hr>")
    parts.extend(html_paragraph(p.split("\n")) for p in letter_paragraphs)
    return html_document(parts)
