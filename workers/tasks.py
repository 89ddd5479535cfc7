"""Thin Celery tasks: each calls a plain, separately tested function with ids from the message."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import redis

from dispatcher.domain.settings import get_settings
from workers.celery_app import RECONCILE_QUEUE, app, broker_keys, queue_name
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


def waiting_messages(queue: str) -> int | None:
    """Messages waiting on a broker queue (not those a worker has taken), or None when the broker cannot
    be asked: the scheduler's sweeper republishes a stale row only when its queue holds none.

    Read from Redis directly: the queue's list and its priority lists (kombu's Redis transport, under
    DISPATCH_QUEUE_PREFIX); kombu's own count (a passive queue_declare) misses the prefix here."""
    settings = get_settings()
    if not settings.redis_broker:
        return None
    try:
        client = _redis(settings.broker_url)
        with client.pipeline(transaction=False) as pipe:
            for key in broker_keys(queue, settings.queue_prefix):
                pipe.llen(key)
            return sum(int(n) for n in pipe.execute())
    except redis.RedisError as err:  # the broker is down: cannot tell
        log.warning("counting the messages on queue %s failed: %s", queue, type(err).__name__)
        return None


@functools.cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def reconcile_publisher(queue: str, ids: Sequence[int]) -> None:
    """Look-ups go to the reconcile queue, whatever the delivery's channel: never behind its sends."""
    reconcile_task.apply_async(args=[list(ids)], queue=queue_name(RECONCILE_QUEUE))
