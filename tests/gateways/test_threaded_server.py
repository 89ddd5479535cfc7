"""The background ASGI server holds its port from the moment it is made: no other process can take the port
between choosing it and serving on it (a suite running many servers side by side saw `address already in use`)."""

from __future__ import annotations

import errno
import socket

import httpx
import pytest
from fastapi import FastAPI

from workers.sandbox.server import ThreadedServer, listening_socket


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


def _bind(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", port))


def test_the_port_is_held_before_the_server_starts() -> None:
    server = ThreadedServer(_app())
    try:
        with pytest.raises(OSError) as raised:
            _bind(server.port)
        assert raised.value.errno == errno.EADDRINUSE
        server.start()
        assert httpx.get(f"{server.url}/ping", timeout=5).json() == {"pong": "yes"}
    finally:
        server.stop()


def test_a_socket_reserved_beforehand_is_the_one_served() -> None:
    """A URL that must be known before the app can be built (the web app's own address in its gateways) comes
    from a socket reserved first and handed to the server later."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    with pytest.raises(OSError):
        _bind(port)
    server = ThreadedServer(_app(), sock=sock).start()
    try:
        assert server.port == port
        assert httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5).status_code == 200
    finally:
        server.stop()
    _bind(port)  # released once stopped
