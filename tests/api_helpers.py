"""For the JSON API's tests (tests/test_api_*.py): the real app over a TestClient, campaign bodies as TOML
or JSON (inline letter, no file paths), and tokens per role."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import tomli_w
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.processes.api import create_app
from dispatcher.processes.web_context import WebContext

from .builders import EXAMPLE_DIR, api_headers, campaign_data

LETTER_BODY = (EXAMPLE_DIR / "letter.txt.j2").read_text(encoding="utf-8")
TOML = {"Content-Type": "application/toml"}
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def client(factory: sessionmaker[Session], *, secret: bytes | None = None) -> TestClient:
    ctx = WebContext(
        factory=factory,
        gateways={},
        secret=secret,
        retry=RetryPolicy(base_seconds=1.0, cap_seconds=2.0, max_attempts=2, no_fax_tone_limit=2),
        documents=DocumentCache(),
        clock=lambda: NOW,
    )
    return TestClient(create_app(ctx), raise_server_exceptions=False)


def body_data(*, lists: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    """The example campaign as a request body: its letter inline (``letter.body``), no supporters CSV;
    ``lists`` names supporter lists to copy. ``fields`` as builders.campaign_data's."""
    letter = {"template": None, "body": LETTER_BODY, **fields.pop("letter", {})}
    data = campaign_data(letter=letter, supporters_file=None, **fields)
    if lists:
        data["supporters"] = {"lists": lists}
    return data


def toml_body(**fields: Any) -> bytes:
    return tomli_w.dumps(body_data(**fields)).encode()


def json_body(**fields: Any) -> bytes:
    return json.dumps(body_data(**fields), default=str).encode()


class Roles:
    """The Authorization header of one token per role (and one holding every role)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.manager = api_headers(factory, "manager")
        self.operator = api_headers(factory, "operator")
        self.viewer = api_headers(factory, "viewer")
        self.everyone = api_headers(factory, "manager", "operator", "viewer")


def create(http: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = http.post("/api/campaigns", content=toml_body(**fields), headers={**headers, **TOML})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result
