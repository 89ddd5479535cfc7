"""Fax and telephone numbers: read to E.164 with ``phonenumbers``, never corrected silently.

A number is read in the addressee's country, so national numbers work ("010 6307 0900" in China).
What a fax provider cannot dial is an error with, where one is sound, the number probably meant as a
suggestion: an international dialling (exit) prefix, with or without a "+" ("011 86 10 ...",
"+00 86 10 ..."), vanity letters ("1-800-FLOWERS"), and, for faxes, an extension.
"""

from __future__ import annotations

import phonenumbers
from phonenumbers import CountryCodeSource, PhoneNumber, PhoneNumberFormat

from dispatcher.domain.characters import IN_LINE, unsafe_in_line
from dispatcher.domain.errors import Problem

# International dialling (exit) prefixes people write before a country code: 00 (most of the world),
# 011 (North America), 010 (Japan), 0011 (Australia), 001/002 (Korean carriers), 810 (Russia).
# Longer first where one begins another.
IDD_PREFIXES = ("0011", "011", "010", "001", "002", "00", "810")


def check_number(
    raw: str, country: str, *, file: str, where: str, field: str, extension_allowed: bool = False
) -> tuple[str | None, Problem | None]:
    """``raw`` in E.164, read in ``country``; or a Problem, with a suggestion when one is sound.

    A fax number with an extension is an error (a provider cannot dial it); a telephone number, a
    contact detail only, may have one (``extension_allowed``).
    """

    def problem(message: str, suggestion: str | None = None) -> tuple[None, Problem]:
        return None, Problem(file=file, where=where, field=field, message=message, suggestion=suggestion)

    region = country.upper()
    what = unsafe_in_line(raw)
    if what:
        return problem(f"{raw!r} contains {what}: {IN_LINE}")
    prefixed = exit_prefix(raw, region)
    if prefixed is not None:
        return problem(_prefix_message(raw, prefixed[0]), prefixed[1])
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as err:
        return problem(f"{raw!r} is not a valid number: {err}")
    valid = phonenumbers.is_valid_number(number)
    if number.extension and not extension_allowed:
        return problem(
            f"{raw!r} has an extension ({number.extension}): a fax provider cannot dial an extension; "
            "give the fax machine's own number"
        )
    if not number.extension and any(ch.isalpha() for ch in raw):
        return problem(f"{raw!r} has letters: a fax provider dials digits only", _shown(number) if valid else None)
    if not valid:
        return problem(f"{raw!r} is not a valid number (parsed as {_shown(number)})")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164), None


def exit_prefix(raw: str, region: str) -> tuple[str, str | None] | None:
    """The exit prefix ``raw`` starts with and the number probably meant; None if it has none.

    After a "+", a prefix starting with 0 is never a country code; "+810..." is read as one unless the
    number it gives is invalid. Without a "+", a number that reads as national in ``region`` has no
    exit prefix ("010 6307 0900" in China), one that ``phonenumbers`` reads through the region's own
    exit prefix has one, and otherwise the number after a known prefix must be valid to count as one.
    """
    text = raw.strip()
    digits = phonenumbers.normalize_digits_only(text)
    candidates = [p for p in IDD_PREFIXES if digits.startswith(p)]
    if not candidates:
        return None
    if text.startswith("+"):
        if not digits.startswith("0") and _valid(_parse(text, None)):
            return None
        return _first_meant(candidates, digits, region=region) or (candidates[0], None)
    as_written = _parse(text, region, keep_raw_input=True)
    if as_written is not None and _valid(as_written):
        if as_written.country_code_source != CountryCodeSource.FROM_NUMBER_WITH_IDD:
            return None
        code = str(as_written.country_code)
        prefix = next((p for p in candidates if digits[len(p) :].startswith(code)), candidates[0])
        return prefix, _shown(as_written)
    return _first_meant(candidates, digits, region=None)


def _first_meant(candidates: list[str], digits: str, *, region: str | None) -> tuple[str, str | None] | None:
    """The first prefix whose rest is a valid number: international, else national in ``region``."""
    for prefix in candidates:
        rest = digits[len(prefix) :]
        readings = [_parse(f"+{rest}", None), _parse(rest, region) if region else None]
        meant = next((n for n in readings if n is not None and _valid(n)), None)
        if meant is not None:
            return prefix, _shown(meant)
    return None


def _prefix_message(raw: str, prefix: str) -> str:
    if raw.strip().startswith("+"):
        return f"{raw!r} is not a valid number: '+{prefix}' is an international dialling prefix, not a country code"
    return (
        f"{raw!r} is not a valid number: it starts with '{prefix}', an international dialling prefix; "
        "write '+' and the country code instead"
    )


def same_number(suggestion: str) -> str | None:
    """A suggested number (international format) in E.164, to compare it with other routes."""
    number = _parse(suggestion, None)
    return phonenumbers.format_number(number, PhoneNumberFormat.E164) if number is not None else None


def _parse(text: str, region: str | None, *, keep_raw_input: bool = False) -> PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region, keep_raw_input=keep_raw_input)
    except phonenumbers.NumberParseException:
        return None


def _valid(number: PhoneNumber | None) -> bool:
    return number is not None and phonenumbers.is_valid_number(number)


def _shown(number: PhoneNumber) -> str:
    return phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
