"""Unguessable, expiring URLs for fax documents that providers fetch (Telnyx takes a media_url).

A token carries the delivery id and an expiry, signed with HMAC-SHA256 under DISPATCH_SECRET_KEY;
`dispatch web` serves ``/media/<token>.pdf`` by rendering the delivery's PDF (once: the web keeps the most
recent ones, dispatcher/domain/rendering/documents.py) and checking its
SHA-256 against the one the worker recorded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta


class MediaTokenError(ValueError):
    """The token is malformed, forged or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(delivery_id: int, *, secret: bytes, now: datetime, ttl: timedelta = timedelta(hours=6)) -> str:
    payload = f"{delivery_id}:{int((now + ttl).timestamp())}".encode()
    signature = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def read_token(token: str, *, secret: bytes, now: datetime) -> int:
    """The delivery id in a valid token; MediaTokenError otherwise."""
    try:
        payload_text, signature_text = token.split(".", 1)
        payload, signature = _unb64(payload_text), _unb64(signature_text)
        delivery, expires = payload.decode().split(":", 1)
        delivery_id, expiry = int(delivery), int(expires)
    except (ValueError, UnicodeDecodeError) as err:
        raise MediaTokenError("malformed media token") from err
    expected = hmac.new(secret, payload, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise MediaTokenError("bad media token signature")
    if now.timestamp() > expiry:
        raise MediaTokenError("media token expired")
    return delivery_id


def media_url(base_url: str, delivery_id: int, *, secret: bytes, now: datetime) -> str:
    return f"{base_url.rstrip('/')}/media/{make_token(delivery_id, secret=secret, now=now)}.pdf"
