"""`dispatch sandbox serve`: every emulator up, and every gateway, built only from the settings it
prints, sends through it (a campaign manager's rehearsal)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.domain.messages import EmailMessage, FaxMessage
from workers.gateways.registry import build_gateway
from workers.sandbox.serve import DEFAULT_PORTS, Running, serve_all
from workers.sandbox.server import ThreadedServer, free_port


def tiny_pdf() -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    return bytes(pdf.output())


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    ports = {name: free_port() for name in DEFAULT_PORTS}
    sandbox = serve_all(web_url=f"http://127.0.0.1:{free_port()}", oracle_dir=tmp_path, ports=ports)
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def media_url() -> Iterator[str]:
    from fastapi import FastAPI, Response

    app = FastAPI()
    pdf = tiny_pdf()
    app.get("/fax.pdf")(lambda: Response(pdf, media_type="application/pdf"))
    server = ThreadedServer(app).start()
    yield f"{server.url}/fax.pdf"
    server.stop()


@pytest.mark.parametrize("provider", ["telnyx", "sinch", "phaxio"])
def test_every_fax_gateway_sends_through_its_emulator(
    running: Running, media_url: str, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in running.settings.items():
        monkeypatch.setenv(key, value)
    gateway = build_gateway(provider)
    receipt = gateway.send(
        FaxMessage(
            to="+861065591516",
            from_number="+12125550143",
            pdf=tiny_pdf(),
            page_count=1,
            reference=f"rehearsal-{provider}",
            media_url=media_url,
        )
    )
    assert receipt.provider == provider and receipt.provider_id
    assert [e.reference for e in running.states[provider].oracle()] == [f"rehearsal-{provider}"]


@pytest.mark.parametrize("provider", ["smtp", "postmark", "sendgrid", "mailgun"])
def test_every_email_gateway_sends_through_its_emulator(
    running: Running, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in running.settings.items():
        monkeypatch.setenv(key, value)
    gateway = build_gateway(provider)
    reference = f"rehearsal{provider}"
    receipt = gateway.send(
        EmailMessage(
            sender="Org <org@example.org>",
            to=["minister@example.gov"],
            subject="Letter",
            text="Dear Minister,",
            reference=reference,
            message_id=f"<{reference}@example.org>",
        )
    )
    assert receipt.provider_id
    assert [e.destination for e in running.states[provider].oracle()] == ["minister@example.gov"]
