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
import threading
from collections.abc import Callable, Iterable
from typing import Any

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
    broker = settings.broker_url if settings.redis_broker else None
    client = (
        redis.Redis.from_url(broker, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False)
        if broker
        else None
    )

    @router.get("/health")
    @router.get("/health/live")
    async def live() -> dict[str, str]:  # on the event loop: it needs no worker thread, nor the ledger
        return {"status": "ok"}

    checks = {"ledger": Check(lambda: _ledger(factory, timeout), timeout)}
    if client is not None:
        checks["redis"] = Check(client.ping, timeout)

    @router.get("/health/ready")
    async def ready() -> JSONResponse:
        # the checks run together: the probe answers within one timeout
        results = dict(zip(checks, await asyncio.gather(*(check.run() for check in checks.values())), strict=True))
        failed = [name for name, (_, error) in results.items() if error is not None]
        for name in failed:
            log.warning("readiness check %s failed: %s", name, results[name][1])
        paused, ledger_error = results["ledger"]
        body: dict[str, Any] = {
            "status": "unavailable" if failed else "ok",
            "checks": {name: "ok" if error is None else f"failed: {error}" for name, (_, error) in results.items()},
        }
        if failed:
            body["failed"] = failed
        body["gateways"] = _gateway_states(configured, paused if ledger_error is None else None)
        return JSONResponse(body, status_code=503 if failed else 200)

    return router


class Check:
    """One readiness check, run in a worker thread and given up after ``timeout`` seconds.

    A given-up call's thread is left to finish (a thread cannot be stopped); until it does, the check
    fails at once rather than start another, so a hung service holds one thread per check, not one per
    probe (the web process's thread pool serves its webhooks). A call given up before its thread
    started never runs."""

    def __init__(self, call: Callable[[], Any], timeout: float) -> None:
        self.call, self.timeout = call, timeout
        self.guard = threading.Lock()
        self.hung = 0  # given-up calls whose thread has not come back yet

    async def run(self) -> tuple[Any, str | None]:
        """(the call's result, None), or (None, the class name of its error)."""
        with self.guard:
            if self.hung:
                return None, "TimeoutError"  # the last call is still hung
        state = {"started": False, "finished": False, "given_up": False, "hung": False}
        try:
            return await asyncio.wait_for(run_in_threadpool(self._call, state), self.timeout), None
        except TimeoutError:
            return None, "TimeoutError"
        except DBAPIError as err:  # the driver's class (psycopg's OperationalError), not SQLAlchemy's wrapper
            return None, type(err.orig).__name__
        except Exception as err:  # any failure of a check is a 503 naming its class
            return None, type(err).__name__
        finally:
            with self.guard:
                state["given_up"] = True
                if state["started"] and not state["finished"]:
                    state["hung"] = True
                    self.hung += 1

    def _call(self, state: dict[str, bool]) -> Any:
        with self.guard:
            if state["given_up"]:
                return None  # given up before this thread started: nobody waits for it
            state["started"] = True
        try:
            return self.call()
        finally:
            with self.guard:
                state["finished"] = True
                if state["hung"]:
                    self.hung -= 1


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
