"""Build the RFC 5322 message for an :class:`EmailMessage` (SMTP sends it; preview writes it as .eml)."""

from __future__ import annotations

import email.message
import email.policy
import email.utils

from dispatcher.domain.messages import EmailMessage


def to_mime(message: EmailMessage) -> email.message.EmailMessage:
    """Text part, optional HTML alternative, attachments; headers from the message."""
    mime = email.message.EmailMessage(policy=email.policy.SMTP)
    mime["From"] = message.sender
    mime["To"] = ", ".join(message.to)
    if message.cc:
        mime["Cc"] = ", ".join(message.cc)
    if message.reply_to:
        mime["Reply-To"] = message.reply_to
    mime["Subject"] = message.subject
    mime["Message-ID"] = message.message_id
    mime["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    for name, value in message.headers.items():
        mime[name] = value
    mime.set_content(message.text)
    if message.html is not None:
        mime.add_alternative(message.html, subtype="html")
    for attachment in message.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        mime.add_attachment(attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename)
    return mime
