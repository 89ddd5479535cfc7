"""Every Redis key the project writes, in one place."""

from __future__ import annotations

PREFIX = "dispatch"


def gateway_rate(gateway: str, second: int) -> str:
    return f"{PREFIX}:rate:gateway:{gateway}:{second}"


def campaign_rate(campaign: str, minute: int) -> str:
    return f"{PREFIX}:rate:campaign:{campaign}:{minute}"


def gateway_slots(gateway: str) -> str:
    return f"{PREFIX}:slots:gateway:{gateway}"
