"""Playwright against a live server thread (``live_server``, tests/conftest.py), in Debian's
headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.factories import PASSWORD, make_api, make_org, make_user

CHROMIUM = os.environ.get("LATCHKEY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: Run a test with JavaScript on and off (``javascript``).
JS = pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
#: The one API of :func:`user_of_an_org_with_orders`'s org.
ORDERS = "https://orders.example.com"
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


def sign_in(page: Page, base: str, email: str, password: str = PASSWORD) -> None:
    """Through the sign-in form, until the page offers to sign out."""
    page.goto(base + "/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def click_and_accept(page: Page, button: Any) -> None:
    """Click ``button``, whose form asks with ``confirm()``, and accept the dialog.

    Waits for the page's ``load`` event first: static/js/forms.js is deferred, and a click
    before it runs meets the no-script path (the confirmation page), not the dialog.
    """
    page.wait_for_load_state("load")
    page.once("dialog", lambda dialog: dialog.accept())
    button.click()


def user_of_an_org_with_orders(session: Any, org_name: str, role: str) -> Any:
    """A new ``role`` of a new org ``org_name`` that has one API to grant, Orders (ORDERS)."""
    org = make_org(session, name=org_name)
    make_api(session, org, identifier=ORDERS, name="Orders",
             scopes=("orders:read", "orders:write"))
    return make_user(session, org=org, role=role)
