"""Accounts in a real browser: invitations, a forced password change, switching orgs and the
account page, each with and without JavaScript."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from portal.core.users import services as users
from tests.browser.conftest import JS, sign_in
from tests.factories import PASSWORD, TEST_ACTOR, make_client, make_user

pytestmark = pytest.mark.browser

NEW_PASSWORD = "a passphrase of my own"


def new_page(browser: Browser, javascript: bool = True) -> Page:
    return browser.new_context(java_script_enabled=javascript).new_page()


def signed_in(browser: Browser, base: str, email: str, *, password: str = PASSWORD,
              javascript: bool = True) -> Page:
    """A page of a new browser context, signed in as ``email``."""
    page = new_page(browser, javascript)
    sign_in(page, base, email, password)
    return page


def change_password(page: Page, current: str) -> None:
    """Fill the password form on the page with ``current`` and NEW_PASSWORD, and submit it."""
    page.get_by_label("Current password").fill(current)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Confirm new password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()


def invite(page: Page, base: str, email: str, role: str) -> str:
    """As a signed-in owner, invite ``email``; returns the link the page shows once."""
    page.goto(base + "/members")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Role", exact=True).select_option(role)
    page.get_by_role("button", name="Create invitation link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Invitation created")
    return page.locator("#invitation-link").input_value()


@pytest.fixture
def acme(session, tenants):
    """Our org of the pair (``tenants.ours``), with an owner and a client."""
    org = tenants.ours.org
    owner = make_user(session, org=org, role="owner", email="owner@acme.test")
    make_client(session, org, name="acme-billing")
    return org, owner


@JS
def test_invited_person_chooses_a_password_and_joins(browser, live_server, acme, screenshot,
                                                     javascript):
    _org, owner = acme
    owners_page = signed_in(browser, live_server, owner.email, javascript=javascript)
    link = invite(owners_page, live_server, "new.hire@acme.test", "admin")
    assert link.startswith(live_server + "/invitation?token=lk_invite_")
    screenshot(owners_page, "link-shown-once")

    page = new_page(browser, javascript)
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Join Acme")
    expect(page.get_by_role("link", name="Sign in to accept")).to_be_visible()
    page.get_by_label("Password", exact=True).fill("too short")
    page.get_by_label("Confirm password").fill("too short")
    page.get_by_role("button", name="Create account and join").click()
    expect(page.get_by_text("Use at least 12 characters.")).to_be_visible()
    page.get_by_label("Your name (optional)").fill("New Hire")
    page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Confirm password").fill(NEW_PASSWORD)
    screenshot(page, "choosing-a-password")
    page.get_by_role("button", name="Create account and join").click()

    expect(page.get_by_text("You joined Acme as admin.")).to_be_visible()
    expect(page.get_by_role("cell", name="acme-billing")).to_be_visible()
    screenshot(page, "joined")
    owners_page.goto(live_server + "/members")
    expect(owners_page.get_by_role("rowheader", name="new.hire@acme.test")).to_be_visible()
    expect(owners_page.get_by_text("No invitation is waiting to be accepted.")).to_be_visible()
    # The link worked once.
    page.context.clear_cookies()
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "This invitation link does not work")
    owners_page.context.close()
    page.context.close()


def test_an_existing_account_signs_in_through_the_link_and_accepts(
        browser, live_server, acme, tenants, session, screenshot):
    _org, owner = acme
    elsewhere = tenants.theirs.org
    existing = make_user(session, org=elsewhere, role="owner", email="known@elsewhere.test")
    make_client(session, elsewhere, name="elsewhere-sync")
    owners_page = signed_in(browser, live_server, owner.email)
    link = invite(owners_page, live_server, existing.email, "viewer")

    page = new_page(browser)
    page.goto(link)
    page.get_by_role("link", name="Sign in to accept").click()
    page.get_by_label("Email").fill(existing.email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    # Signed in, the account is back on the invitation.
    expect(page.get_by_role("button", name="Accept and join Acme")).to_be_visible()
    screenshot(page, "accept")
    page.get_by_role("button", name="Accept and join Acme").click()

    expect(page.get_by_text("You joined Acme as viewer.")).to_be_visible()
    expect(page.get_by_role("cell", name="acme-billing")).to_be_visible()
    expect(page.get_by_label("Organisation")).to_have_value(_org.public_id)
    screenshot(page, "joined-second-org")
    owners_page.context.close()
    page.context.close()


@JS
def test_a_reset_password_must_be_changed_before_anything_else(
        browser, live_server, acme, session, screenshot, javascript):
    org, owner = acme
    member = make_user(session, org=org, role="admin", email="forgetful@acme.test")
    owners_page = signed_in(browser, live_server, owner.email, javascript=javascript)
    owners_page.goto(live_server + "/members")
    owners_page.get_by_role("link", name=f"Reset password of {member.email}").click()
    expect(owners_page.get_by_role("heading", level=1)).to_have_text(
        f"Reset the password of {member.email}?")
    owners_page.get_by_role("button", name="Reset password").click()
    temporary = owners_page.locator("#temporary-password").input_value()
    screenshot(owners_page, "temporary-password")

    page = signed_in(browser, live_server, member.email, password=temporary, javascript=javascript)
    expect(page.get_by_role("heading", level=1)).to_have_text("Choose a new password")
    expect(page.get_by_role("navigation", name="Portal")).to_have_count(0)
    page.goto(live_server + "/clients")
    expect(page.get_by_role("heading", level=1)).to_have_text("Choose a new password")
    screenshot(page, "forced")
    change_password(page, temporary)

    expect(page.get_by_text("Password changed.")).to_be_visible()
    page.goto(live_server + "/clients")
    expect(page.get_by_role("cell", name="acme-billing")).to_be_visible()
    screenshot(page, "after-change")
    owners_page.context.close()
    page.context.close()


@JS
def test_a_user_in_two_orgs_switches_from_the_top_bar(browser, live_server, acme, tenants,
                                                      session, screenshot, javascript):
    org, _owner = acme
    globex = tenants.theirs.org
    make_client(session, globex, name="globex-sync")
    user = make_user(session, org=org, role="admin", email="both@journeys.test")
    users.add_membership(session, org=globex, user=user, role="viewer", actor=TEST_ACTOR)
    session.commit()
    page = new_page(browser, javascript)

    sign_in(page, live_server, user.email)
    expect(page.get_by_role("heading", level=1)).to_have_text("Choose an organisation")
    screenshot(page, "choose")
    page.get_by_role("button", name="Work in Acme").click()
    expect(page.get_by_role("cell", name="acme-billing")).to_be_visible()
    expect(page.get_by_role("cell", name="globex-sync")).to_have_count(0)

    page.get_by_label("Organisation").select_option(label="Globex (viewer)")
    page.get_by_role("button", name="Switch").click()
    expect(page.get_by_text("You are working in Globex as viewer.")).to_be_visible()
    expect(page.get_by_role("cell", name="globex-sync")).to_be_visible()
    expect(page.get_by_role("cell", name="acme-billing")).to_have_count(0)
    screenshot(page, "switched")
    page.context.close()


@JS
def test_account_page_changes_the_password_and_signs_out_the_other_browser(
        browser, live_server, acme, session, screenshot, javascript):
    org, _owner = acme
    user = make_user(session, org=org, role="viewer", email="careful@acme.test")
    other = signed_in(browser, live_server, user.email, javascript=javascript)
    page = signed_in(browser, live_server, user.email, javascript=javascript)

    page.get_by_role("link", name=re.compile(r"careful@acme\.test")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
    expect(page.get_by_role("rowheader", name="Acme")).to_be_visible()
    change_password(page, PASSWORD)
    expect(page.get_by_text("Password changed.")).to_be_visible()
    screenshot(page, "changed")

    other.goto(live_server + "/clients")
    expect(other.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.goto(live_server + "/clients")
    expect(page.get_by_role("cell", name="acme-billing")).to_be_visible()
    other.context.close()
    page.context.close()
