"""The email to one addressee: the campaign's letter as text and HTML, with a stable Message-ID."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from dataclasses import dataclass

from dispatcher.domain.campaign_file import CampaignSpec
from dispatcher.domain.messages import EmailMessage
from dispatcher.domain.rendering.letter import RenderedLetter, sha256_text

# What may stand left of the "@" in a Message-ID (RFC 5322 dot-atom text), so a key cannot break headers.
_REFERENCE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")


@dataclass(frozen=True, kw_only=True)
class EmailDocument:
    """The message to send and the SHA-256 of its content (subject, text, HTML), kept as evidence."""

    message: EmailMessage
    sha256: str


def render_email(spec: CampaignSpec, letter: RenderedLetter, *, to_email: str, reference: str) -> EmailDocument:
    """The letter as an email to one address, from the organisation, replies to its reply-to address."""
    return build_email(
        spec, to_email=to_email, reference=reference, subject=letter.subject, text=letter.text, html=letter.html
    )


def build_email(
    spec: CampaignSpec,
    *,
    to_email: str,
    reference: str,
    subject: str,
    text: str,
    html: str,
    headers: Mapping[str, str] | None = None,
) -> EmailDocument:
    """An EmailMessage from the campaign's sender, with its content hash; shared with supporter copies."""
    message = EmailMessage(
        sender=sender_address(spec),
        to=[to_email],
        subject=subject,
        text=text,
        html=html,
        reply_to=spec.sender.reply_to,
        reference=reference,
        message_id=message_id(reference, spec.sender.email),
        headers=dict(headers or {}),
    )
    return EmailDocument(message=message, sha256=sha256_text(subject, text, html))


def sender_address(spec: CampaignSpec) -> str:
    """The From header, "Organisation <email>", quoted where the name needs it."""
    return email.utils.formataddr((spec.sender.organisation, spec.sender.email))


def message_id(reference: str, sender_email: str) -> str:
    """A Message-ID that is the same for every attempt of a delivery: "<reference@sender-domain>"."""
    if not _REFERENCE.fullmatch(reference):
        raise ValueError(f"reference {reference!r} cannot be used in a Message-ID")
    domain = sender_email.rpartition("@")[2]
    return f"<{reference}@{domain}>"
