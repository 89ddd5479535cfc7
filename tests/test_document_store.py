"""A fax is rendered once: the worker that renders it keeps its bytes in Redis for a while, and `dispatch web`
serves the provider those bytes instead of rendering the PDF again (issue "Throughput": the web process
rendered every fax a second time when its provider fetched it). Real Redis, real rendering, the real web app."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.db import transaction
from dispatcher.domain.media import media_url
from dispatcher.domain.models import Campaign, Delivery, utcnow
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.rendering.fax import FaxDocument
from dispatcher.domain.settings import Settings
from workers.delivery import WorkerContext
from workers.document_store import RedisDocuments, shared_documents

from .integration import conftest as integration
from .integration.conftest import Sandbox
from .test_media import send_wang_fax

sandbox, worker = integration.sandbox, integration.worker

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def store() -> Iterator[RedisDocuments]:
    client = redis.Redis.from_url(REDIS_URL)
    namespace = f"test-documents-{secrets.token_hex(6)}:"
    yield RedisDocuments(client, namespace=namespace)
    for key in client.scan_iter(f"{namespace}*"):
        client.delete(key)


class Counting(DocumentCache):
    """A process's cache that counts the faxes it really renders (the rendering itself is the real one)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.renders = 0

    def _render_fax(self, delivery: Delivery) -> FaxDocument:
        self.renders += 1
        return super()._render_fax(delivery)


def _fax(factory: sessionmaker[Session], delivery_id: int) -> tuple[Session, Delivery]:
    session = factory()
    delivery = session.get(Delivery, delivery_id)
    assert delivery is not None
    return session, delivery


def test_a_second_process_gets_the_rendered_bytes_without_rendering(
    factory: sessionmaker[Session],
    worker: WorkerContext,
    sandbox: Sandbox,
    tmp_path: Path,
    store: RedisDocuments,
) -> None:
    wang = send_wang_fax(factory, worker, tmp_path)
    session, delivery = _fax(factory, wang)
    with session:
        workers, web = Counting(store=store), Counting(store=store)  # two processes' caches
        rendered = workers.fax_document(delivery)
        served = web.fax_document(delivery)
        assert (workers.renders, web.renders) == (1, 0)  # not rendered again
        assert served.pdf == rendered.pdf and served.page_count == rendered.page_count
        assert served.sha256 == hashlib.sha256(served.pdf).hexdigest() == delivery.document_sha256


def test_without_a_kept_copy_the_document_is_rendered(
    factory: sessionmaker[Session],
    worker: WorkerContext,
    sandbox: Sandbox,
    tmp_path: Path,
    store: RedisDocuments,
) -> None:
    wang = send_wang_fax(factory, worker, tmp_path)
    session, delivery = _fax(factory, wang)
    with session:
        web = Counting(store=store)
        document = web.fax_document(delivery)
        assert web.renders == 1 and document.sha256 == delivery.document_sha256


def test_a_changed_campaign_is_rendered_anew_not_served_from_the_old_copy(
    factory: sessionmaker[Session],
    worker: WorkerContext,
    sandbox: Sandbox,
    tmp_path: Path,
    store: RedisDocuments,
) -> None:
    wang = send_wang_fax(factory, worker, tmp_path)
    session, delivery = _fax(factory, wang)
    with session:
        first = Counting(store=store).fax_document(delivery)
    with transaction(factory) as changing:  # what the letter is rendered from changed (its version)
        changing.execute(update(Campaign).values(spec_sha256="0" * 64))
    session, delivery = _fax(factory, wang)
    with session:
        web = Counting(store=store)
        again = web.fax_document(delivery)
    assert web.renders == 1
    assert again.pdf.startswith(b"%PDF") and first.pdf.startswith(b"%PDF")


def test_redis_unreachable_means_rendering_not_an_error(
    factory: sessionmaker[Session], worker: WorkerContext, sandbox: Sandbox, tmp_path: Path
) -> None:
    from workers.sandbox.server import free_port

    nowhere = RedisDocuments(redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5))
    wang = send_wang_fax(factory, worker, tmp_path)
    session, delivery = _fax(factory, wang)
    with session:
        web = Counting(store=nowhere)
        document = web.fax_document(delivery)
    assert web.renders == 1 and document.sha256 == delivery.document_sha256


def test_the_kept_copy_expires(store: RedisDocuments) -> None:
    store.put("k", b"%PDF-1.7 ...")
    ttl = store.client.ttl(f"{store.namespace}k")
    assert 0 < ttl <= RedisDocuments.KEEP_SECONDS


def test_settings_with_a_redis_broker_share_documents_and_others_do_not() -> None:
    assert isinstance(shared_documents(Settings(broker_url=REDIS_URL)), RedisDocuments)
    assert shared_documents(Settings(broker_url="memory://")) is None


def test_the_web_serves_the_workers_bytes_without_rendering_them(
    factory: sessionmaker[Session],
    worker: WorkerContext,
    sandbox: Sandbox,
    tmp_path: Path,
    store: RedisDocuments,
) -> None:
    """Through HTTP: a worker with a shared store sends the fax; the web app with the same store (a process of
    its own in production) serves the PDF at its signed URL; nothing renders it a second time."""
    from dispatcher.processes.api import create_app
    from dispatcher.processes.web_context import WebContext
    from workers.sandbox.server import serve

    from .integration.conftest import RETRY

    shared = WorkerContext.from_settings(
        integration.SETTINGS,
        factory=factory,
        gateways=worker.gateways,
        retry=RETRY,
        documents=DocumentCache(store=store),
        media_url=worker.media_url,
        unsubscribe_url=worker.unsubscribe_url,
    )
    wang = send_wang_fax(factory, shared, tmp_path)
    documents = Counting(store=store)
    app = create_app(WebContext(factory=factory, gateways={}, secret=sandbox.secret, retry=RETRY, documents=documents))
    with serve(app) as web:
        url = media_url(web.url, wang, secret=sandbox.secret, now=utcnow())
        response = httpx.get(url, timeout=15)
    assert response.status_code == 200
    with factory() as session:
        recorded = session.scalars(select(Delivery.document_sha256).where(Delivery.id == wang)).one()
    assert hashlib.sha256(response.content).hexdigest() == recorded
    assert documents.renders == 0
