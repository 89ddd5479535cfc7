"""Real HTTP endpoints that keep every webhook an emulator sends, byte for byte, for the gateway tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import FastAPI, Request

from dispatcher.domain.messages import WebhookRequest
from workers.sandbox.server import serve


def wait_until(predicate: Callable[[], Any], *, timeout: float = 5.0) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


@dataclass
class RawSink:
    """Webhooks received, raw: (headers, body bytes). Test modules subclass it with their own filters."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


SinkT = TypeVar("SinkT", bound=RawSink)


@contextmanager
def serving(sink: SinkT, path: str) -> Iterator[SinkT]:
    """Serve ``sink`` at ``path`` on a real localhost port; its ``url`` is set while it runs."""
    app = FastAPI()

    @app.post(path)
    async def webhook(request: Request) -> dict[str, bool]:
        body = await request.body()  # never await while holding the thread lock
        with sink.lock:
            sink.received.append((dict(request.headers), body))
        return {"ok": True}

    with serve(app) as server:
        sink.url = f"{server.url}{path}"
        yield sink


class Receiver:
    """Webhooks received as the gateway sees them (WebhookRequest)."""

    def __init__(self) -> None:
        self.requests: list[WebhookRequest] = []

    def wait_for(self, predicate: Callable[[WebhookRequest], bool], timeout: float = 5.0) -> WebhookRequest:
        found: WebhookRequest = wait_until(
            lambda: next((item for item in list(self.requests) if predicate(item)), None), timeout=timeout
        )
        return found


@contextmanager
def receiving(path: str) -> Iterator[tuple[Receiver, str]]:
    """A Receiver at ``path`` on a real localhost port, and its URL."""
    hooks, app = Receiver(), FastAPI()

    @app.post(path)
    async def hook(request: Request) -> dict[str, bool]:
        hooks.requests.append(
            WebhookRequest(
                method=request.method,
                url=str(request.url),
                body=await request.body(),
                headers={k.lower(): v for k, v in request.headers.items()},
                received_at=datetime.now(UTC),
            )
        )
        return {"ok": True}

    with serve(app) as server:
        yield hooks, f"{server.url}{path}"
