"""Every Redis key the project writes, in one place.

Each key starts with the deployment's namespace (DISPATCH_QUEUE_PREFIX), like every key Celery writes
(workers/celery_app.py sets kombu's ``global_keyprefix``): deployments sharing one Redis keep apart.
"""

from __future__ import annotations

PREFIX = "dispatch"


def gateway_rate(gateway: str, second: int, *, namespace: str = "") -> str:
    return f"{namespace}{PREFIX}:rate:gateway:{gateway}:{second}"


def campaign_rate(campaign: str, minute: int, *, namespace: str = "") -> str:
    return f"{namespace}{PREFIX}:rate:campaign:{campaign}:{minute}"


def gateway_slots(gateway: str, *, namespace: str = "") -> str:
    return f"{namespace}{PREFIX}:slots:gateway:{gateway}"
