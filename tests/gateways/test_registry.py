"""Gateways are built per channel slot at start-up: a gateway of the wrong channel fails, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.domain.settings import Settings
from dispatcher.processes.web import build_web_app
from workers.gateways.email.smtp import SmtpGateway
from workers.gateways.errors import GatewayConfigError
from workers.runtime import build_gateways

ROOT = Path(__file__).resolve().parents[2]
FAX_SLOT_HOLDS_SMTP = "DISPATCH_FAX_GATEWAY: gateway 'smtp' (provider smtp) sends email, not fax"


@pytest.fixture
def smtp_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Valid SMTP settings, so nothing but the channel can be wrong."""
    for name, value in {"HOST": "127.0.0.1", "PORT": "2525", "SECURITY": "plain"}.items():
        monkeypatch.setenv(f"DISPATCH_SMTP_{name}", value)
    yield


@pytest.fixture
def phaxio_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {"API_KEY": "k", "API_SECRET": "s", "CALLBACK_TOKEN": "t"}.items():
        monkeypatch.setenv(f"DISPATCH_PHAXIO_{name}", value)
    yield


def settings(tmp_path: Path, **values: str) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", _env_file=None, **values)  # type: ignore[call-arg]


def test_the_worker_refuses_an_email_gateway_in_the_fax_slot(tmp_path: Path, smtp_settings: None) -> None:
    with pytest.raises(GatewayConfigError) as caught:
        build_gateways(settings(tmp_path, fax_gateway="smtp", email_gateway="smtp"))
    assert str(caught.value) == FAX_SLOT_HOLDS_SMTP


def test_the_web_app_refuses_an_email_gateway_in_the_fax_slot(tmp_path: Path, smtp_settings: None) -> None:
    with pytest.raises(GatewayConfigError) as caught:
        build_web_app(settings(tmp_path, fax_gateway="smtp", email_gateway="smtp"))
    assert str(caught.value) == FAX_SLOT_HOLDS_SMTP


def test_the_slot_check_names_the_gateway_and_its_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_RELAY_PROVIDER", "smtp")
    monkeypatch.setenv("DISPATCH_RELAY_HOST", "127.0.0.1")
    with pytest.raises(GatewayConfigError) as caught:
        build_gateways(settings(tmp_path, fax_gateway="relay", email_gateway="relay"))
    assert str(caught.value) == "DISPATCH_FAX_GATEWAY: gateway 'relay' (provider smtp) sends email, not fax"


def test_the_channel_is_checked_before_the_gateway_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPATCH_SMTP_HOST", raising=False)  # an incomplete gateway in the wrong slot
    with pytest.raises(GatewayConfigError) as caught:
        build_gateways(settings(tmp_path, fax_gateway="smtp", email_gateway="smtp"))
    assert str(caught.value) == FAX_SLOT_HOLDS_SMTP


def test_a_fax_gateway_in_the_copies_slot_is_refused(
    tmp_path: Path, smtp_settings: None, phaxio_settings: None
) -> None:
    with pytest.raises(GatewayConfigError) as caught:
        build_web_app(settings(tmp_path, fax_gateway="phaxio", email_gateway="smtp", copies_gateway="sinch"))
    assert str(caught.value) == "DISPATCH_COPIES_GATEWAY: gateway 'sinch' (provider sinch) sends fax, not email"


def test_an_unknown_gateway_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(GatewayConfigError, match=r"^DISPATCH_FAX_GATEWAY: unknown gateway provider 'nonsense'"):
        build_gateways(settings(tmp_path, fax_gateway="nonsense"))


def test_matching_slots_build(
    tmp_path: Path, smtp_settings: None, phaxio_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCH_RELAY_PROVIDER", "smtp")
    monkeypatch.setenv("DISPATCH_RELAY_HOST", "127.0.0.1")
    gateways = build_gateways(settings(tmp_path, fax_gateway="phaxio", email_gateway="smtp", copies_gateway="relay"))
    assert {slot: (g.provider, g.name) for slot, g in gateways.items()} == {
        "fax": ("phaxio", "phaxio"),
        "email": ("smtp", "smtp"),
        "copies": ("smtp", "relay"),
    }
    assert isinstance(gateways["copies"], SmtpGateway)


def test_dispatch_worker_exits_1_naming_the_variable(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DISPATCH_")}
    env.update(
        PYTHONPATH=str(ROOT),
        COLUMNS="200",
        DISPATCH_FAX_GATEWAY="smtp",
        DISPATCH_EMAIL_GATEWAY="smtp",
        DISPATCH_SMTP_HOST="127.0.0.1",
        DISPATCH_SMTP_PORT="2525",
        DISPATCH_SMTP_SECURITY="plain",
        DISPATCH_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        DISPATCH_BROKER_URL="memory://",
    )
    run = subprocess.run(
        [sys.executable, "-m", "dispatcher", "worker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    assert FAX_SLOT_HOLDS_SMTP in " ".join(run.stderr.split())
    assert "Traceback" not in run.stderr + run.stdout
