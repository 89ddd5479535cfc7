"""Thin Celery tasks: each calls a plain, separately tested function with ids from the message."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from workers.celery_app import RECONCILE_QUEUE, app, queue_name
from workers.delivery import deliver_many
from workers.reconcile import reconcile
from workers.runtime import worker_context

log = logging.getLogger(__name__)


@app.task(name="dispatch.deliver")
def deliver_task(ids: list[int]) -> dict[str, Any]:
    summary = deliver_many(worker_context(), [int(i) for i in ids])  # within DISPATCH_BATCH_BUDGET_SECONDS
    log.info("delivered batch of %d: %s", len(ids), summary)
    return summary


@app.task(name="dispatch.reconcile")
def reconcile_task(ids: list[int]) -> dict[str, int]:
    summary: dict[str, int] = {}
    for delivery_id in ids:
        outcome = reconcile(worker_context(), int(delivery_id))
        summary[outcome] = summary.get(outcome, 0) + 1
    return summary


def publisher(queue: str, ids: Sequence[int]) -> None:
    deliver_task.apply_async(args=[list(ids)], queue=queue_name(queue))


def reconcile_publisher(queue: str, ids: Sequence[int]) -> None:
    """Look-ups go to the reconcile queue, whatever the delivery's channel: never behind its sends."""
    reconcile_task.apply_async(args=[list(ids)], queue=queue_name(RECONCILE_QUEUE))
