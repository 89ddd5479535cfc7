"""Characters that campaign text must not hold: control characters and bidirectional controls.

A CR or LF in a subject or a name would split an email header (or crash the SMTP library at send time);
ESC and other C0/C1 controls can rewrite a terminal or a fax page; bidirectional overrides and
isolates (U+202A-U+202E, U+2066-U+2069) make text read differently from what it holds. A single-line
field refuses all of them, and the line and paragraph separators U+2028/U+2029 too; a letter (its
template or inline body) may hold line breaks and tabs, and nothing else of the kind.
"""

from __future__ import annotations

import re
import unicodedata

_C0_C1 = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"  # C0, DEL and C1 controls, less TAB, LF and CR
_BIDI = "\u202a-\u202e\u2066-\u2069"
_UNSAFE_IN_LINE = re.compile(f"[{_C0_C1}\t\n\r\u2028\u2029{_BIDI}]")
_UNSAFE_IN_TEXT = re.compile(f"[{_C0_C1}{_BIDI}]")
_CONTROL_NAMES = {
    0x00: "NUL",
    0x09: "TAB",
    0x0A: "LINE FEED",
    0x0D: "CARRIAGE RETURN",
    0x1B: "ESCAPE",
    0x7F: "DELETE",
    0x85: "NEXT LINE",
}

IN_LINE = "control characters and bidirectional controls are not allowed in one line"
IN_LETTER = "the letter may hold line breaks and tabs, but no other control characters or bidirectional controls"


def unsafe_in_line(text: str) -> str | None:
    """The first character a single-line field must not hold, as "U+000D (CARRIAGE RETURN) at character
    10"; None if there is none."""
    found = _UNSAFE_IN_LINE.search(text)
    return None if found is None else f"{describe(found.group())} at character {found.start() + 1}"


def unsafe_in_text(text: str) -> tuple[int, str] | None:
    """The line (from 1) of the first character a letter must not hold, and the character described
    with its place in that line; None if there is none."""
    found = _UNSAFE_IN_TEXT.search(text)
    if found is None:
        return None
    line_start = text.rfind("\n", 0, found.start()) + 1
    line = text.count("\n", 0, found.start()) + 1
    return line, f"{describe(found.group())} at character {found.start() - line_start + 1}"


def unsafe_char_in_text(text: str) -> str | None:
    """The first character a letter must not hold, described ("U+001B (ESCAPE)"); None if none."""
    found = _UNSAFE_IN_TEXT.search(text)
    return None if found is None else describe(found.group())


def describe(char: str) -> str:
    """A character as "U+001B (ESCAPE)"."""
    name = _CONTROL_NAMES.get(ord(char)) or unicodedata.name(char, "a control character")
    return f"U+{ord(char):04X} ({name})"


def printable(text: str) -> str:
    """``text`` with every character refused in one line written as an escape (``\\r``, ``\\u202e``)."""
    return _UNSAFE_IN_LINE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
