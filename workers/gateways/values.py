"""Reading loosely typed values out of provider payloads, the same way for every provider."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

ErrorClass = Literal["transient", "permanent"]  # how a provider's failure code is classed in its table


def parse_time(value: object) -> datetime | None:
    """ISO 8601 (any fraction length, "Z" or an offset) or epoch seconds, as aware UTC; None when unreadable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
