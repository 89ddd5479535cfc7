"""Reading loosely typed values out of provider payloads, the same way for every provider.

A provider's answer or webhook may carry anything where a field is expected (a list for an object, a
string for a number); these readers give the field's type or None, never an exception.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Literal

# how a provider's failure code is classed in its table; "configuration": ours to fix, not the route's
ErrorClass = Literal["transient", "permanent", "configuration"]


def parse_time(value: object) -> datetime | None:
    """ISO 8601 (any fraction length, "Z" or an offset) or epoch seconds, as aware UTC; None when unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):  # out of range, or not a number (nan)
            return None
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def text(value: object) -> str | None:
    """A string field; None when absent or not a string."""
    return value if isinstance(value, str) else None


def integer(value: object) -> int | None:
    """An integer field, or a string of digits; None otherwise (a bool is not a number)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def number(value: object) -> float | None:
    """A finite number field as float; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return result if math.isfinite(result) else None


def obj(value: object) -> dict[str, Any]:
    """A JSON object field; an empty one when absent or of another type."""
    return value if isinstance(value, dict) else {}


def objects(value: object) -> list[dict[str, Any]]:
    """The JSON objects in a list field; empty when absent or not a list."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
