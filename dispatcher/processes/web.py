"""Build the `dispatch web` application from settings."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from dispatcher.domain import db
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.rendering.fpdf_fonts import preload
from dispatcher.domain.settings import Settings
from dispatcher.processes.api import create_app
from dispatcher.processes.web_context import WebContext
from workers.document_store import shared_documents
from workers.gateways.base import Gateway
from workers.gateways.registry import build_for_slot, slots

log = logging.getLogger(__name__)


def configured_gateways(settings: Settings) -> dict[str, Gateway]:
    """The gateways by name (as in /webhooks/<name>); each slot is checked against its channel."""
    gateways: dict[str, Gateway] = {}
    for slot in slots(settings):
        gateways.setdefault(slot.name, build_for_slot(slot))
    return gateways


def build_web_app(settings: Settings, *, gateways: dict[str, Gateway] | None = None) -> FastAPI:
    """The web app; ``gateways`` as built by :func:`configured_gateways` unless given."""
    engine = db.make_engine(settings.database_url)
    db.ensure_schema(engine)
    secret = settings.secret_key.get_secret_value().encode() if settings.secret_key else None
    if secret is None:  # no refusal: a deployment without copies or faxes serves its webhooks without a key
        log.warning(
            "DISPATCH_SECRET_KEY is not set: fax documents (404) and the unsubscribe links of supporter copies "
            "(503) are refused until it is"
        )
    if secret is not None:  # fax documents are served: the first one need not wait for its font
        preload()
    return create_app(
        WebContext(
            factory=db.session_factory(engine),
            gateways=gateways if gateways is not None else configured_gateways(settings),
            secret=secret,
            retry=RetryPolicy.from_settings(settings),
            documents=DocumentCache(store=shared_documents(settings)),  # the faxes the workers rendered
            secure_cookies=settings.public_base_url.lower().startswith("https://"),
            settings=settings,
        )
    )
