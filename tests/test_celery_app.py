"""The Celery app takes its time limits, visibility timeout and key prefix from the settings, and gives
reconciliation a queue of its own."""

from __future__ import annotations

from dispatcher.domain.settings import load_settings
from workers.celery_app import make_app

SHORT = {
    "batch_budget_seconds": 2.0,
    "limit_max_wait_seconds": 1.0,
    "task_soft_time_limit_seconds": 4.0,
    "task_time_limit_seconds": 5.0,
    "visibility_timeout_seconds": 30.0,
    "lease_seconds": 8.0,
}


def test_time_limits_and_visibility_timeout_come_from_the_settings() -> None:
    settings = load_settings(**SHORT)
    app = make_app("memory://localhost/", settings=settings)
    try:
        assert app.conf.task_soft_time_limit == 4.0
        assert app.conf.task_time_limit == 5.0
        assert app.conf.broker_transport_options["visibility_timeout"] == 30.0
    finally:
        app.close()


def test_every_key_kombu_writes_carries_the_queue_prefix() -> None:
    """kombu's Redis transport prefixes every key it writes (queues, bindings, unacked, unacked_index,
    unacked_mutex) with ``global_keyprefix``; the queue names themselves stay bare, so a queue's list
    keeps the key it had when the prefix was part of its name. tests/integration/test_processes.py lists
    the keys of a real worker."""
    app = make_app("memory://localhost/", settings=load_settings(**SHORT, queue_prefix="ngo-a-"))
    try:
        assert app.conf.broker_transport_options == {"visibility_timeout": 30.0, "global_keyprefix": "ngo-a-"}
        assert sorted(q.name for q in app.conf.task_queues) == ["copies", "email", "fax", "reconcile"]
    finally:
        app.close()


def test_reconciliation_has_a_queue_of_its_own() -> None:
    """Look-ups never wait in a channel queue behind sends."""
    app = make_app("memory://localhost/", settings=load_settings(**SHORT))
    try:
        route = app.amqp.router.route({}, "dispatch.reconcile", args=([1],))
        assert route["queue"].name == "reconcile"
    finally:
        app.close()
