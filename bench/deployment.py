"""One deployment of campaign-dispatch as the bench runs it: its settings (a fresh PostgreSQL database,
a Redis prefix of its own, the gateways pointed at smtp-sink or the emulators) and its real processes:
`dispatch scheduler`, `dispatch worker`, `dispatch web`, and the `dispatch campaign` commands."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import Group, Started
from bench.services import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent


def base_env(**settings: str) -> dict[str, str]:
    """This environment without any DISPATCH_* variable, this checkout's code first, then ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **settings}


@dataclass
class Deployment:
    workdir: Path
    group: Group
    settings: dict[str, str]
    web_port: int | None = None
    emulator_settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls, workdir: Path, group: Group, *, database_url: str, prefix: str, extra: dict[str, str]
    ) -> Deployment:
        from workers.sandbox.server import free_port

        web_port = free_port()
        settings = {
            "DISPATCH_DATABASE_URL": database_url,
            "DISPATCH_BROKER_URL": REDIS_URL,
            "DISPATCH_QUEUE_PREFIX": prefix,
            "DISPATCH_SECRET_KEY": secrets.token_hex(32),
            "DISPATCH_PUBLIC_BASE_URL": f"http://127.0.0.1:{web_port}",
            "DISPATCH_VAR_DIR": str(workdir / "var"),
            **extra,
        }
        return cls(workdir, group, settings, web_port)

    @property
    def env(self) -> dict[str, str]:
        return base_env(**{**self.emulator_settings, **self.settings})

    def dispatch_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "dispatcher", *args]

    def start(self, name: str, *args: str) -> Started:
        return self.group.start(name, self.dispatch_argv(*args), env=self.env, cwd=self.workdir)

    def run(self, *args: str, timeout: float = 3600) -> tuple[float, str]:
        """A `dispatch` command to its end: (wall seconds, its output); RuntimeError if it failed."""
        started = time.perf_counter()
        done = subprocess.run(
            self.dispatch_argv(*args),
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"dispatch {' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-2000:]}")
        return seconds, done.stdout

    def upgrade(self) -> None:
        self.run("db", "upgrade")

    def start_emulators(self, *, latency: float) -> Started:
        """The sandbox emulators in their own process; their settings join this deployment's."""
        oracle_dir = self.workdir / "oracle"
        process = self.group.start(
            "emulators",
            [
                sys.executable,
                "-m",
                "bench.emulators",
                "--oracle-dir",
                str(oracle_dir),
                "--web-url",
                f"http://127.0.0.1:{self.web_port}",
                "--latency",
                str(latency),
            ],
            env=base_env(),
            cwd=ROOT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in process.log.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    self.emulator_settings = json.loads(line)  # this deployment's own settings win
                    return process
            if process.popen.poll() is not None:
                raise RuntimeError(f"the emulators ended at start: {process.tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"the emulators did not start: {process.tail()}")

    def start_web(self) -> Started:
        process = self.start("web", "web", "--port", str(self.web_port))
        _wait_http(f"http://127.0.0.1:{self.web_port}/health", process)
        return process

    def start_scheduler(self) -> Started:
        return self.start("scheduler", "scheduler")

    def start_worker(self, concurrency: int) -> Started:
        return self.start("worker", "worker", "--concurrency", str(concurrency))


def _wait_http(url: str, process: Started, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} ended at start: {process.tail()}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{process.name} did not answer at {url}: {process.tail()}")
