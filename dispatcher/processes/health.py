"""Health endpoints of `dispatch web`: `/health/live` (the process answers) and `/health/ready` (its services).

- ``/health/live`` (and the older ``/health``) answers on the event loop and touches nothing: a locked or
  unreachable ledger never makes an orchestrator restart a web process that is only waiting for it.
- ``/health/ready`` checks the ledger with one cheap query (the paused gateways, ``gateway_states``) and,
  when DISPATCH_BROKER_URL is a redis:// URL, the broker's Redis with PING. Each check has a short
  timeout: a hung database or Redis makes the probe answer 503, never hang. A failed check answers 503
  naming the check and the error's class only (never the URL, which may hold a password, nor a trace).
  A paused gateway is reported in the body with 200: the web process must keep taking webhooks while a
  gateway is paused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain import gateway_pauses
from dispatcher.domain.db import reading
from dispatcher.domain.settings import Settings

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0  # each check of /health/ready; a probe's own timeout is usually a few seconds
REDIS_SCHEMES = ("redis://", "rediss://")
T = TypeVar("T")


class CheckFailed(Exception):
    """A readiness check failed; ``cause`` is the class name of the error (nothing else is shown)."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def health_router(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    gateways: Iterable[str] = (),
    timeout: float = CHECK_TIMEOUT_SECONDS,
) -> APIRouter:
    """``/health``, ``/health/live`` and ``/health/ready``; ``gateways`` are the configured gateways' names
    (reported as sending unless the ledger says they are paused)."""
    router = APIRouter()
    configured = sorted(set(gateways))
    broker = settings.broker_url if settings.broker_url.startswith(REDIS_SCHEMES) else None
    client = (
        redis.Redis.from_url(broker, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False)
        if broker
        else None
    )

    @router.get("/health")
    @router.get("/health/live")
    async def live() -> dict[str, str]:  # on the event loop: it needs no worker thread, nor the ledger
        return {"status": "ok"}

    @router.get("/health/ready")
    async def ready() -> JSONResponse:
        checks: dict[str, str] = {}
        failed: list[str] = []
        paused: dict[str, gateway_pauses.Pause] | None = None
        try:
            paused = await _bounded(lambda: _ledger(factory, timeout), timeout)
            checks["ledger"] = "ok"
        except CheckFailed as err:
            checks["ledger"] = f"failed: {err.cause}"
            failed.append("ledger")
        if client is not None:
            try:
                await _bounded(client.ping, timeout)
                checks["redis"] = "ok"
            except CheckFailed as err:
                checks["redis"] = f"failed: {err.cause}"
                failed.append("redis")
        for name in failed:
            log.warning("readiness check %s %s", name, checks[name])
        body: dict[str, Any] = {"status": "unavailable" if failed else "ok", "checks": checks}
        if failed:
            body["failed"] = failed
        body["gateways"] = _gateway_states(configured, paused)
        return JSONResponse(body, status_code=503 if failed else 200)

    return router


async def _bounded(check: Callable[[], T], timeout: float) -> T:
    """``check()`` in a worker thread, given up after ``timeout`` seconds (its thread is left to finish)."""
    try:
        return await asyncio.wait_for(run_in_threadpool(check), timeout)
    except TimeoutError:
        raise CheckFailed("TimeoutError") from None
    except DBAPIError as err:  # the driver's class (psycopg's OperationalError), not SQLAlchemy's wrapper
        raise CheckFailed(type(err.orig).__name__) from None
    except Exception as err:  # any failure of a check is a 503 naming its class
        raise CheckFailed(type(err).__name__) from None


def _ledger(factory: sessionmaker[Session], timeout: float) -> dict[str, gateway_pauses.Pause]:
    """One query: the paused gateways. On PostgreSQL the statement is bounded by the database too."""
    with reading(factory) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text(f"SET LOCAL statement_timeout = {int(timeout * 1000)}"))
        return gateway_pauses.pauses(session)


def _gateway_states(configured: list[str], paused: dict[str, gateway_pauses.Pause] | None) -> dict[str, str]:
    if paused is None:  # the ledger did not answer: nothing is known of the pauses
        return dict.fromkeys(configured, "unknown")
    states = dict.fromkeys(configured, "sending")
    for name, pause in paused.items():
        states[name] = f"paused: {pause.cause}"
    return dict(sorted(states.items()))
