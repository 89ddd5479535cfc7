"""Settings: malformed or misordered values fail at start-up, naming the DISPATCH_* variables to fix."""

from __future__ import annotations

import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from dispatcher.domain.errors import SettingsError
from dispatcher.domain.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent

# a consistent set of short limits, as a test deployment would use
SHORT = {
    "batch_budget_seconds": 2.0,
    "limit_max_wait_seconds": 1.0,
    "task_soft_time_limit_seconds": 4.0,
    "task_time_limit_seconds": 5.0,
    "visibility_timeout_seconds": 30.0,
    "lease_seconds": 8.0,
}


def test_defaults_and_a_consistent_short_set_load() -> None:
    load_settings()
    settings = load_settings(**SHORT)
    assert settings.task_time_limit_seconds == 5.0


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            {"batch_budget_seconds": 3.5},  # 3.5 + 1 is not below the soft limit of 4
            [
                "DISPATCH_BATCH_BUDGET_SECONDS",
                "DISPATCH_LIMIT_MAX_WAIT_SECONDS",
                "DISPATCH_TASK_SOFT_TIME_LIMIT_SECONDS",
            ],
        ),
        (
            {"task_soft_time_limit_seconds": 5.0},  # equal to the hard limit
            ["DISPATCH_TASK_SOFT_TIME_LIMIT_SECONDS", "DISPATCH_TASK_TIME_LIMIT_SECONDS"],
        ),
        (
            {"visibility_timeout_seconds": 5.0},
            ["DISPATCH_TASK_TIME_LIMIT_SECONDS", "DISPATCH_VISIBILITY_TIMEOUT_SECONDS"],
        ),
        (
            {"lease_seconds": 1.0},  # equal to the longest wait for a limit, before the send
            ["DISPATCH_LIMIT_MAX_WAIT_SECONDS", "DISPATCH_LEASE_SECONDS"],
        ),
        (
            {"poll_after_seconds": 40.0, "report_wait_seconds": 30.0},  # held before its first poll
            ["DISPATCH_POLL_AFTER_SECONDS", "DISPATCH_REPORT_WAIT_SECONDS"],
        ),
    ],
)
def test_misordered_time_limits_name_the_variables(change: dict[str, float], named: list[str]) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(**{**SHORT, **change})
    for variable in named:
        assert variable in str(caught.value)


def test_misordered_time_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_LEASE_SECONDS", "20")  # below the default wait for a limit of 30 s
    with pytest.raises(SettingsError, match="DISPATCH_LEASE_SECONDS"):
        load_settings()


def test_every_ordering_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        # the hard limit above the visibility timeout, and the lease below the wait for a limit
        load_settings(**{**SHORT, "task_time_limit_seconds": 40.0, "lease_seconds": 0.5})
    assert "DISPATCH_VISIBILITY_TIMEOUT_SECONDS" in str(caught.value)
    assert "DISPATCH_LEASE_SECONDS" in str(caught.value)


def test_a_renewed_lease_may_be_shorter_than_the_task() -> None:
    """The worker renews its lease while it works on a send: a lease of a few seconds suits a long task."""
    settings = load_settings(**{**SHORT, "lease_seconds": 3.0})
    assert (settings.lease_seconds, settings.task_time_limit_seconds) == (3.0, 5.0)


def test_the_lease_is_a_minute_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DISPATCH_LEASE_SECONDS", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file here
    assert load_settings().lease_seconds == 60.0


def test_log_level_is_case_insensitive_and_checked() -> None:
    assert load_settings(log_level="warning").log_level == "WARNING"
    with pytest.raises(SettingsError, match="DISPATCH_LOG_LEVEL"):
        load_settings(log_level="LOUD")


def test_log_format_is_checked() -> None:
    with pytest.raises(SettingsError, match="DISPATCH_LOG_FORMAT"):
        load_settings(log_format="xml")


def test_a_process_refuses_to_start_on_misordered_limits(tmp_path: Path) -> None:
    """Through the real entry point: a message naming the variables, not a traceback."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),  # this checkout's code, whatever is installed
        "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "DISPATCH_TASK_SOFT_TIME_LIMIT_SECONDS": "700",
    }
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "scheduler"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "DISPATCH_TASK_SOFT_TIME_LIMIT_SECONDS" in result.stderr
    assert "DISPATCH_TASK_TIME_LIMIT_SECONDS" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("key", ["tiny-key", "s3cr3t-but-only-31-characters-!"])
def test_a_short_secret_key_is_refused_naming_the_variable_not_the_value(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCH_SECRET_KEY", key)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "DISPATCH_SECRET_KEY" in str(caught.value)
    assert "32" in str(caught.value)
    assert key not in str(caught.value)
    assert key not in "".join(traceback.format_exception(caught.value))  # nor in a chained error


def test_a_secret_key_of_32_characters_is_accepted() -> None:
    key = "k" * 32
    settings = load_settings(secret_key=key)
    assert settings.secret_key is not None and settings.secret_key.get_secret_value() == key


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("smtp=fast", "entry 1 ('smtp=fast')"),
        ("telnyx=5/s,smtp=0/s", "entry 2 ('smtp=0/s')"),
        ("smtp=5/m", "entry 1 ('smtp=5/m')"),
        ("smtp=5/s:", "entry 1 ('smtp=5/s:')"),
        ("smtp=5/s,smtp=6/s", "entry 2 names gateway 'smtp' a second time"),
    ],
)
def test_a_malformed_gateway_limit_is_refused_naming_the_variable(
    value: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCH_GATEWAY_LIMITS", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "DISPATCH_GATEWAY_LIMITS" in str(caught.value)
    assert said in str(caught.value)


def test_a_limit_for_a_gateway_no_slot_names_is_refused() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(fax_gateway="telnyx", email_gateway="smtp", gateway_limits="smtp=50/s,postmrk=5/s")
    assert "DISPATCH_GATEWAY_LIMITS" in str(caught.value)
    assert "'postmrk'" in str(caught.value)
    assert "configured: smtp, telnyx" in str(caught.value)


def test_gateway_limits_for_the_configured_gateways_are_read() -> None:
    settings = load_settings(copies_gateway="postmark", gateway_limits=" smtp=200/s:20 , postmark=50/s")
    overrides = settings.gateway_limit_overrides
    assert {name: (limit.per_second, limit.in_flight) for name, limit in overrides.items()} == {
        "smtp": (200, 20),
        "postmark": (50, None),
    }


def test_a_process_refuses_to_start_on_malformed_gateway_limits(tmp_path: Path) -> None:
    """Through the real entry point: a message naming the variable, not a traceback."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "DISPATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "DISPATCH_GATEWAY_LIMITS": "smtp=lots",
    }
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher", "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert "DISPATCH_GATEWAY_LIMITS" in result.stderr
    assert "entry 1 ('smtp=lots')" in result.stderr
    assert "Traceback" not in result.stderr
