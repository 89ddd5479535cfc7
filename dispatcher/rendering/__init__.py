"""One letter, rendered into every document we send: email, fax PDF and the supporter copy.

    letter.py   the campaign's letter, once: text + escaped HTML, with the visible CC block
    fax.py      the fax PDF (cover page + letter, page count and SHA-256)
    email.py    the email to one addressee (stable Message-ID, SHA-256 of its content)
    copy.py     the copy emailed to a supporter
    preview.py  the fax and email written to files for a human to check
"""

from __future__ import annotations

from .copy import render_supporter_copy
from .email import EmailDocument, render_email
from .fax import FaxDocument, render_fax
from .letter import Letter, build_letter, load_letter
from .preview import Preview, write_preview

__all__ = [
    "EmailDocument",
    "FaxDocument",
    "Letter",
    "Preview",
    "build_letter",
    "load_letter",
    "render_email",
    "render_fax",
    "render_supporter_copy",
    "write_preview",
]
