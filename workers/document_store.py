"""Rendered fax documents kept in Redis for an hour, shared by the worker that renders a fax and `dispatch web`,
which serves it when the provider fetches the document: the same bytes, rendered once (rendering a fax again
in the web process cost about a fifth of that process's CPU per fax).

A failing Redis only means rendering again: ``get`` answers None and ``put`` does nothing, each logging the
error's class (never a key or a document)."""

from __future__ import annotations

import logging
from typing import Any

import redis

from dispatcher.domain.settings import Settings

log = logging.getLogger(__name__)


class RedisDocuments:
    """dispatcher.domain.rendering.documents.DocumentStore in Redis, each document kept ``KEEP_SECONDS``: a
    provider fetches a fax's document within seconds of its submission; a later fetch is rendered again."""

    KEEP_SECONDS = 3600

    def __init__(self, client: Any, *, namespace: str = "") -> None:
        self.client = client
        self.namespace = namespace

    def get(self, key: str) -> bytes | None:
        try:
            value = self.client.get(self.namespace + key)
        except redis.RedisError as err:
            log.warning("shared fax documents unavailable (%s): rendering instead", type(err).__name__)
            return None
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes) -> None:
        try:
            self.client.set(self.namespace + key, value, ex=self.KEEP_SECONDS)
        except redis.RedisError as err:
            log.warning("keeping a fax document for the web process failed (%s)", type(err).__name__)


def shared_documents(settings: Settings) -> RedisDocuments | None:
    """The store on the Redis broker, under the queue prefix; none for another broker (the demo's in-memory
    one: its worker and web are one process, which keeps the document in memory)."""
    if not settings.redis_broker:
        return None
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
    return RedisDocuments(client, namespace=f"{settings.queue_prefix}fax-document:")
