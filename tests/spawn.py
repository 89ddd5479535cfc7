"""Run `python -m dispatcher ...` as a real process from this checkout and read its output line by line."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


def base_env(home: Path, **settings: str) -> dict[str, str]:
    """A minimal environment: this checkout's code first, no DISPATCH_* variable but ``settings``."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "PYTHONPATH": str(ROOT), **settings}


def dispatch(*args: str, env: dict[str, str], cwd: Path) -> Spawned:
    """``python -m dispatcher ARGS``, as the `dispatch` command."""
    return Spawned([sys.executable, "-m", "dispatcher", *args], env=env, cwd=cwd)


class Spawned:
    """One process with stdout and stderr merged; every line it printed is kept in ``lines``."""

    def __init__(self, command: list[str], *, env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._ended = False  # the reader saw the end of the output
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, wanted: Callable[[str], bool], *, timeout: float = 60.0) -> str:
        """The first new line for which ``wanted`` is true; AssertionError if the process ends or times out first."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout}s; printed so far: {self.lines}") from None
            if line is None:
                self._ended = True
                raise AssertionError(f"process ended ({self.process.wait()}) before such a line: {self.lines}")
            self.lines.append(line)
            if wanted(line):
                return line

    def finish(self, *, timeout: float) -> list[str]:
        """Every line, once the process ended by itself (stopped, and AssertionError, after ``timeout``)."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s: {self.stop()}") from None
        return self.stop()

    def stop(self) -> list[str]:
        """SIGTERM (SIGKILL after 30 s) to the process group; every line it printed."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
        while not self._ended:
            line = self._queue.get(timeout=30)
            self._ended = line is None
            if line is not None:
                self.lines.append(line)
        return self.lines
