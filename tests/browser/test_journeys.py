"""The portal's journeys end to end: a real browser against a live server.

Each journey is what an org admin does with the portal, checked both on the
page and, where the portal promises something about the protocol (a secret
that works, a token that is revoked), through the OAuth endpoints with a real
HTTP client. Every journey leaves a screenshot under ``test-results/``.
"""

from __future__ import annotations

import csv
import io
import re

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.browser.conftest import ORDERS, click_and_accept, sign_in, user_of_an_org_with_orders
from tests.factories import make_client, make_org, make_user

pytestmark = pytest.mark.browser

AUDIENCE = ORDERS


def get_token(base: str, client_id: str, secret: str) -> requests.Response:
    return requests.post(
        base + "/oauth/token", data={"grant_type": "client_credentials"},
        auth=(client_id, secret), timeout=10,
    )


def introspect(base: str, client_id: str, secret: str, token: str) -> dict:
    response = requests.post(base + "/oauth/introspect", data={"token": token},
                             auth=(client_id, secret), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def admin(session):
    """An admin of an org that has one API, ``Orders`` (AUDIENCE), to grant."""
    return user_of_an_org_with_orders(session, "Journey Org", "admin")


@pytest.fixture
def page(browser, live_server):
    """A fresh browser context, closed before the live server stops."""
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    yield page
    context.close()


def create_client(page: Page, base: str, name: str) -> tuple[str, str]:
    """Create a client through the form; returns (client id, secret) as the page shows them."""
    page.goto(base + "/clients/new")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Orders", exact=True).check()
    page.get_by_label("orders:read").check()
    page.get_by_label("orders:write").check()
    page.get_by_label("Token lifetime (seconds)").fill("600")
    page.get_by_role("button", name="Create client").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Client {name} created")
    return page.locator("#client-id").input_value(), page.locator("#client-secret").input_value()


def test_create_client_read_secret_once_and_use_it(page, live_server, admin, screenshot):
    sign_in(page, live_server, admin.email)
    client_id, secret = create_client(page, live_server, "billing-sync")
    expect(page.get_by_text("This secret will not be shown again.")).to_be_visible()
    assert len(secret) >= 32
    # The snippets hold the real values; the copy buttons are there with JavaScript.
    expect(page.locator("#snippet-basic")).to_have_value(re.compile(re.escape(client_id)))
    expect(page.locator("button.copy-button").first).to_be_visible()
    # The secret field can be selected from the keyboard: focus it and select all.
    page.locator("#client-secret").focus()
    page.keyboard.press("Control+A")
    selected = page.evaluate(
        "() => { const e = document.activeElement;"
        " return e.value.substring(e.selectionStart, e.selectionEnd); }"
    )
    assert selected == secret
    screenshot(page, "secret-shown")

    # A real HTTP client gets a token with that secret.
    response = get_token(live_server, client_id, secret)
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"

    # Reloading the page (which re-posts the form) and going back do not show it again.
    page.reload()
    assert secret not in page.content()
    expect(page.get_by_text("already submitted")).to_be_visible()
    page.go_back()
    assert secret not in page.content()
    page.goto(f"{live_server}/clients/{client_id}")
    assert secret not in page.content()
    expect(page.get_by_role("heading", level=1)).to_contain_text("billing-sync")
    screenshot(page, "after-reload")


def test_rotate_secrets(page, live_server, admin, session, screenshot):
    old_secret, client = make_client(session, admin.memberships[0].org, name="rotating")
    sign_in(page, live_server, admin.email)
    page.goto(f"{live_server}/clients/{client.public_id}")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Add secret").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New secret for rotating")
    new_secret = page.locator("#client-secret").input_value()
    assert new_secret != old_secret
    assert get_token(live_server, client.public_id, new_secret).status_code == 200
    assert get_token(live_server, client.public_id, old_secret).status_code == 200

    page.get_by_role("link", name="Go to rotating").click()
    expect(page).to_have_url(re.compile(rf"/clients/{client.public_id}(#.*)?$"))
    old_hint = old_secret[-4:]
    row = page.locator("tr", has=page.get_by_text(f"…{old_hint}"))
    click_and_accept(page, row.get_by_role("button", name=re.compile("^Revoke")))
    expect(page.locator("tr", has=page.get_by_text(f"…{old_hint}")).locator(".badge")) \
        .to_have_text("revoked")
    screenshot(page, "rotated")

    refused = get_token(live_server, client.public_id, old_secret)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert get_token(live_server, client.public_id, new_secret).status_code == 200


def test_mint_then_revoke_and_see_it_inactive(page, live_server, admin, session, screenshot):
    secret, client = make_client(session, admin.memberships[0].org, name="minter",
                                 scopes=["orders:read", "orders:write"], audiences=[AUDIENCE])
    sign_in(page, live_server, admin.email)
    page.goto(live_server + "/tokens/mint")
    page.locator("#pick-client").select_option(client.public_id)
    page.get_by_role("button", name="Use this client").click()
    expect(page.get_by_label("orders:read")).to_be_checked()  # all allowed scopes by default
    page.get_by_label("orders:write").uncheck()
    page.get_by_label("Lifetime (seconds)").fill("300")
    page.get_by_label("Custom claims (JSON object)").fill('{"iss": "evil"}')
    page.get_by_role("button", name="Mint token").click()
    expect(page.locator("#custom_claims-error")).to_have_text(  # not a 500
        "Reserved claim cannot be set: iss.")

    page.get_by_label("Custom claims (JSON object)").fill('{"tier": "gold"}')
    page.get_by_role("button", name="Mint token").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Token minted for minter")
    token = page.locator("#minted-token").input_value()
    jti = page.locator("#minted-jti").inner_text()
    expect(page.locator("#token-claims")).to_contain_text('"tier": "gold"')
    expect(page.locator("#token-claims")).to_contain_text('"scope": "orders:read"')
    screenshot(page, "minted")

    active = introspect(live_server, client.public_id, secret, token)
    assert active["active"] is True and active["jti"] == jti

    page.get_by_role("link", name="revoke it").click()
    page.get_by_role("textbox", name="Access token or jti").fill(token)
    page.get_by_role("button", name="Revoke token").click()
    expect(page.get_by_role("main")).to_contain_text(jti)
    expect(page.get_by_role("main")).to_contain_text("minter")
    screenshot(page, "revoked")

    assert introspect(live_server, client.public_id, secret, token) == {"active": False}


def test_usage_chart_and_csv_export(page, live_server, admin, session, screenshot):
    secret, client = make_client(session, admin.memberships[0].org, name="busy")
    for _ in range(3):
        assert get_token(live_server, client.public_id, secret).status_code == 200
    assert get_token(live_server, client.public_id, "wrong-secret").status_code == 401

    sign_in(page, live_server, admin.email)
    page.get_by_role("link", name="Usage").click()
    expect(page.locator("#total-issued")).to_have_text("3")
    expect(page.locator("#total-failed")).to_have_text("1")
    chart = page.locator(".chart[data-rendered='true']").first
    expect(chart.locator("svg")).to_be_visible()
    expect(chart.locator("svg rect").first).to_be_attached()
    screenshot(page, "usage")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(download.path().read_text(encoding="utf-8"))))
    kinds = [r["kind"] for r in rows]
    assert kinds.count("token_issued") == 3
    assert len(rows) == 4 and all(r["client_name"] == "busy" for r in rows)


def test_viewer_is_refused(page, live_server, session, screenshot):
    org = make_org(session, name="Viewer Org")
    viewer = make_user(session, org=org, role="viewer")
    _secret, client = make_client(session, org, name="read-only-client")
    sign_in(page, live_server, viewer.email)
    page.goto(f"{live_server}/clients/{client.public_id}")
    # A viewer reads everything but sees no buttons that change anything.
    expect(page.get_by_role("heading", level=1)).to_contain_text("read-only-client")
    expect(page.get_by_role("button", name="Add secret")).to_have_count(0)
    expect(page.get_by_role("button", name="Revoke all tokens")).to_have_count(0)

    # A crafted form (the viewer has a valid CSRF token from their own session) is refused.
    page.evaluate(
        """(url) => {
            const f = document.createElement('form');
            f.method = 'post'; f.action = url;
            const t = document.createElement('input');
            t.type = 'hidden'; t.name = 'csrf_token';
            t.value = document.querySelector('input[name=csrf_token]').value;
            f.appendChild(t); document.body.appendChild(f); f.submit();
        }""",
        f"{live_server}/clients/{client.public_id}/disable",
    )
    expect(page.get_by_role("heading", level=1)) \
        .to_have_text("You don't have permission to do this")
    screenshot(page, "refused")
    session.refresh(client)
    assert client.enabled


def test_whole_journey_without_javascript(browser, live_server, admin, screenshot):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        sign_in(page, live_server, admin.email)
        client_id, secret = create_client(page, live_server, "no-js")
        # Without JavaScript the copy buttons stay hidden; the values are still there.
        expect(page.locator("button.copy-button").first).to_be_hidden()
        token = get_token(live_server, client_id, secret).json()["access_token"]

        page.goto(live_server + "/tokens/revoke")
        page.get_by_role("textbox", name="Access token or jti").fill(token)
        page.get_by_role("button", name="Revoke token").click()
        expect(page.get_by_role("main")).to_contain_text("no-js")
        assert introspect(live_server, client_id, secret, token) == {"active": False}

        page.goto(live_server + "/usage")
        # The chart's data table is what a page without JavaScript shows.
        expect(page.locator(".chart-table table").first).to_be_visible()
        expect(page.locator(".chart[data-rendered='true']")).to_have_count(0)
        screenshot(page, "usage-no-js")
    finally:
        context.close()


def test_register_an_api_grant_it_and_see_how_to_validate(page, live_server, session,
                                                          screenshot):
    org = make_org(session, name="API Org")
    user = make_user(session, org=org, role="admin")
    sign_in(page, live_server, user.email)
    page.get_by_role("link", name="APIs").click()
    page.get_by_role("link", name="Register an API").click()
    page.get_by_label("Name", exact=True).fill("Billing")
    page.get_by_label("Identifier").fill("not a url")
    page.get_by_role("button", name="Register API").click()
    expect(page.locator("#identifier-error")).to_contain_text(
        "The identifier must be an absolute URI")
    page.get_by_label("Identifier").fill("https://billing.api-org.test")
    page.get_by_label("Scopes").fill("invoices:read Read invoices")
    page.get_by_role("button", name="Register API").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Billing")

    # The scope editor: add one, then the validation panel names this API.
    page.get_by_label("Scope", exact=True).fill("invoices:write")
    page.get_by_label("What it allows").last.fill("Create invoices")
    page.get_by_role("button", name="Add scope").click()
    expect(page.get_by_role("cell", name="invoices:write", exact=True)).to_be_visible()
    expect(page.locator("#snippet-verify-python")).to_have_value(
        re.compile(re.escape('AUDIENCE = "https://billing.api-org.test"')))
    screenshot(page, "api-page")

    page.goto(live_server + "/clients/new")
    page.get_by_label("Name", exact=True).fill("invoicer")
    page.get_by_label("invoices:read").check()  # ticking a scope grants its API
    page.get_by_role("button", name="Create client").click()
    client_id = page.locator("#client-id").input_value()
    secret = page.locator("#client-secret").input_value()
    response = get_token(live_server, client_id, secret)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "invoices:read"

    # The API cannot be deleted while the client is granted it.
    page.get_by_role("link", name="APIs").click()
    page.get_by_role("link", name="Billing").click()
    page.get_by_role("link", name="Delete API").click()
    expect(page.get_by_text("cannot be deleted while clients are granted it")).to_be_visible()
    expect(page.get_by_role("button", name="Delete API")).to_have_count(0)
    screenshot(page, "delete-refused")
