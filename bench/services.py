"""What the runs stand on: a throw-away PostgreSQL database, a Redis key prefix of their own, and
Postfix's `smtp-sink` (the receiving end, counting every message it takes) and `smtp-source` (the
machine's own SMTP limit). scripts/bench-deps installs Postfix's tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from bench.processes import Group, Started

POSTGRES_ADMIN_URL = os.environ.get("DISPATCH_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DISPATCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SMTP_SINK = "smtp-sink"
SMTP_SOURCE = "smtp-source"


def postfix_tools() -> dict[str, str | None]:
    """Where smtp-sink and smtp-source are (Debian puts them in /usr/sbin, often not on a user's PATH)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    return {tool: shutil.which(tool, path=path) for tool in (SMTP_SINK, SMTP_SOURCE)}


def tools_missing() -> list[str]:
    return [tool for tool, where in postfix_tools().items() if where is None]


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database ``dispatch_bench_<hex>`` on the server of DISPATCH_BENCH_POSTGRES_URL; its URL.
    Dropped at the end, connections and all."""
    name = f"dispatch_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def redis_prefix() -> Iterator[str]:
    """A key prefix of this run's own (DISPATCH_QUEUE_PREFIX); every key under it is deleted at the end."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()


def service_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    try:
        admin = create_engine(POSTGRES_ADMIN_URL)
        with admin.connect() as conn:
            versions["postgresql"] = str(conn.execute(text("SHOW server_version")).scalar())
        admin.dispose()
    except Exception as err:  # the description is informative only
        versions["postgresql"] = f"unknown ({type(err).__name__})"
    try:
        client = redis.Redis.from_url(REDIS_URL)
        versions["redis"] = str(client.info("server")["redis_version"])
        client.close()
    except Exception as err:
        versions["redis"] = f"unknown ({type(err).__name__})"
    return versions


# -- smtp-sink's dump: one message after another, each starting with the sink's own X-Client-Addr line --

MESSAGE_START = b"X-Client-Addr: "
CHUNK = 8 << 20  # bytes parsed at a time: a dump grows by gigabytes at 200,000 copies
MESSAGE_ID = re.compile(rb"^message-id:\s*<([^@>]*)@?[^>]*>", re.IGNORECASE)


@dataclass
class Dump:
    """Reads smtp-sink's dump file as it grows: messages counted, Message-IDs' left parts (our
    references) counted, bytes read. A message is counted when its first line is complete."""

    path: Path
    messages: int = 0
    size: int = 0
    references: Counter[str] = field(default_factory=Counter)
    _offset: int = 0
    _partial: bytes = b""
    _in_headers: bool = False

    def read(self) -> int:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                while chunk := fh.read(CHUNK):
                    self._parse(chunk)
        except FileNotFoundError:
            pass
        return self.messages

    def _parse(self, chunk: bytes) -> None:
        self._offset += len(chunk)
        self.size += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith(MESSAGE_START):
                self.messages += 1
                self._in_headers = True
            elif self._in_headers:
                if line in (b"", b"\r"):
                    self._in_headers = False
                    continue
                found = MESSAGE_ID.match(line)
                if found:
                    self.references[found.group(1).decode(errors="replace")] += 1


@dataclass
class SmtpSink:
    """A running `smtp-sink` on a free port, dumping every message it accepts to ``dump.path``."""

    process: Started
    port: int
    dump: Dump

    def remove_dump(self) -> None:
        shutil.rmtree(self.dump.path.parent, ignore_errors=True)


def start_smtp_sink(group: Group, workdir: Path, *, name: str) -> SmtpSink:
    from workers.sandbox.server import free_port

    tools = postfix_tools()
    if tools[SMTP_SINK] is None:
        raise RuntimeError("smtp-sink is not installed: run scripts/bench-deps (Debian's postfix package)")
    # smtp-sink started as root drops to nobody (-u) before it writes: its dump goes to a folder nobody
    # can reach (a fresh one in the system's temp dir; the bench removes it at the end)
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir if os.geteuid() != 0 else None))
    folder.chmod(0o777)
    dump = folder / "dump"
    port = free_port()
    argv = [tools[SMTP_SINK], "-D", str(dump), "-m", "1000"]
    if os.geteuid() == 0:
        argv += ["-u", "nobody"]
    process = group.start(name, [*argv, f"127.0.0.1:{port}", "1024"], env=dict(os.environ), cwd=folder)
    _wait_for_port(port, process)
    return SmtpSink(process, port, Dump(dump))


def _wait_for_port(port: int, process: Started, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} ended at start: {process.tail()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{process.name} is not listening on {port}: {process.tail()}")


def run_smtp_source(port: int, *, count: int, size: int, sessions: int) -> float:
    """`smtp-source -s SESSIONS -m COUNT -l SIZE` to the sink; its wall time in seconds."""
    tools = postfix_tools()
    assert tools[SMTP_SOURCE] is not None
    argv = [
        tools[SMTP_SOURCE],
        "-s",
        str(sessions),
        "-m",
        str(count),
        "-l",
        str(size),
        "-f",
        "bench@example.org",
        "-t",
        "sink@example.org",
        f"127.0.0.1:{port}",
    ]
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"smtp-source failed ({done.returncode}): {done.stderr.decode(errors='replace')[-500:]}")
    return time.perf_counter() - started
