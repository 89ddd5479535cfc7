"""The bare HTTP baseline for faxes: ``concurrency`` threads, each with one httpx client, posting
``POST /v2/faxes`` to the Telnyx emulator in a loop, as fast as its answers come. No ledger, no
rendering: the most a sender at that concurrency can get from that emulator at its latency.

The emulator fetches each fax's document after accepting it, and posts status webhooks: a small local
server hands it a one-page PDF and takes the webhooks."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


def one_page_pdf() -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="Detention of nine North Korean refugees")
    return bytes(pdf.output())


@contextmanager
def document_server() -> Iterator[str]:
    """A local HTTP server: GET anything -> the PDF, POST anything -> 200. Its base URL."""
    pdf = one_page_pdf()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/pdf")
            self.send_header("Content-Length", str(len(pdf)))
            self.end_headers()
            self.wfile.write(pdf)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def send_all(*, base_url: str, api_key: str, numbers: list[str], concurrency: int, docs_url: str) -> tuple[float, int]:
    """POST one fax per number, ``concurrency`` at a time; (seconds, faxes accepted)."""
    lock = threading.Lock()
    todo = iter(enumerate(numbers))
    accepted = 0

    def worker() -> None:
        nonlocal accepted
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
            while True:
                with lock:
                    item = next(todo, None)
                if item is None:
                    return
                index, number = item
                body = {
                    "connection_id": "bench-connection",
                    "from": "+12125550143",
                    "to": number,
                    "media_url": f"{docs_url}/fax-{index}.pdf",
                    "client_state": base64.b64encode(f"bare-{index}".encode()).decode(),
                    "webhook_url": f"{docs_url}/webhooks",
                }
                response = client.post("/v2/faxes", json=body)
                if response.status_code == 202:
                    with lock:
                        accepted += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, accepted
