"""Logging of real `dispatch` processes: DISPATCH_LOG_FORMAT=json gives one JSON object a line (ours,
Celery's and uvicorn's records alike), DISPATCH_LOG_LEVEL filters, and signed document URLs never
appear whole in the logs."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher.domain.media import make_token
from dispatcher.domain.settings import load_settings
from dispatcher.processes.logs import configure_logging
from workers.sandbox.server import free_port

from .spawn import base_env, dispatch

SECRET = "s" * 40
PUBLIC_KEY = "a2W+JI9/H1Ysx7DDdx8+wtMj9CzHJ53Om+ZVbMjdseQ="  # any 32 bytes, base64


def gateway_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A SQLite ledger in tmp and gateway settings that are never called (no credential check either)."""
    return base_env(
        tmp_path,
        DISPATCH_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        DISPATCH_CHECK_CREDENTIALS="false",
        DISPATCH_SECRET_KEY=SECRET,
        DISPATCH_TELNYX_API_KEY="KEYtest",
        DISPATCH_TELNYX_CONNECTION_ID="test-connection",
        DISPATCH_TELNYX_PUBLIC_KEY=PUBLIC_KEY,
        DISPATCH_SMTP_HOST="127.0.0.1",
        **settings,
    )


def records(lines: list[str]) -> list[dict[str, Any]]:
    """Every line as a JSON object with level, logger and message (json.loads fails the test otherwise)."""
    parsed = [json.loads(line) for line in lines]
    for record in parsed:
        assert {"level", "logger", "message"} <= record.keys(), record
    return parsed


def test_scheduler_logs_json_lines(tmp_path: Path) -> None:
    env = gateway_env(tmp_path, DISPATCH_LOG_FORMAT="json")
    scheduler = dispatch("scheduler", env=env, cwd=tmp_path)
    try:
        scheduler.wait_for(lambda line: "ticking every" in line)
    finally:
        lines = scheduler.stop()
    parsed = records(lines)
    started = [r for r in parsed if "ticking every" in r["message"]]
    assert started and started[0]["level"] == "INFO"
    assert started[0]["logger"].startswith("dispatcher")


def test_plain_commands_log_through_the_same_configuration(tmp_path: Path) -> None:
    env = gateway_env(tmp_path, DISPATCH_LOG_FORMAT="json")
    upgrade = dispatch("db", "upgrade", env=env, cwd=tmp_path)
    lines = upgrade.finish(timeout=120)
    assert upgrade.process.returncode == 0, lines
    logged = records([line for line in lines if line.startswith("{")])
    assert any(r["logger"].startswith("alembic") and r["level"] == "INFO" for r in logged), lines
    assert any("ledger at revision" in line for line in lines)  # the command's own output is still there


class Web:
    """A real `dispatch web` process, asked for a signed document URL and sent a forged webhook."""

    def __init__(self, tmp_path: Path, **settings: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = make_token(1, secret=SECRET.encode(), now=datetime.now(UTC))
        env = gateway_env(tmp_path, **settings)
        self.process = dispatch("web", "--port", str(self.port), env=env, cwd=tmp_path)

    def run(self) -> list[str]:
        """Every line printed up to the forged webhook's warning, and after it until stopped."""
        try:
            self._get_media_until_up()
            refused = httpx.post(f"{self.base}/webhooks/telnyx", content=b"{}", timeout=10)
            assert 400 <= refused.status_code < 500
            self.process.wait_for(lambda line: "webhook for telnyx refused" in line)
        finally:
            self.process.stop()
        return self.process.lines

    def _get_media_until_up(self) -> None:
        for _ in range(300):
            try:
                httpx.get(f"{self.base}/media/{self.token}.pdf", timeout=10)
                return
            except httpx.TransportError:
                if self.process.process.poll() is not None:
                    raise AssertionError(f"dispatch web ended: {self.process.stop()}") from None
                time.sleep(0.2)
        raise AssertionError(f"dispatch web never answered: {self.process.stop()}")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_web_access_log_shows_document_requests_without_their_token(tmp_path: Path, log_format: str) -> None:
    web = Web(tmp_path, DISPATCH_LOG_FORMAT=log_format)
    lines = web.run()
    signature = web.token.split(".")[1]
    assert not [line for line in lines if signature in line or web.token in line]
    access = [line for line in lines if "GET /media/" in line]
    assert access, lines  # the request is logged, without its token
    if log_format == "json":
        parsed = records(lines)
        assert any(r["logger"] == "uvicorn.access" and "GET /media/" in r["message"] for r in parsed)
        assert any(r["logger"] == "dispatcher.processes.api" and r["level"] == "WARNING" for r in parsed)


def test_warning_level_hides_info_lines(tmp_path: Path) -> None:
    """The same requests as above at DISPATCH_LOG_LEVEL=WARNING: the warning, and no access line."""
    web = Web(tmp_path, DISPATCH_LOG_FORMAT="json", DISPATCH_LOG_LEVEL="WARNING")
    parsed = records(web.run())
    assert [r["level"] for r in parsed if "webhook for telnyx refused" in r["message"]] == ["WARNING"]
    assert [r for r in parsed if r["level"] in ("DEBUG", "INFO")] == []


@pytest.mark.redis
def test_worker_and_celery_log_json_lines(tmp_path: Path) -> None:
    env = gateway_env(
        tmp_path,
        DISPATCH_LOG_FORMAT="json",
        DISPATCH_BROKER_URL="redis://127.0.0.1:6379/0",
        DISPATCH_QUEUE_PREFIX=f"test-logs-{uuid.uuid4().hex[:8]}-",
    )
    worker = dispatch("worker", "--concurrency", "1", env=env, cwd=tmp_path)
    try:
        worker.wait_for(lambda line: "ready." in line, timeout=120)
        lines = worker.lines[:]  # up to ready: Celery's shutdown notices are printed, not logged
    finally:
        worker.stop()
    parsed = records(lines)  # no banner, and Celery's SecurityWarning (root user) is a record too
    ready = [r for r in parsed if r["message"].endswith("ready.")]
    assert ready and ready[0]["logger"].startswith("celery") and ready[0]["level"] == "INFO"


def test_document_urls_are_redacted_in_every_logger(tmp_path: Path) -> None:
    log_file = tmp_path / "dispatch.log"
    configure_logging(load_settings(log_format="text"), file=log_file)
    token = make_token(7, secret=SECRET.encode(), now=datetime.now(UTC))
    logging.getLogger("httpx").info('HTTP Request: GET %s "HTTP/1.1 200 OK"', f"http://web/media/{token}.pdf")
    logging.getLogger("dispatcher.test").warning("fetching http://web/media/%s.pdf?x=1 failed", token)
    text = log_file.read_text()
    assert token not in text and token.split(".")[1] not in text
    assert text.count("/media/<redacted>.pdf") == 2
    assert "HTTP Request: GET" in text and "failed" in text
