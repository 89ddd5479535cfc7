"""One letter, rendered into every document we send: email, fax PDF and the supporter copy.

letter.py     the campaign's letter, once: text + escaped HTML, with the visible CC block
fax.py        the fax PDF (cover page + letter, page count and SHA-256)
fonts.py      the fax's fonts, one per script, and the characters none of them can draw
fpdf_fonts.py the fax fonts as fpdf2 objects, parsed once per process, their subsets kept per glyph set
email.py      the email to one addressee (stable Message-ID, SHA-256 of its content)
copy.py       the copy emailed to a supporter
preview.py    the fax and email written to files for a human to check
templates.py  the environment for templates/ (cover page, email HTML, supporter copy)
drawing.py    the cover page's drawing instructions, as its template writes them, and their drawing
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dispatcher.domain.rendering.copy import render_supporter_copy
    from dispatcher.domain.rendering.email import EmailDocument, render_email
    from dispatcher.domain.rendering.fax import FaxDocument, render_fax
    from dispatcher.domain.rendering.letter import RenderedLetter, build_letter, load_letter
    from dispatcher.domain.rendering.preview import Preview, write_preview

# each name from the module that holds it, imported on first use: importing one of this package's modules
# (copy.py for the ledger, email.py for a worker) does not import fpdf2 and fontTools with the fax's
_HOME = {
    "render_supporter_copy": "copy",
    "EmailDocument": "email",
    "render_email": "email",
    "FaxDocument": "fax",
    "render_fax": "fax",
    "RenderedLetter": "letter",
    "build_letter": "letter",
    "load_letter": "letter",
    "Preview": "preview",
    "write_preview": "preview",
}

__all__ = [
    "EmailDocument",
    "FaxDocument",
    "Preview",
    "RenderedLetter",
    "build_letter",
    "load_letter",
    "render_email",
    "render_fax",
    "render_supporter_copy",
    "write_preview",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
