"""The shared gateway base: messages in, receipts and status events out.

A provider module subclasses :class:`Gateway` (``channel`` "fax" or "email") and overrides what its
provider supports; the base answers the rest with :class:`NotImplementedError` naming the provider.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import BaseSettings

from dispatcher.domain.messages import Message, Receipt, StatusEvent, WebhookRequest
from dispatcher.domain.states import Channel


class Gateway:
    """Base of every provider adapter."""

    provider: ClassVar[str]
    channel: ClassVar[Channel]
    settings_class: ClassVar[type[BaseSettings]]
    # False for gateways that never report delivery (SMTP): their acceptance is the final word
    reports_delivery: ClassVar[bool] = True
    # True for providers that fetch the document from a URL we serve (Telnyx): needs DISPATCH_SECRET_KEY
    needs_media_url: ClassVar[bool] = False

    def __init__(self, settings: BaseSettings, *, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or self.provider

    def send(self, message: Message) -> Receipt:
        """Hand one message to the provider; raise Transient, Permanent or Unknown otherwise."""
        raise NotImplementedError(f"{self.provider}: send is not supported")

    def fetch_status(self, provider_id: str) -> StatusEvent:
        """Ask the provider for the current state of a message."""
        raise NotImplementedError(f"{self.provider}: fetch_status is not supported")

    def find_by_reference(self, reference: str) -> StatusEvent | None:
        """Look a message up by our reference, to reconcile an Unknown outcome; None if never seen."""
        raise NotImplementedError(f"{self.provider}: lookup by reference is not supported")

    def parse_webhook(self, request: WebhookRequest) -> list[StatusEvent]:
        """Verify and decode a status webhook; raise WebhookAuthError / WebhookFormatError."""
        raise NotImplementedError(f"{self.provider}: webhooks are not supported")

    def close(self) -> None:
        """Release pooled connections."""
