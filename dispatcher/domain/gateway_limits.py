"""DISPATCH_GATEWAY_LIMITS: one gateway's send rate and calls in flight, set by the operator over the
defaults its provider documents (each gateway class states them, workers/gateways/).

The value is a comma-separated list of ``NAME=N/s`` (N sends per second through gateway NAME) or
``NAME=N/s:M`` (and at most M calls in flight), e.g. ``smtp=200/s:20,telnyx=5/s``. NAME is a gateway
name as the channel slots give it (DISPATCH_FAX_GATEWAY, DISPATCH_EMAIL_GATEWAY,
DISPATCH_COPIES_GATEWAY).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENTRY = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)=(?P<per_second>[1-9][0-9]*)/s(?::(?P<in_flight>[1-9][0-9]*))?")
SHAPE = "NAME=N/s or NAME=N/s:M (N sends per second, M calls in flight, both whole numbers from 1)"


@dataclass(frozen=True)
class GatewayLimit:
    """An operator's limits for one gateway; ``in_flight`` None keeps the gateway's own."""

    per_second: int
    in_flight: int | None = None


class GatewayLimitsError(ValueError):
    """A malformed DISPATCH_GATEWAY_LIMITS value; the message names the entry by its position."""


def parse_gateway_limits(text: str) -> dict[str, GatewayLimit]:
    """``"smtp=200/s:20,telnyx=5/s"`` as {name: GatewayLimit}; an empty value names no gateway."""
    limits: dict[str, GatewayLimit] = {}
    if not text.strip():
        return limits
    for position, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        found = ENTRY.fullmatch(entry)
        if found is None:
            raise GatewayLimitsError(f"entry {position} ({entry!r}) is not {SHAPE}")
        name = found["name"]
        if name in limits:
            raise GatewayLimitsError(f"entry {position} names gateway {name!r} a second time")
        in_flight = found["in_flight"]
        limits[name] = GatewayLimit(int(found["per_second"]), int(in_flight) if in_flight else None)
    return limits
