"""`dispatch sandbox serve`: every provider emulator and the SMTP sink on localhost ports.

Credentials and signing keys are generated afresh for each run and printed as the DISPATCH_*
settings that point each gateway at its emulator, so a campaign manager can rehearse a campaign
end to end (`dispatch web`, `dispatch worker`, `dispatch scheduler` with those settings) without
reaching any provider.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from workers.sandbox import mailgun, phaxio, postmark, sendgrid, sinch, telnyx
from workers.sandbox.core import SandboxState
from workers.sandbox.server import ThreadedServer
from workers.sandbox.smtp_sink import SmtpSink

DEFAULT_PORTS = {
    "telnyx": 8101,
    "sinch": 8102,
    "phaxio": 8103,
    "postmark": 8104,
    "sendgrid": 8105,
    "mailgun": 8106,
    "smtp": 8025,
}


@dataclass
class Running:
    """What `serve_all` started, and the settings that point gateways at it."""

    servers: list[ThreadedServer] = field(default_factory=list)
    sinks: list[SmtpSink] = field(default_factory=list)
    states: dict[str, SandboxState] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        for sink in self.sinks:
            sink.stop()


def _token() -> str:
    return secrets.token_hex(16)


def serve_all(
    *, web_url: str, oracle_dir: Path, ports: dict[str, int] | None = None, host: str = "127.0.0.1"
) -> Running:
    """Start every emulator; webhooks go to ``web_url``/webhooks/<provider>."""
    ports = {**DEFAULT_PORTS, **(ports or {})}
    oracle_dir.mkdir(parents=True, exist_ok=True)
    running = Running()
    for provider, start in STARTERS.items():
        state = SandboxState(provider=provider, oracle_path=oracle_dir / f"oracle-{provider}.jsonl")
        running.states[provider] = state
        app, settings = start(state, f"{web_url.rstrip('/')}/webhooks/{provider}")
        server = ThreadedServer(app, host=host, port=ports[provider]).start()
        running.servers.append(server)
        prefix = f"DISPATCH_{provider.upper()}_"
        running.settings.update({f"{prefix}BASE_URL": server.url, **{prefix + k: v for k, v in settings.items()}})
    smtp_state = SandboxState(provider="smtp", oracle_path=oracle_dir / "oracle-smtp.jsonl")
    sink = SmtpSink(smtp_state, host=host, port=ports["smtp"])
    sink.start()
    running.sinks.append(sink)
    running.states["smtp"] = smtp_state
    running.settings.update(
        {"DISPATCH_SMTP_HOST": sink.host, "DISPATCH_SMTP_PORT": str(sink.port), "DISPATCH_SMTP_SECURITY": "plain"}
    )
    return running


def _telnyx(state: SandboxState, webhook_url: str) -> tuple[Any, dict[str, str]]:
    key, signing = "KEY" + _token(), nacl.signing.SigningKey.generate()
    app = telnyx.create_app(state, api_key=key, signing_key=signing, default_webhook_url=webhook_url)
    return app, {
        "API_KEY": key,
        "CONNECTION_ID": "sandbox-connection",
        "WEBHOOK_URL": webhook_url,
        "PUBLIC_KEY": base64.b64encode(bytes(signing.verify_key)).decode(),
    }


def _sinch(state: SandboxState, webhook_url: str) -> tuple[Any, dict[str, str]]:
    project, key_id, key_secret, user, password = _token(), _token(), _token(), "sinch", _token()
    app = sinch.create_app(state, project_id=project, key_id=key_id, key_secret=key_secret)
    return app, {
        "PROJECT_ID": project,
        "KEY_ID": key_id,
        "KEY_SECRET": key_secret,
        "CALLBACK_URL": webhook_url,
        "CALLBACK_USERNAME": user,
        "CALLBACK_PASSWORD": password,
    }


def _phaxio(state: SandboxState, webhook_url: str) -> tuple[Any, dict[str, str]]:
    key, secret, token = _token(), _token(), _token()
    app = phaxio.create_app(state, api_key=key, api_secret=secret, callback_token=token)
    return app, {"API_KEY": key, "API_SECRET": secret, "CALLBACK_TOKEN": token, "CALLBACK_URL": webhook_url}


def _postmark(state: SandboxState, webhook_url: str) -> tuple[Any, dict[str, str]]:
    token, user, password = _token(), "postmark", _token()
    authed = webhook_url.replace("://", f"://{user}:{password}@", 1)
    app = postmark.create_app(state, server_token=token, webhook_url=authed)
    return app, {"SERVER_TOKEN": token, "WEBHOOK_USERNAME": user, "WEBHOOK_PASSWORD": password}


def _sendgrid(state: SandboxState, webhook_url: str) -> tuple[Any, dict[str, str]]:
    key, private = "SG." + _token(), ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    app = sendgrid.create_app(state, api_key=key, signing_key=private, webhook_url=webhook_url)
    return app, {"API_KEY": key, "WEBHOOK_PUBLIC_KEY": base64.b64encode(public).decode()}


def _mailgun(state: SandboxState, webhook_url: str) -> tuple[Any, dict[str, str]]:
    key, domain, signing = "key-" + _token(), "sandbox.example.org", _token()
    app = mailgun.create_app(state, api_key=key, domain=domain, webhook_signing_key=signing, webhook_url=webhook_url)
    return app, {"API_KEY": key, "DOMAIN": domain, "WEBHOOK_SIGNING_KEY": signing}


STARTERS: dict[str, Callable[[SandboxState, str], tuple[Any, dict[str, str]]]] = {
    "telnyx": _telnyx,
    "sinch": _sinch,
    "phaxio": _phaxio,
    "postmark": _postmark,
    "sendgrid": _sendgrid,
    "mailgun": _mailgun,
}
