"""Signing in to the portal in a real browser, with and without JavaScript."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.factories import PASSWORD, make_client, make_org, make_user

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_admin_signs_in_and_sees_clients(browser, live_server, session, screenshot, javascript):
    org = make_org(session, name="Browser Org")
    user = make_user(session, org=org, role="owner")
    _secret, c = make_client(session, org, name="billing-sync")
    context = browser.new_context(java_script_enabled=javascript)
    page = context.new_page()

    page.goto(live_server + "/")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("Browser Org")
    expect(page.get_by_role("cell", name="billing-sync")).to_be_visible()
    expect(page.get_by_role("cell", name=c.public_id)).to_be_visible()
    screenshot(page, "clients")
    context.close()


def test_wrong_password_shows_form_error(browser, live_server, session, screenshot):
    user = make_user(session, org=make_org(session))
    page = browser.new_page()

    page.goto(live_server + "/signin")
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()

    expect(page.locator("#password-error")).to_have_text("Email or password is incorrect.")
    screenshot(page, "error")
    page.close()
