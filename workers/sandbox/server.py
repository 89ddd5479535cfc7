"""Run an ASGI app on a real localhost port in a background thread (tests, demo, `dispatch sandbox serve`)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, for a server in another process. Another process may take it before that server binds
    it; a server in this process uses `listening_socket` (or `ThreadedServer` alone), which holds the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A socket bound to `port` (0: one the kernel chooses) and listening: the port is ours from now on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class ThreadedServer:
    """A uvicorn server on 127.0.0.1 in a daemon thread. Its socket is bound when it is made, so the port is
    known and held before `start` (no pick-then-bind race with other processes)."""

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int | None = None, sock: socket.socket | None = None
    ) -> None:
        self.host = host
        self.sock = sock if sock is not None else listening_socket(host, port or 0)
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name=f"asgi:{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"ASGI server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Shut down gracefully; connections still open after a second (a killed client's keep-alive, a
        request that waits on a lock) are closed rather than waited for."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=1)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout=10)
        self.sock.close()


@contextmanager
def serve(app: Any, *, port: int | None = None) -> Iterator[ThreadedServer]:
    server = ThreadedServer(app, port=port).start()
    try:
        yield server
    finally:
        server.stop()
