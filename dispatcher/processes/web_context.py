"""What every router of `dispatch web` shares: the ledger, the gateways, the secret, the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from dispatcher.domain.models import utcnow
from dispatcher.domain.outcomes import RetryPolicy
from dispatcher.domain.rendering.documents import DocumentCache
from dispatcher.domain.settings import Settings
from workers.gateways.base import Gateway


@dataclass
class WebContext:
    factory: sessionmaker[Session]
    gateways: dict[str, Gateway]  # by gateway name, as in /webhooks/<name>
    secret: bytes | None
    retry: RetryPolicy
    documents: DocumentCache
    clock: Callable[[], datetime] = utcnow
    secure_cookies: bool = False  # the console's cookies carry Secure (DISPATCH_PUBLIC_BASE_URL is https)
    settings: Settings | None = None  # the broker to check and count; the process's settings unless given
