"""The per-process WorkerContext, built from settings on first use (or installed by the demo and tests)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Iterable
from datetime import datetime

import redis

from dispatcher.domain import db
from dispatcher.domain.errors import SettingsError
from dispatcher.domain.gateway_pauses import BreakerConfig
from dispatcher.domain.media import media_url
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.settings import Settings, get_settings
from dispatcher.domain.unsubscribe import unsubscribe_url
from workers.delivery import WorkerContext
from workers.document_store import shared_documents
from workers.gateways.base import Gateway
from workers.gateways.guard import LedgerGuard, install_guard
from workers.gateways.registry import build_for_slot, slots
from workers.limits import GatewayRate, Limiter, Limits, NoLimits, RedisLimiter

_lock = threading.Lock()
_context: WorkerContext | None = None
# the limits of a gateway the worker was not built with (none in a deployment: every slot's gateway is
# built at start-up): the old defaults of every gateway
UNKNOWN_GATEWAY = GatewayRate(per_second=10, in_flight=4)
COPIES_QUEUE = "copies"  # the queue supporter copies are published on (scheduling.queue_for)


def worker_context(queues: Collection[str] | None = None) -> WorkerContext:
    """This process's context, built on first use; ``queues`` (the worker's, first call only) say whether
    it sends supporter copies: by default it does."""
    global _context
    with _lock:
        if _context is None:
            _context = build_worker_context(get_settings(), queues=queues)
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
    settings: Settings,
    *,
    gateways: dict[str, Gateway] | None = None,
    limiter: Limiter | None = None,
    queues: Collection[str] | None = None,
) -> WorkerContext:
    """The context of a worker on ``queues`` (every queue when None). DISPATCH_SECRET_KEY signs the fax
    documents' URLs and the unsubscribe link of every supporter copy: a worker that needs either refuses
    to start without it, naming the variable."""
    gateways = gateways if gateways is not None else build_gateways(settings)
    if settings.secret_key is None and any(g.needs_media_url for g in gateways.values()):
        raise SettingsError(
            "DISPATCH_SECRET_KEY: must be set (32+ characters): the fax gateway fetches documents "
            "from signed URLs served by `dispatch web`"
        )
    if settings.secret_key is None and (queues is None or COPIES_QUEUE in queues):
        raise SettingsError(
            "DISPATCH_SECRET_KEY: must be set (32+ characters): every supporter copy carries a signed "
            "unsubscribe link that `dispatch web` checks (or leave the `copies` queue to another worker)"
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
        limiter=limiter if limiter is not None else _limiter(settings, gateways.values()),
        media_url=_media_urls(settings),
        unsubscribe_url=_unsubscribe_urls(settings),
        documents=DocumentCache(store=shared_documents(settings)),  # `dispatch web` serves faxes from it
    )


def _limiter(settings: Settings, gateways: Iterable[Gateway] = ()) -> Limiter:
    """Limits shared through the Redis broker; none for another broker (the demo's in-memory one)."""
    if settings.redis_broker:
        client = redis.Redis.from_url(settings.broker_url)
        return RedisLimiter(client, shared_limits(settings, gateways), namespace=settings.queue_prefix)
    return NoLimits()


def shared_limits(settings: Settings, gateways: Iterable[Gateway] = ()) -> Limits:
    """Each gateway's limits: DISPATCH_GATEWAY_LIMITS for the gateways it names, else
    DISPATCH_GATEWAY_PER_SECOND / DISPATCH_GATEWAY_IN_FLIGHT when set, else what its provider documents
    (the gateway class's ``per_second`` and ``in_flight``)."""
    overrides = settings.gateway_limit_overrides
    every_per_second, every_in_flight = settings.gateway_per_second, settings.gateway_in_flight
    rates: dict[str, GatewayRate] = {}
    for gateway in gateways:
        override = overrides.get(gateway.name)
        per_second = override.per_second if override else every_per_second or gateway.per_second
        in_flight = (override.in_flight if override else None) or every_in_flight or gateway.in_flight
        rates[gateway.name] = GatewayRate(per_second, in_flight)
    return Limits(
        gateway_per_second=every_per_second or UNKNOWN_GATEWAY.per_second,
        gateway_in_flight=every_in_flight or UNKNOWN_GATEWAY.in_flight,
        campaign_per_minute=settings.campaign_per_minute,
        max_wait=settings.limit_max_wait_seconds,
        slot_ttl=settings.lease_seconds,  # a slot is freed with its claim's lease, renewed with it
        gateways=rates,
    )


def _media_urls(settings: Settings):  # type: ignore[no-untyped-def]
    if settings.secret_key is None:
        return None
    secret = settings.secret_key.get_secret_value().encode()  # its length is checked by the settings

    def url(delivery_id: int, now: datetime) -> str:
        return media_url(settings.public_base_url, delivery_id, secret=secret, now=now)

    return url


def _unsubscribe_urls(settings: Settings) -> Callable[[int], str] | None:
    """A copy's unsubscribe link under DISPATCH_PUBLIC_BASE_URL, signed with DISPATCH_SECRET_KEY."""
    if settings.secret_key is None:
        return None
    secret = settings.secret_key.get_secret_value().encode()

    def url(delivery_id: int) -> str:
        return unsubscribe_url(settings.public_base_url, secret, delivery_id)

    return url
