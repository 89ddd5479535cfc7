"""The per-process WorkerContext, built from settings on first use (or installed by the demo and tests)."""

from __future__ import annotations

import os
import threading
from datetime import datetime

import redis

from dispatcher.domain import db
from dispatcher.domain.errors import SettingsError
from dispatcher.domain.gateway_pauses import BreakerConfig
from dispatcher.domain.media import media_url
from dispatcher.domain.settings import Settings, get_settings
from workers.delivery import WorkerContext
from workers.gateways.base import Gateway
from workers.gateways.guard import LedgerGuard, install_guard
from workers.gateways.registry import build_for_slot, slots
from workers.limits import Limiter, Limits, NoLimits, RedisLimiter

_lock = threading.Lock()
_context: WorkerContext | None = None


def worker_context() -> WorkerContext:
    global _context
    with _lock:
        if _context is None:
            _context = build_worker_context(get_settings())
        return _context


def install(new: WorkerContext | None) -> None:
    """Use ``new`` in this process (the demo and tests build their own)."""
    global _context
    with _lock:
        _context = new


def build_gateways(settings: Settings) -> dict[str, Gateway]:
    """One gateway per channel slot; a missing setting or a gateway of the wrong channel fails here, at
    start-up, naming the variable."""
    return {slot.key: build_for_slot(slot) for slot in slots(settings)}


def build_worker_context(
    settings: Settings, *, gateways: dict[str, Gateway] | None = None, limiter: Limiter | None = None
) -> WorkerContext:
    gateways = gateways if gateways is not None else build_gateways(settings)
    if settings.secret_key is None and any(g.needs_media_url for g in gateways.values()):
        raise SettingsError(
            "DISPATCH_SECRET_KEY: must be set (32+ characters): the fax gateway fetches documents "
            "from signed URLs served by `dispatch web`"
        )
    sql = db.make_engine(settings.database_url)
    db.ensure_schema(sql)
    # Celery's prefork pool forks after this: a child must never use the parent's pooled connections
    os.register_at_fork(after_in_child=lambda: sql.dispose(close=False))
    factory = db.session_factory(sql)
    # pauses and the circuit breaker, shared by every worker through the ledger
    install_guard(gateways.values(), LedgerGuard(factory, BreakerConfig.from_settings(settings)))
    return WorkerContext.from_settings(
        settings,
        factory=factory,
        gateways=gateways,
        limiter=limiter if limiter is not None else _limiter(settings),
        media_url=_media_urls(settings),
    )


def _limiter(settings: Settings) -> Limiter:
    """Limits shared through the Redis broker; none for another broker (the demo's in-memory one)."""
    if settings.broker_url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(settings.broker_url)
        return RedisLimiter(client, shared_limits(settings), namespace=settings.queue_prefix)
    return NoLimits()


def shared_limits(settings: Settings) -> Limits:
    return Limits(
        gateway_per_second=settings.gateway_per_second,
        gateway_in_flight=settings.gateway_in_flight,
        campaign_per_minute=settings.campaign_per_minute,
        max_wait=settings.limit_max_wait_seconds,
        slot_ttl=settings.lease_seconds,  # a slot is freed with its claim's lease, renewed with it
    )


def _media_urls(settings: Settings):  # type: ignore[no-untyped-def]
    if settings.secret_key is None:
        return None
    secret = settings.secret_key.get_secret_value().encode()  # its length is checked by the settings

    def url(delivery_id: int, now: datetime) -> str:
        return media_url(settings.public_base_url, delivery_id, secret=secret, now=now)

    return url
