"""The naive baseline for supporter copies: one Celery task per email, a new SMTP connection for each,
one row UPDATE per send, on the same PostgreSQL, Redis and smtp-sink as the real run.

The bench creates the table ``naive_copies`` in the run's database, publishes one task per row, and runs
``celery -A bench.naive worker`` (prefork, the same concurrency as `dispatch worker`) with
BENCH_NAIVE_DATABASE_URL, BENCH_NAIVE_BROKER_URL, BENCH_NAIVE_PREFIX and BENCH_NAIVE_SMTP (host:port)
in its environment. Each message carries the same size of body as the real copies and a Message-ID
``<naive-ROW@bench.example.org>``, so the sink counts each row's arrivals.
"""

from __future__ import annotations

import os
import smtplib
from email.message import EmailMessage
from email.utils import formatdate

from celery import Celery
from sqlalchemy import create_engine, text

QUEUE = "naive"


def make_app(broker_url: str, prefix: str) -> Celery:
    celery = Celery("bench_naive", broker=broker_url)
    celery.conf.update(
        broker_transport_options={"global_keyprefix": prefix},
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return celery


app = make_app(
    os.environ.get("BENCH_NAIVE_BROKER_URL", "redis://127.0.0.1:6379/0"),
    os.environ.get("BENCH_NAIVE_PREFIX", "bench-naive-"),
)

_engine = None


def _db():  # type: ignore[no-untyped-def]
    global _engine
    if _engine is None:
        _engine = create_engine(os.environ["BENCH_NAIVE_DATABASE_URL"], pool_size=1)
    return _engine


def message(row: int, *, to: str, body_bytes: int) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "china-advocacy@example.org"
    mail["To"] = to
    mail["Subject"] = "Detention of nine North Korean refugees"
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = f"<naive-{row}@bench.example.org>"
    line = "We ask that the authorities allow independent monitors access to the detainees.\n"
    mail.set_content((line * (body_bytes // len(line) + 1))[:body_bytes])
    return mail


@app.task(name="naive.send_copy")
def send_copy(row: int, to: str, body_bytes: int) -> None:
    host, port = os.environ["BENCH_NAIVE_SMTP"].rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=30) as smtp:  # a new connection for every email
        smtp.send_message(message(row, to=to, body_bytes=body_bytes))
    with _db().begin() as conn:  # one UPDATE per send
        conn.execute(text("UPDATE naive_copies SET state = 'sent', sent_at = now() WHERE id = :id"), {"id": row})


def create_table(url: str, rows: int) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE naive_copies (id integer PRIMARY KEY, email text NOT NULL, "
                "state text NOT NULL DEFAULT 'planned', sent_at timestamptz)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO naive_copies (id, email) SELECT i, 'supporter' || i || '@example.org' "
                "FROM generate_series(1, :n) AS i"
            ),
            {"n": rows},
        )
    engine.dispose()


def publish(rows: int, *, body_bytes: int, broker_url: str, prefix: str) -> None:
    """One task per row, each naming its row and address (as a naive design would)."""
    publisher = make_app(broker_url, prefix)
    with publisher.producer_or_acquire() as producer:
        for row in range(1, rows + 1):
            publisher.send_task(
                "naive.send_copy", args=[row, f"supporter{row}@example.org", body_bytes], queue=QUEUE, producer=producer
            )
    publisher.close()


def sent(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT state, count(*) FROM naive_copies GROUP BY state")).all())
    engine.dispose()
    return {str(k): int(v) for k, v in counts.items()}
