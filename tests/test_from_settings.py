"""Intervals and limits come from Settings only: the worker's, the scheduler's and the retry policy's
dataclasses have no defaults of their own, and ``from_settings`` reads each DISPATCH_* value."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from dispatcher.domain.gateway_pauses import BreakerConfig
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.scheduling import SchedulerConfig
from dispatcher.domain.settings import load_settings
from workers.delivery import WorkerContext

SETTINGS = load_settings(
    retry_base_seconds=3.0,
    retry_cap_seconds=30.0,
    max_attempts=5,
    no_fax_tone_limit=3,
    lease_seconds=720.0,  # above the longest wait for a limit (30 s), as the settings require
    fax_gap_seconds=45.0,
    reconcile_grace_seconds=12.0,
    report_wait_seconds=23.0,
    batch_budget_seconds=100.0,
    publish_batch_size=7,
    claim_limit=11,
    max_queued_per_queue=5,
    republish_after_seconds=13.0,
    reconcile_every_seconds=17.0,
    poll_after_seconds=19.0,
    fax_gateway="phaxio",
    email_gateway="postmark",
    breaker_failures=3,
    breaker_window_seconds=23.0,
    breaker_cooldown_seconds=29.0,
)


@pytest.mark.parametrize(
    ("cls", "names"),
    [
        (RetryPolicy, {"base_seconds", "cap_seconds", "max_attempts", "no_fax_tone_limit"}),
        (
            SchedulerConfig,
            {"batch_size", "batch_sizes", "claim_limit", "republish_after", "reconcile_every", "poll_after"},
        ),
        (BreakerConfig, {"failures", "window", "cooldown"}),
        (WorkerContext, {"retry", "lease", "fax_gap", "reconcile_grace", "report_wait", "batch_budget"}),
    ],
)
def test_no_interval_or_limit_has_a_default_of_its_own(cls: type, names: set[str]) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        assert fields[name].default is dataclasses.MISSING, name
        assert fields[name].default_factory is dataclasses.MISSING, name


def test_retry_policy_from_settings() -> None:
    assert RetryPolicy.from_settings(SETTINGS) == RetryPolicy(
        base_seconds=3.0, cap_seconds=30.0, max_attempts=5, no_fax_tone_limit=3
    )
    assert RetryPolicy.from_settings(SETTINGS, max_attempts=2).max_attempts == 2


def test_scheduler_config_from_settings() -> None:
    assert SchedulerConfig.from_settings(SETTINGS) == SchedulerConfig(
        batch_size=7,
        batch_sizes={"fax": 4},  # DISPATCH_FAX_PUBLISH_BATCH_SIZE is left at its default
        claim_limit=11,
        max_queued_per_queue=5,
        republish_after=timedelta(seconds=13),
        reconcile_every=timedelta(seconds=17),
        poll_after=timedelta(seconds=19),
        gateways={"fax": "phaxio", "email": "postmark", "copies": "postmark"},  # copies: email's gateway
    )
    quick = SchedulerConfig.from_settings(SETTINGS, poll_after=timedelta(seconds=1))
    assert (quick.poll_after, quick.batch_size) == (timedelta(seconds=1), 7)


def test_breaker_config_from_settings() -> None:
    assert BreakerConfig.from_settings(SETTINGS) == BreakerConfig(
        failures=3, window=timedelta(seconds=23), cooldown=timedelta(seconds=29)
    )
    assert BreakerConfig.from_settings(SETTINGS, failures=1).failures == 1


def test_worker_context_from_settings() -> None:
    worker = WorkerContext.from_settings(SETTINGS, factory=None, gateways={})  # type: ignore[arg-type]
    assert worker.retry == RetryPolicy(base_seconds=3.0, cap_seconds=30.0, max_attempts=5, no_fax_tone_limit=3)
    assert (worker.lease, worker.fax_gap, worker.reconcile_grace, worker.report_wait, worker.batch_budget) == (
        timedelta(seconds=720),
        timedelta(seconds=45),
        timedelta(seconds=12),
        timedelta(seconds=23),
        timedelta(seconds=100),
    )
    quick = WorkerContext.from_settings(SETTINGS, factory=None, gateways={}, fax_gap=timedelta(0))  # type: ignore[arg-type]
    assert (quick.fax_gap, quick.lease) == (timedelta(0), timedelta(seconds=720))


def test_the_lease_is_the_settings_one_minute_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The worker's lease once defaulted to 10 minutes of its own while the settings said otherwise."""
    monkeypatch.delenv("DISPATCH_LEASE_SECONDS", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file here
    worker = WorkerContext.from_settings(load_settings(), factory=None, gateways={})  # type: ignore[arg-type]
    assert worker.lease == timedelta(seconds=60)
