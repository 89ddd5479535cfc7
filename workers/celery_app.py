"""The Celery app. Messages carry only delivery ids; the ledger decides what is sent.

Each setting below is chosen for "never twice, never lose one" (see ARCHITECTURE.md and
../shared/research/celery-delivery.md):

- ``task_acks_late``: a message is acknowledged after its task ran, so a worker that dies mid-task
  does not lose it. The redelivered copy is harmless: the ledger's compare-and-set claim refuses
  a delivery that is no longer ``queued``.
- ``task_reject_on_worker_lost``: a child killed by a signal (OOM, SIGKILL) requeues its message
  instead of acking it. It cannot loop into a second send, for the same reason.
- ``worker_prefetch_multiplier = 1``: a worker holds one message at a time; a slow fax never
  strands ready messages behind it in another worker's buffer.
- ``visibility_timeout`` (Redis) above every time limit: Redis redelivers an unacked message after
  this long, so it must exceed the longest task (hard limit) and any wait inside it.
- soft and hard time limits: a stuck gateway call is ended; a task killed by the hard limit stops
  renewing its claim's lease, which then turns the row ``unknown``.
- no Celery retries and no ETA tasks: retries and schedules live in the database (``retry_wait``
  with ``not_before``), because Redis re-runs ETA tasks after the visibility timeout.
- ``global_keyprefix`` (kombu's Redis transport): DISPATCH_QUEUE_PREFIX leads every key kombu writes,
  the queues' lists and bindings and also ``unacked``, ``unacked_index`` and ``unacked_mutex``, which
  would otherwise be shared by every deployment on one Redis (one deployment's restore of "visible"
  messages would then take another's). The queue names stay bare: a queue's list keeps the key it had
  when the prefix was part of its name.
- reconciliation (``dispatch.reconcile``) has its own queue, ``reconcile``, which every worker consumes
  by default: a look-up never waits in a channel queue behind a backlog of sends. A worker whose pool
  processes are all busy sending takes it up when one is free; a worker on ``reconcile`` alone (the
  deployment examples run one) never waits for a send.
"""

from __future__ import annotations

from celery import Celery
from kombu.entity import Exchange, Queue

from dispatcher.domain.settings import Settings, get_settings

CHANNEL_QUEUES = ("fax", "email", "copies")
RECONCILE_QUEUE = "reconcile"
QUEUES = (*CHANNEL_QUEUES, RECONCILE_QUEUE)
# A task carries a batch of ids. It starts no new delivery after DISPATCH_BATCH_BUDGET_SECONDS (240 s by
# default); one delivery takes at most the limiter's wait (DISPATCH_LIMIT_MAX_WAIT_SECONDS, 30 s) +
# rendering + one HTTP call (65 s), so the soft limit (600 s) is never reached in a healthy worker. The
# hard limit (660 s) is below the visibility timeout (3600 s); the settings refuse any other order at
# start-up. The worker path keeps to the budget (WorkerContext.batch_budget). The claim's lease (60 s)
# need not outlast the task: the worker renews it while it works on a send (workers/lease.py), and a
# task killed by the hard limit stops renewing it like a killed worker.


def queue_name(queue: str) -> str:
    """The broker queue of ``queue`` (one of QUEUES): its bare name; DISPATCH_QUEUE_PREFIX is in every
    Redis key instead (``global_keyprefix``)."""
    return queue


# kombu's Redis transport keeps a queue's messages of priority p > 0 in "<queue>\x06\x16<p>"
PRIORITY_SEP, PRIORITY_STEPS = "\x06\x16", (3, 6, 9)


def broker_keys(queue: str, prefix: str) -> list[str]:
    """The Redis lists holding the messages waiting on ``queue``: its list and its priority lists, under
    DISPATCH_QUEUE_PREFIX (``prefix``). Their LLENs add up to the queue's depth."""
    name = f"{prefix}{queue_name(queue)}"
    return [name, *(f"{name}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS)]


def make_app(broker_url: str | None = None, *, settings: Settings | None = None) -> Celery:
    """The app with the settings' broker (unless ``broker_url``), time limits, visibility timeout and
    key prefix."""
    settings = settings or get_settings()
    app = Celery("campaign_dispatch", broker=broker_url or settings.broker_url, include=["workers.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit_seconds,
        task_time_limit=settings.task_time_limit_seconds,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_seconds,
            "global_keyprefix": settings.queue_prefix,
        },
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        # one exchange and routing key per queue: a message lands in exactly the queue it names
        task_queues=[Queue(q, Exchange(q), routing_key=q) for q in QUEUES],
        task_default_queue="email",
        task_routes={"dispatch.reconcile": {"queue": RECONCILE_QUEUE}},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


app = make_app()
