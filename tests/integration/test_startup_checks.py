"""`dispatch worker`, `scheduler` and `web` check their gateways' credentials at start-up, as real processes.

The Telnyx emulator answers 401 to a wrong key on the list call the check makes (GET /v2/faxes), as the
real API does; the SMTP sink takes the connection. A refused key stops the process with exit code 1 and
a message naming the variable, no traceback; a provider that cannot be reached is a warning, and the
process starts; DISPATCH_CHECK_CREDENTIALS=false skips the check.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest

from workers.sandbox import telnyx as telnyx_sandbox
from workers.sandbox.core import SandboxState
from workers.sandbox.server import ThreadedServer, free_port
from workers.sandbox.smtp_sink import SmtpSink

from ..spawn import base_env, dispatch

API_KEY = "KEYstartup" + secrets.token_hex(4)
REFUSED = "DISPATCH_TELNYX_API_KEY was refused by telnyx (HTTP 401)"


@pytest.fixture(scope="module")
def emulators() -> Iterator[tuple[str, int]]:
    """(Telnyx emulator URL, SMTP sink port)."""
    key = nacl.signing.SigningKey.generate()
    app = telnyx_sandbox.create_app(SandboxState(provider="telnyx"), api_key=API_KEY, signing_key=key)
    server = ThreadedServer(app).start()
    sink = SmtpSink().start()
    try:
        yield server.url, sink.port
    finally:
        sink.stop()
        server.stop()


def env(tmp_path: Path, telnyx_url: str, smtp_port: int, **settings: str) -> dict[str, str]:
    public_key = base64.b64encode(bytes(nacl.signing.SigningKey.generate().verify_key)).decode()
    values = {
        "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "DISPATCH_BROKER_URL": "memory://",
        "DISPATCH_SECRET_KEY": secrets.token_hex(32),
        "DISPATCH_TELNYX_API_KEY": API_KEY,
        "DISPATCH_TELNYX_CONNECTION_ID": "startup-connection",
        "DISPATCH_TELNYX_PUBLIC_KEY": public_key,
        "DISPATCH_TELNYX_BASE_URL": telnyx_url,
        "DISPATCH_SMTP_HOST": "127.0.0.1",
        "DISPATCH_SMTP_PORT": str(smtp_port),
        "DISPATCH_SMTP_SECURITY": "plain",
    }
    return base_env(tmp_path, **{**values, **settings})


@pytest.mark.parametrize("command", [["worker"], ["scheduler"], ["web", "--port", "0"]])
def test_a_refused_key_stops_the_process_naming_the_variable(
    tmp_path: Path, emulators: tuple[str, int], command: list[str]
) -> None:
    process = dispatch(*command, env=env(tmp_path, *emulators, DISPATCH_TELNYX_API_KEY="KEY_wrong"), cwd=tmp_path)
    lines = process.finish(timeout=120)
    output = "\n".join(lines)
    assert process.process.returncode == 1, output
    assert REFUSED in output
    assert "Traceback" not in output and "KEY_wrong" not in output


def test_an_unreachable_provider_is_a_warning_and_the_scheduler_starts(
    tmp_path: Path, emulators: tuple[str, int]
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    scheduler = dispatch("scheduler", env=env(tmp_path, nowhere, emulators[1]), cwd=tmp_path)
    try:
        scheduler.wait_for(lambda line: "ticking every" in line)
    finally:
        lines = scheduler.stop()
    warned = [line for line in lines if "WARNING" in line and "telnyx" in line]
    assert warned and "could not be checked" in warned[0], lines


def test_accepted_credentials_let_the_worker_start(tmp_path: Path, emulators: tuple[str, int]) -> None:
    worker = dispatch("worker", "--concurrency", "1", env=env(tmp_path, *emulators), cwd=tmp_path)
    try:
        worker.wait_for(lambda line: "ready." in line, timeout=120)
    finally:
        lines = worker.stop()
    assert any("telnyx: credentials accepted" in line for line in lines), lines


def test_the_check_can_be_skipped_for_offline_rehearsals(tmp_path: Path, emulators: tuple[str, int]) -> None:
    settings = {"DISPATCH_TELNYX_API_KEY": "KEY_wrong", "DISPATCH_CHECK_CREDENTIALS": "false"}
    scheduler = dispatch("scheduler", env=env(tmp_path, *emulators, **settings), cwd=tmp_path)
    try:
        scheduler.wait_for(lambda line: "ticking every" in line)
    finally:
        scheduler.stop()
