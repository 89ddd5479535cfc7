"""Processes the bench starts: each in a session (process group) of its own, its output in a log file,
stopped by its group id; and the peak resident memory of every process in those groups."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Started:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Group:
    """Every process one run started; ``stop_all`` ends each process group (SIGTERM, then SIGKILL)."""

    logs: Path
    started: list[Started] = field(default_factory=list)
    _numbered: int = 0

    def start(self, name: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path) -> Started:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._numbered += 1
        log = self.logs / f"{self._numbered:02d}-{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        process = Started(name, popen, log)
        self.started.append(process)
        return process

    def stop(self, process: Started, *, grace: float = 5.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.popen.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        # a pool child that outlived its parent is still in the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process in self.started:
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.started)):
            self.stop(process)

    def dead(self) -> list[Started]:
        return [p for p in self.started if p.popen.poll() is not None]


def group_members(pgid: int) -> list[int]:
    """The pids of the processes in process group ``pgid`` (from /proc)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def status_kib(pid: int, key: str) -> int | None:
    """A ``kB`` line of /proc/PID/status (VmHWM: the peak resident set; VmRSS: the current one)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class MemoryWatch:
    """Samples the peak RSS (VmHWM) of every process in the watched groups every ``every`` seconds, and
    keeps each pid's highest value: a pool child replaced mid-run keeps its own entry."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.watched: list[Started] = []
        self.peaks: dict[tuple[str, int], int] = {}  # (role, pid) -> KiB
        self.roles: dict[tuple[str, int], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)

    def watch(self, process: Started) -> None:
        self.watched.append(process)

    def start(self) -> MemoryWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        for process in list(self.watched):
            for pid in group_members(process.pid):
                peak = status_kib(pid, "VmHWM")
                if peak is None:
                    continue
                key = (process.name, pid)
                if peak > self.peaks.get(key, 0):
                    self.peaks[key] = peak
                if key not in self.roles:
                    self.roles[key] = "main" if pid == process.pid else _role(command_line(pid))

    def by_process(self) -> list[tuple[str, int, str, float]]:
        """(name, pid, role, peak MiB) for each process seen, in the order first seen."""
        return [(name, pid, self.roles.get((name, pid), ""), kib / 1024) for (name, pid), kib in self.peaks.items()]


def _role(cmdline: str) -> str:
    return "pool child" if "celery" in cmdline or "dispatcher" in cmdline else cmdline[:40]
