"""The deployment examples in config/deploy/ name real commands and settings: every command in the
Procfile and every ExecStart of the systemd units is a `dispatch` subcommand with options it accepts,
the environment file lists every setting with its default, and Redis accepts the config snippet."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import typer
from typer.core import TyperGroup

from dispatcher.domain.settings import Settings, load_settings
from dispatcher.processes.cli import app
from workers.celery_app import QUEUES
from workers.sandbox.server import free_port

from .spawn import ROOT, base_env

DEPLOY = ROOT / "config" / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
# what the service manager substitutes before running a command
SUBSTITUTIONS = {"$PORT": "8000", "%i": "fax"}


def procfile_commands() -> list[str]:
    lines = (DEPLOY / "Procfile").read_text().splitlines()
    return [line.split(":", 1)[1].strip() for line in lines if line.strip() and not line.startswith("#")]


def unit_commands() -> list[str]:
    lines = [line for unit in UNITS for line in unit.read_text().splitlines()]
    return [line.split("=", 1)[1] for line in lines if re.match(r"ExecStart(Pre)?=", line)]


def dispatch_args(command: str) -> list[str]:
    for name, value in SUBSTITUTIONS.items():
        command = command.replace(name, value)
    program, *args = shlex.split(command)
    assert Path(program).name == "dispatch", command
    return args


def parse(args: list[str]) -> tuple[str, dict[str, object]]:
    """The subcommand's path and its parsed options, as `dispatch` would take them (without running it)."""
    command: Any = typer.main.get_command(app)  # typer's own copy of click
    path: list[str] = []
    while isinstance(command, TyperGroup):
        name, args = args[0], args[1:]
        found = command.get_command(typer.Context(command), name)
        assert found is not None, f"no subcommand {name!r} in `dispatch {' '.join(path)}`"
        command, path = found, [*path, name]
    context = command.make_context(" ".join(path), list(args))  # unknown options and bad values raise here
    return " ".join(path), context.params


@pytest.fixture(scope="module")
def commands() -> list[list[str]]:
    found = [dispatch_args(c) for c in procfile_commands() + unit_commands()]
    # release, web, scheduler, worker, reconciler; web (and its upgrade), scheduler, worker
    assert len(UNITS) == 3 and len(found) == 5 + 4
    return found


def test_every_command_parses_as_a_dispatch_subcommand(commands: list[list[str]]) -> None:
    parsed = dict(parse(args) for args in commands)
    assert set(parsed) == {"db upgrade", "web", "scheduler", "worker"}
    for args in commands:
        name, params = parse(args)
        if name == "worker":
            assert set(str(params["queues"]).split(",")) <= set(QUEUES), args


def test_the_procfile_serves_every_queue_and_reconciliation_on_its_own() -> None:
    """Look-ups at the provider have a worker of their own: they never wait for a pool process that sends."""
    workers = [params for name, params in (parse(dispatch_args(c)) for c in procfile_commands()) if name == "worker"]
    queues = [str(params["queues"]).split(",") for params in workers]
    assert sorted(q for names in queues for q in names) == sorted(QUEUES)
    assert ["reconcile"] in queues


def test_every_command_is_accepted_by_the_real_dispatch(commands: list[list[str]], tmp_path: Path) -> None:
    """`dispatch <sub> <options> --help`, as a process: an unknown subcommand or option exits non-zero."""
    for args in commands:
        result = subprocess.run(
            [sys.executable, "-m", "dispatcher", *args, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=base_env(tmp_path),
        )
        assert result.returncode == 0 and "Usage:" in result.stdout, (args, result.stdout, result.stderr)


def test_units_read_the_environment_file_and_the_worker_is_a_template() -> None:
    for unit in UNITS:
        assert "EnvironmentFile=/etc/campaign-dispatch/dispatch.env" in unit.read_text(), unit.name
    assert {u.name for u in UNITS} == {"dispatch-web.service", "dispatch-scheduler.service", "dispatch-worker@.service"}


def example_settings() -> dict[str, str]:
    """``# DISPATCH_NAME=value`` lines of the example environment file, as {name: value}."""
    text = (DEPLOY / "dispatch.env.example").read_text()
    assert all(line == "" or line.startswith("#") for line in text.splitlines()), "every line stays commented out"
    return dict(re.findall(r"^# DISPATCH_([A-Z0-9_]+)=(.*)$", text, flags=re.MULTILINE))


def test_example_environment_lists_every_setting_with_its_default() -> None:
    listed = example_settings()
    for name, field in Settings.model_fields.items():
        assert name.upper() in listed, f"DISPATCH_{name.upper()} is missing from dispatch.env.example"
        value = listed[name.upper()]
        if field.default is None or field.default == "":
            assert value == "", name
        else:
            assert getattr(load_settings(**{name: value}), name) == field.default, (name, value)


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    """A throw-away redis-server started with the snippet (and its own port and directory)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    conf = DEPLOY / "redis" / "dispatch.conf"
    process = subprocess.Popen(
        [server, str(conf), "--port", str(port), "--dir", str(tmp_path), "--save", "", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_redis_accepts_the_config_snippet(redis_port: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=redis_port, socket_timeout=5, decode_responses=True)
    for _ in range(150):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    client.close()
