"""Build the RFC 5322 message for an :class:`EmailMessage` (SMTP sends it; preview writes it as .eml).

``to_mime`` builds it with the standard library's modern API (``email.policy.SMTP``), which parses and
refolds every header: about three quarters of a supporter copy's send time on the worker. ``to_bytes``,
what the SMTP gateway sends, builds the same message with the library's ``compat32`` classes (headers kept
as given, RFC 2047 encoded when not ASCII; bodies 7bit when ASCII with short lines, else base64) when the
message is of the plain kind every letter and copy is: ASCII addresses, no attachments. Anything else goes
through ``to_mime``. Both refuse a header value with a line break, as ``email.policy.SMTP`` does.
"""

from __future__ import annotations

import email.charset
import email.header
import email.message
import email.policy
import email.utils
import functools
import secrets
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart

from dispatcher.domain.messages import EmailMessage

MAX_7BIT_LINE = 998  # RFC 5322 2.1.1, without the CRLF


class _Wire(email.policy.Compat32):
    """compat32 as sent: CRLF line ends, and a short ASCII header value written as it is (the Header
    class would only re-split it to find it needs no folding: a third of the time to_bytes took)."""

    def _fold(self, name: str, value: object, sanitize: bool) -> str:
        plain = isinstance(value, str) and value.isascii() and "\r" not in value and "\n" not in value
        if plain and len(name) + 2 + len(str(value)) <= MAX_7BIT_LINE:
            return f"{name}: {value}{self.linesep}"
        return str(super()._fold(name, value, sanitize))  # type: ignore[misc]


WIRE = _Wire(linesep="\r\n", max_line_length=MAX_7BIT_LINE)
UTF8_BASE64 = email.charset.Charset("utf-8")  # body_encoding BASE64, header_encoding SHORTEST


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


@functools.lru_cache(maxsize=256)
def sender_address(sender: str) -> tuple[str, str]:
    """(display name, address) of a From value; a campaign's copies share one, so it is parsed once."""
    return email.utils.parseaddr(sender)


def to_bytes(message: EmailMessage) -> bytes:
    """The message as sent (CRLF line ends): ``to_mime``'s message, built the fast way when it can be."""
    name, address = sender_address(message.sender)
    addresses = [address, *message.to, *message.cc, *([message.reply_to] if message.reply_to else [])]
    if message.attachments or not all(a.isascii() for a in addresses):
        return to_mime(message).as_bytes(policy=email.policy.SMTP)
    text = _text_part(message.text, "plain")
    mime: email.message.Message = text
    if message.html is not None:
        # a random boundary of our own: the generator's own draws one and then searches the parts for it
        # with a regular expression compiled anew each time
        mime = MIMEMultipart("alternative", boundary=f"=_{secrets.token_hex(16)}", policy=WIRE)
        for part in (text, _text_part(message.html, "html")):
            del part["MIME-Version"]  # the message's own header, not each part's
            mime.attach(part)
    headers = [
        ("From", email.utils.formataddr((name, address), charset="utf-8") if name else address),
        ("To", ", ".join(message.to)),
        *([("Cc", ", ".join(message.cc))] if message.cc else []),
        *([("Reply-To", message.reply_to)] if message.reply_to else []),
        ("Subject", message.subject),
        ("Message-ID", message.message_id),
        ("Date", email.utils.formatdate(localtime=False, usegmt=True)),
        *message.headers.items(),
    ]
    for header, value in headers:
        if "\r" in value or "\n" in value:
            raise ValueError(f"Header values may not contain linefeed or carriage return characters ({header})")
        # compat32 takes a Header (RFC 2047 encoded on output) where typeshed's Message says str
        mime[header] = value if value.isascii() else email.header.Header(value, "utf-8", header_name=header)  # type: ignore[assignment]
    for header in ("MIME-Version", "Content-Type", "Content-Transfer-Encoding"):  # after the headers above
        structural = mime[header]
        if structural is not None:
            del mime[header]
            mime[header] = structural
    return mime.as_bytes(policy=WIRE)


def _text_part(body: str, subtype: str) -> MIMENonMultipart:
    """A text part: 7bit when ASCII with lines SMTP can carry, else UTF-8 in base64."""
    part = MIMENonMultipart("text", subtype, policy=WIRE)
    lines = body.splitlines()
    canonical = "".join(line + "\r\n" for line in lines)  # MIME text: CRLF line ends, the last one too
    if body.isascii() and all(len(line) <= MAX_7BIT_LINE for line in lines):
        part.set_payload(canonical, charset="us-ascii")
    else:
        part.set_payload(canonical, charset=UTF8_BASE64)
    return part
