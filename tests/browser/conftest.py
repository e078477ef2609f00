"""Playwright against a live server thread (``live_server``, tests/conftest.py), in Debian's
headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("LATCHKEY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("LATCHKEY_TEST_OUTPUT", "test-results")) / "screenshots"


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """Browser journeys run on SQLite only; the backends are covered by the API suites."""
    return sqlite_url


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    from tests.conftest import unavailable

    if not Path(CHROMIUM).exists():
        unavailable("Chromium", f"{CHROMIUM} is missing; `make test` installs it")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def screenshot(request):
    def take(page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
