"""Email addresses: syntax checked with ``email-validator`` (no DNS look-ups), look-alike domains refused.

A domain label that mixes scripts reads like another domain: "gov.cn" written with U+0441 CYRILLIC
SMALL LETTER ES for its "c" looks the same and is not. A label is accepted in one script, or in the
combinations that Unicode's "highly restrictive" profile (UTS #39) allows for Chinese, Japanese and
Korean with Latin; common characters (digits, hyphen) belong to every script. Scripts come from
``fontTools.unicodedata``.
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from fontTools import unicodedata as scripts

from dispatcher.domain.characters import IN_LINE, unsafe_in_line
from dispatcher.domain.errors import Problem

_ANY_SCRIPT = frozenset({"Zyyy", "Zinh", "Zzzz"})  # common, inherited, unknown
_ALLOWED_MIXES = (
    frozenset({"Latn", "Hani", "Hira", "Kana"}),  # Japanese
    frozenset({"Latn", "Hani", "Bopo"}),  # Chinese
    frozenset({"Latn", "Hani", "Hang"}),  # Korean
)


def check_email(raw: str, *, file: str, where: str, field: str) -> tuple[str | None, Problem | None]:
    """Check ``raw`` as an email address (syntax, no DNS); the normalised address, or a Problem."""

    def problem(message: str) -> tuple[None, Problem]:
        return None, Problem(file=file, where=where, field=field, message=message)

    what = unsafe_in_line(raw)
    if what:
        return problem(f"{raw!r} contains {what}: {IN_LINE}")
    try:
        result = validate_email(raw, check_deliverability=False)
    except EmailNotValidError as err:
        return problem(f"{raw!r} is not a valid email address: {err}")
    mixed = mixed_script_label(result.domain)
    if mixed:
        return problem(f"{raw!r} is not a valid email address: {mixed}")
    return result.normalized, None


def mixed_script_label(domain: str) -> str | None:
    """Why a label of ``domain`` looks like another domain's (it mixes scripts); None if none does."""
    for label in domain.split("."):
        found = {scripts.script(ch) for ch in label} - _ANY_SCRIPT
        if len(found) > 1 and not any(found <= allowed for allowed in _ALLOWED_MIXES):
            names = " and ".join(sorted(scripts.script_name(code) for code in found))
            return f"the domain label {label!r} mixes {names} letters (a look-alike of another domain?)"
    return None


def normalise_email(raw: str) -> str | None:
    """A supporter's address in the one form the ledger keeps, or None if it is not a valid address.

    The local part is lower-cased (case-folded for non-ASCII) and the domain written in IDNA ASCII,
    lower-cased: ``Ada.Lovelace@Bücher.Example`` is ``ada.lovelace@xn--bcher-kva.example``. Two rows
    that differ only so are one person; the suppression list hashes this form."""
    if unsafe_in_line(raw):
        return None
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError:
        return None
    if mixed_script_label(result.domain):
        return None
    local = result.local_part.lower() if result.local_part.isascii() else result.local_part.casefold()
    return f"{local}@{(result.ascii_domain or result.domain).lower()}"
