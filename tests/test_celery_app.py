"""The Celery app takes its time limits and visibility timeout from the settings."""

from __future__ import annotations

from dispatcher.domain.settings import load_settings
from workers.celery_app import make_app


def test_time_limits_and_visibility_timeout_come_from_the_settings() -> None:
    settings = load_settings(
        batch_budget_seconds=2.0,
        limit_max_wait_seconds=1.0,
        task_soft_time_limit_seconds=4.0,
        task_time_limit_seconds=5.0,
        visibility_timeout_seconds=30.0,
        lease_seconds=8.0,
    )
    app = make_app("memory://localhost/", settings=settings)
    try:
        assert app.conf.task_soft_time_limit == 4.0
        assert app.conf.task_time_limit == 5.0
        assert app.conf.broker_transport_options == {"visibility_timeout": 30.0}
    finally:
        app.close()
