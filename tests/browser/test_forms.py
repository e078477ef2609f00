"""Issue 16 in a real browser, with and without JavaScript: every error in one round with an
error summary that takes focus (line 1), landing back at the section acted on (line 2),
the account's password (line 3), confirmation of destructive actions (line 5) and the
small items (line 8). Pages are photographed at 1280 and 390 px."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from portal.core.clients import services as clients
from tests.browser.conftest import JS, ORDERS, click_and_accept, sign_in, user_of_an_org_with_orders
from tests.factories import PASSWORD, TEST_ACTOR, issue, make_client, make_user

pytestmark = pytest.mark.browser

AUDIENCE = ORDERS


@pytest.fixture
def owner(session):
    return user_of_an_org_with_orders(session, "Forms Org", "owner")


@pytest.fixture
def contexts(browser: Browser) -> Iterator[Any]:
    """Browser contexts opened by a test, closed before the live server stops."""
    opened: list[Any] = []

    def open_page(javascript: bool = True) -> Page:
        context = browser.new_context(java_script_enabled=javascript,
                                      viewport={"width": 1280, "height": 800})
        opened.append(context)
        return context.new_page()

    yield open_page
    for context in opened:
        context.close()


def photograph(page: Page, screenshot: Any, name: str) -> None:
    """The page at 1280 px and at 390 px (a phone), then back to 1280."""
    screenshot(page, f"{name}-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, f"{name}-390")
    page.set_viewport_size({"width": 1280, "height": 800})


def focused_id(page: Page) -> str:
    return str(page.evaluate("() => document.activeElement && document.activeElement.id"))


@JS
def test_new_client_shows_every_error_at_once(contexts, live_server, owner, screenshot,
                                              javascript):
    page = contexts(javascript)
    sign_in(page, live_server, owner.email)
    page.goto(live_server + "/clients/new")
    expect(page.get_by_label("Name", exact=True)).to_have_attribute("aria-required", "true")
    acts_for = page.get_by_label("Acts for (user clients only)")
    if javascript:  # shown only while Kind is User
        expect(acts_for).to_be_hidden()
        page.get_by_label(re.compile("^User")).check()
        expect(acts_for).to_be_visible()
        page.get_by_label(re.compile("^Organisation")).check()
        expect(acts_for).to_be_hidden()
    else:
        expect(acts_for).to_be_visible()
    page.get_by_label("Description").fill("kept as typed")
    page.get_by_label("Token lifetime (seconds)").fill("99999999")
    page.get_by_label("Custom claims (JSON object)").fill('{"iss": "me"}')
    page.get_by_role("button", name="Create client").click()

    summary = page.locator("#error-summary")
    expect(summary.get_by_role("heading")).to_have_text("There are 3 problems")
    links = summary.get_by_role("link")
    expect(links).to_have_count(3)  # the org's only API starts ticked
    expect(links.nth(0)).to_have_attribute("href", "#name")
    expect(page.locator("#name-error")).to_have_text("Give the client a name.")
    expect(page.locator("#ttl-error")).to_contain_text("between 300 and 86400")
    expect(page.locator("#custom_claims-error")).to_contain_text("iss")
    expect(page.get_by_label("Description")).to_have_value("kept as typed")
    expect(page.get_by_label("Token lifetime (seconds)")).to_have_value("99999999")
    # The summary has focus when the page loads (autofocus; the script makes sure).
    assert focused_id(page) == "error-summary"
    photograph(page, screenshot, "client-errors")

    links.nth(1).click()  # Token lifetime
    if javascript:
        assert focused_id(page) == "ttl"
    else:
        assert page.url.endswith("#ttl")

    # Fixing them all creates the client in the next round.
    page.get_by_label("Name", exact=True).fill("billing-sync")
    page.get_by_label("Token lifetime (seconds)").fill("600")
    page.get_by_label("Custom claims (JSON object)").fill('{"tier": "gold"}')
    page.get_by_role("button", name="Create client").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Client billing-sync created")


def test_mint_shows_every_error_at_once(contexts, live_server, owner, session, screenshot):
    _, client = make_client(session, owner.memberships[0].org, name="minter",
                            scopes=["orders:read"], audiences=[AUDIENCE])
    page = contexts()
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server}/tokens/mint?client={client.public_id}")
    expect(page.locator("#audience-help")).not_to_contain_text("no scope ticked")
    page.get_by_label("Lifetime (seconds)").fill("10")
    page.get_by_label("Custom claims (JSON object)").fill('{"iss": "me"}')
    page.get_by_role("button", name="Mint token").click()

    expect(page.locator("#error-summary").get_by_role("link")).to_have_count(2)
    expect(page.locator("#ttl-error")).to_contain_text("between 300 and 86400")
    expect(page.locator("#custom_claims-error")).to_contain_text("iss")
    assert focused_id(page) == "error-summary"
    photograph(page, screenshot, "mint-errors")

    page.get_by_label("Lifetime (seconds)").fill("600")
    page.get_by_label("Custom claims (JSON object)").fill("")
    page.get_by_role("button", name="Mint token").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Token minted for minter")
    expect(page.locator(".claim-times")).to_contain_text(re.compile(r"expires \d{4}-\d\d-\d\d"))
    photograph(page, screenshot, "minted-times")


@JS
def test_destructive_actions_ask_first(contexts, live_server, owner, session, screenshot,
                                       javascript):
    org = owner.memberships[0].org
    _, client = make_client(session, org, name="to-disable")
    issue(session, client)
    page = contexts(javascript)
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server}/clients/{client.public_id}")

    if javascript:
        # A dialog asks; cancelling changes nothing, accepting posts at once.
        page.once("dialog", lambda d: d.dismiss())
        page.get_by_role("button", name="Revoke all tokens").click()
        expect(page.get_by_role("heading", name="Active tokens")).to_be_visible()
        session.expire_all()
        assert not page.url.endswith("#tokens")
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Revoke all tokens").click()
    else:
        # Without scripts the button opens a confirmation page; Cancel leads back.
        page.get_by_role("button", name="Revoke all tokens").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(
            "Revoke every active token of to-disable?")
        photograph(page, screenshot, "confirm-page")
        page.get_by_role("link", name="Cancel").click()
        assert page.url.endswith("#tokens")
        page.get_by_role("button", name="Revoke all tokens").click()
        page.get_by_role("button", name="Revoke all tokens").click()  # on the page: confirm

    # Back at the section acted on, with the message there.
    expect(page).to_have_url(re.compile(r"#tokens$"))
    tokens_section = page.locator("#tokens")
    expect(tokens_section.locator(".flash")).to_have_text("Revoked 1 active token of to-disable.")
    expect(page.locator("main > .flash")).to_have_count(0)
    assert page.evaluate("() => window.scrollY") > 0
    photograph(page, screenshot, "landed-at-tokens")

    click_and_accept(page, page.get_by_role("button", name="Disable"))
    if not javascript:
        expect(page.get_by_role("heading", level=1)).to_have_text("Disable to-disable?")
        page.get_by_role("button", name="Disable client").click()
    expect(page.locator("#settings .flash")).to_contain_text("to-disable disabled")
    expect(page.get_by_text("disabled", exact=True).first).to_be_visible()


@JS
def test_member_removal_and_key_rotation_ask_first(contexts, live_server, owner, session,
                                                   javascript):
    org = owner.memberships[0].org
    make_user(session, org=org, role="viewer", email="leaving@example.com")
    page = contexts(javascript)
    sign_in(page, live_server, owner.email)
    page.goto(live_server + "/members")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Remove leaving@example.com").click()
    if not javascript:
        expect(page.get_by_role("heading", level=1)).to_have_text(
            "Remove leaving@example.com from Forms Org?")
        page.get_by_role("button", name="Remove member").click()
    expect(page.get_by_text("leaving@example.com was removed")).to_be_visible()

    page.goto(live_server + "/keys")
    page.get_by_label("Algorithm of the new next key").select_option("ES256")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Rotate signing key").click()
    if not javascript:
        expect(page.get_by_role("heading", level=1)).to_have_text("Rotate the signing key now?")
        page.get_by_role("button", name="Rotate signing key").click()
    # Acted on (a new org's next key is too fresh to sign yet: the refusal says when).
    expect(page.locator("main")).to_contain_text(re.compile("Rotated|can start signing only"))


@JS
def test_a_past_expiry_lands_at_secrets_and_keeps_the_date(contexts, live_server, owner,
                                                           session, screenshot, javascript):
    _, client = make_client(session, owner.memberships[0].org, name="expiring")
    page = contexts(javascript)
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server}/clients/{client.public_id}")
    page.locator("#new-secret-expiry").fill("2001-01-01T10:00")
    page.get_by_role("button", name="Add secret").click()


    expect(page.locator("#new-secret-expiry-error")).to_have_text(
        "The expiry must be in the future.")
    expect(page.locator("#new-secret-expiry")).to_have_value("2001-01-01T10:00")
    # The summary in the secrets section takes focus (autofocus), which brings it into view.
    expect(page.locator("#secrets-errors")).to_be_in_viewport()
    assert focused_id(page) == "secrets-errors"
    assert page.evaluate("() => window.scrollY") > 0  # not back at the top
    photograph(page, screenshot, "secret-expiry-error")


def test_small_items_on_the_client_page(contexts, live_server, owner, session, screenshot):
    _, client = make_client(session, owner.memberships[0].org, name="full")
    for _ in range(4):
        clients.add_secret(session, client, actor=TEST_ACTOR)
    session.commit()
    page = contexts()
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server}/clients/{client.public_id}")

    expect(page.get_by_role("button", name="Add secret")).to_be_disabled()
    expect(page.locator("#secret-limit-reason")).to_contain_text("5 of 5 secrets are active")
    expect(page.locator("#settings")).not_to_contain_text("Acts for")
    expect(page.locator("#audit")).to_contain_text("expires_at: never")
    expect(page.locator("#audit")).not_to_contain_text("None")
    photograph(page, screenshot, "client-detail")


@JS
def test_account_password_change_shows_every_error_then_works(
        contexts, live_server, owner, screenshot, javascript):
    page = contexts(javascript)
    sign_in(page, live_server, owner.email)
    page.goto(live_server + "/account")
    expect(page.get_by_role("heading", name="Organisations")).to_be_visible()
    expect(page.get_by_role("rowheader", name="Forms Org")).to_be_visible()
    page.get_by_label("New password", exact=True).fill("short")
    page.get_by_label("Confirm new password").fill("other")
    page.get_by_role("button", name="Change password").click()

    summary = page.locator("#error-summary")
    expect(summary.get_by_role("link")).to_have_count(3)
    expect(page.locator("#current_password-error")).to_have_text("Enter your current password.")
    expect(page.locator("#new_password-error")).to_have_text("Use at least 12 characters.")
    expect(page.locator("#confirm-error")).to_have_text("The two passwords do not match.")
    photograph(page, screenshot, "password-errors")

    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("a passphrase of my own")
    page.get_by_label("Confirm new password").fill("a passphrase of my own")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("Password changed.")).to_be_visible()
    photograph(page, screenshot, "account")
