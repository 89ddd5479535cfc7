"""Build the `dispatch web` application from settings."""

from __future__ import annotations

from fastapi import FastAPI

from dispatcher.domain import db
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.settings import Settings
from dispatcher.processes.api import WebContext, create_app
from workers.gateways.base import Gateway
from workers.gateways.registry import build_gateway


def configured_gateways(settings: Settings) -> dict[str, Gateway]:
    names = {settings.fax_gateway, settings.email_gateway, settings.copies_gateway or settings.email_gateway}
    return {name: build_gateway(name) for name in sorted(names)}


def build_web_app(settings: Settings) -> FastAPI:
    engine = db.make_engine(settings.database_url)
    db.ensure_schema(engine)
    secret = settings.secret_key.get_secret_value().encode() if settings.secret_key else None
    return create_app(
        WebContext(
            factory=db.session_factory(engine),
            gateways=configured_gateways(settings),
            secret=secret,
            retry=RetryPolicy.from_settings(settings),
            documents=DocumentCache(),
        )
    )
