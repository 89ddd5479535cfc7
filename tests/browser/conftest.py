"""The browser tests' harness: headless Chromium driven by Selenium, and a real `dispatch web` to point it at.

- ``browser``: one headless Chromium for the whole session (Debian's ``chromium`` and ``chromium-driver``,
  installed by scripts/browser-deps; Selenium runs /usr/bin/chromedriver itself, nothing is downloaded).
  Without them the browser tests are skipped, naming scripts/browser-deps, unless CI=true: then they fail.
- ``page``: that browser for one test, cookies and storage cleared before; after the test, passed or
  failed, a screenshot in test-artifacts/screenshots/<test name>.png.
- ``web``: a real ``dispatch web`` process on a free port, on the test's ledger (``db_url``: SQLite and
  PostgreSQL, migrated and empty; fill it through ``factory`` as other tests do, e.g. with tests/builders.py).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

from workers.sandbox.server import free_port

from ..integration.conftest import sandbox, worker  # noqa: F401  (fixtures: the console's live test sends)
from ..spawn import ROOT, Spawned, base_env, dispatch

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
WINDOW = (1280, 900)
SECRET = "browser-tests-secret-key-of-32-characters-at-least"  # DISPATCH_SECRET_KEY of `web`


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _missing() -> list[str]:
    return [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the session: starting it costs far more than a test (README, Development)."""
    missing = _missing()
    if missing:
        message = f"the browser tests need {' and '.join(missing)}: run scripts/browser-deps"
        if in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.add_argument("--headless=new")
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    options.add_argument("--disable-dev-shm-usage")  # containers often have a small /dev/shm
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: webdriver.Chrome, request: pytest.FixtureRequest) -> Iterator[webdriver.Chrome]:
    """The session's browser, clean for this test; a screenshot of where it ended, pass or fail."""
    browser.get("about:blank")
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    browser.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": "*", "storageTypes": "all"})
    try:
        yield browser
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.\[\]-]+", "_", request.node.name)
        try:
            browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
        except WebDriverException as error:  # a crashed browser must not hide the test's own failure
            request.node.add_report_section("teardown", "screenshot", f"no screenshot: {error.msg}")


@dataclass
class Web:
    """A running ``dispatch web``: its base URL and the process, whose output is in ``process.lines``."""

    base: str
    process: Spawned
    secret: bytes

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"


@pytest.fixture
def web(db_url: str, tmp_path: Path) -> Iterator[Web]:
    """``dispatch web`` on the test's ledger, answering on a free port; stopped after the test."""
    port = free_port()
    env = base_env(
        tmp_path,
        DISPATCH_DATABASE_URL=db_url,
        DISPATCH_SECRET_KEY=SECRET,
        DISPATCH_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        # gateways configured, never called: webhooks are not what these tests drive (tests/test_logs.py)
        DISPATCH_CHECK_CREDENTIALS="false",
        DISPATCH_TELNYX_API_KEY="KEYtest",
        DISPATCH_TELNYX_CONNECTION_ID="test-connection",
        DISPATCH_TELNYX_PUBLIC_KEY="a2W+JI9/H1Ysx7DDdx8+wtMj9CzHJ53Om+ZVbMjdseQ=",  # any 32 bytes, base64
        DISPATCH_SMTP_HOST="127.0.0.1",
    )
    process = dispatch("web", "--port", str(port), env=env, cwd=tmp_path)
    web = Web(base=f"http://127.0.0.1:{port}", process=process, secret=SECRET.encode())
    try:
        _wait_until_up(web)
        yield web
    finally:
        process.stop()


def _wait_until_up(web: Web, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(web.url("/health"), timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if web.process.process.poll() is not None:
            raise AssertionError(f"dispatch web ended before answering: {web.process.stop()}")
        time.sleep(0.1)
    raise AssertionError(f"dispatch web did not answer within {timeout}s: {web.process.stop()}")
