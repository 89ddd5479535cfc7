"""What the email provider emulators share: a dropped answer, outcome handling, webhook delivery."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import httpx
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from workers.sandbox.control import control_router
from workers.sandbox.core import SandboxState

log = logging.getLogger(__name__)

# Fax-only outcomes make no sense for email: the message is simply delivered.
EMAIL_OUTCOMES: dict[str, str] = {"busy": "ok", "no_answer": "ok", "no_fax_tone": "ok", "media_fetch_failed": "ok"}
REFUSED = frozenset({"invalid_number", "rate_limited", "server_error", "unauthorized"})  # nothing accepted


def email_outcome(outcome: str) -> str:
    return EMAIL_OUTCOMES.get(outcome, outcome)


class DroppedResponse(Response):
    """Starts an answer it never finishes: the connection closes mid-body (accept-then-drop)."""

    def __init__(self, status_code: int = 200) -> None:
        super().__init__(status_code=status_code)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": ', "more_body": True})
        # Returning now leaves the response incomplete; uvicorn closes the socket.


class Background:
    """Fire-and-forget tasks that are kept referenced until done (asyncio only holds weak refs)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def post_webhook(
    url: str, build: Callable[[], tuple[bytes, Mapping[str, str]]], *, delay: float, attempts: int = 3
) -> None:
    """POST a webhook, retrying a few times like the providers do; ``build`` re-signs each attempt."""
    async with httpx.AsyncClient(timeout=5.0, verify=_tls()) as client:
        for attempt in range(1, attempts + 1):
            body, headers = build()
            try:
                response = await client.post(url, content=body, headers=dict(headers))
                if response.is_success:
                    return
            except httpx.HTTPError as err:
                log.debug("email sandbox: webhook attempt %d to %s failed: %s", attempt, url, err)
            await asyncio.sleep(delay)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context (the system's CAs) for every webhook client. httpx loads its CAs anew for each
    client, about 20 ms: the 500 webhooks of one batch kept the emulator's loop busy for seconds, its
    answers to sends waiting behind them."""
    return ssl.create_default_context()


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class ProviderError(Exception):
    """An error the emulator answers in its provider's own shape."""

    def response(self) -> Response:
        raise NotImplementedError


def emulator_app(title: str, state: SandboxState, emulator: object, error: type[ProviderError]) -> FastAPI:
    """A FastAPI app for one emulator: its errors answered in the provider's shape, and the control routes
    (``/_sandbox``); the caller adds the provider's own routes."""
    app = FastAPI(title=title, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.emulator = emulator

    async def provider_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProviderError)
        return exc.response()

    app.add_exception_handler(error, provider_error)
    app.include_router(control_router(state))
    return app
