"""Every portal page at 390 px, for every role: no horizontal page scroll, and axe-core
finds no violation.

The pages are the portal's GET routes (the walk of tests/portal/test_a11y.py, which checks
the HTML itself without a browser), filled with one of each object of an org, plus the
pages a signed-out visitor sees. One live server and one browser serve the whole module.

axe-core is vendored from npm (``tests/browser/vendor/axe-core``, 4.14.1, MPL-2.0, with
its licence) and injected from that file, so the suite needs no network and always runs
the same rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from portal import create_app
from portal.core.actor import Actor
from portal.core.db import get_engine, get_session
from portal.core.types import utcnow
from portal.core.usage import services as usage
from portal.core.usage.models import UsageKind
from portal.core.users.invitations import invite
from tests.conftest import base_config, migrate
from tests.factories import PASSWORD, issue, make_client, make_org, make_user
from tests.live.servers import serving
from tests.portal.conftest import OrgObjects, make_org_objects

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 390, 844
ROLES = ("owner", "admin", "viewer")
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
#: Routes that are not pages: a download.
NOT_PAGES = {"portal.usage_csv"}
RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => `${v.id} (${v.impact}): ${v.help} at ` +
    v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(", "));
}"""
OVERFLOW = """() => {
  const clipped = (e) => {  // inside a scrolling box that itself fits the screen
    for (let a = e.parentElement; a; a = a.parentElement) {
      if (["auto", "scroll", "hidden"].includes(getComputedStyle(a).overflowX)) {
        return a.getBoundingClientRect().right <= window.innerWidth + 1;
      }
    }
    return false;
  };
  const wide = [...document.querySelectorAll("body *")]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !clipped(e))
    .slice(-5).map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") +
                       (typeof e.className === "string" && e.className ? "." + e.className : ""));
  return {width: document.documentElement.scrollWidth, wide};
}"""


@dataclass
class Site:
    base: str
    urls: list[str]
    emails: dict[str, str]  # by role, and "fresh": the owner of an org with nothing yet
    invitation: str
    caller: tuple[str, str]  # a client's id and secret


def _arrange(session: Any) -> tuple[OrgObjects, dict[str, str], str]:
    """An org with a member of each role, one of each object (the route walkers' own,
    tests/portal/conftest.py) and some long names and usage; an org with nothing yet."""
    org = make_org(session, name="Phone Org")
    emails = {role: make_user(session, org=org, role=role,
                              email=f"{role}.with.a.rather.long.address@phone-org.example").email
              for role in ROLES}
    _, client = make_client(session, org, name="a-client-name-without-any-spaces-to-wrap-on",
                            audiences=["https://orders.phone-org.example/with/a/long/path"])
    reports_secret, reports = make_client(session, org, name="reports")
    emails["caller"] = f"{reports.public_id}:{reports_secret}"
    emails["busy_client"] = client.public_id  # its page, with usage, is walked too
    token = issue(session, client)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    for minutes, kind in [(5, UsageKind.TOKEN_FAILED), (50, UsageKind.TOKEN_INTROSPECTED),
                          (70, UsageKind.TOKEN_REVOKED)]:
        usage.record_event(session, kind=kind, org_id=org.id, client_id=client.id,
                           client_ref=f"client:{client.public_id}", jti=jti,
                           now=utcnow() - timedelta(minutes=minutes))
    session.commit()
    objects = make_org_objects(session, org)
    fresh = make_org(session, name="Fresh Org")
    emails["fresh"] = make_user(session, org=fresh, role="owner", email="owner@fresh.example").email
    invitation_token, _invitation = invite(session, org=org, email="invitee@phone-org.example",
                                           role="viewer", actor=Actor("test"))
    session.commit()
    return objects, emails, f"/invitation?token={invitation_token}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    url = f"sqlite:///{tmp_path_factory.mktemp('every-page') / 'pages.db'}"
    migrate(url)
    app = create_app(base_config(url))
    with app.app_context():
        objects, emails, link = _arrange(get_session())
        urls = [objects.url(rule) for rule in OrgObjects.rules(app, "GET")
                if rule.endpoint not in NOT_PAGES]
        urls.append(f"/clients/{emails.pop('busy_client')}")
        get_session().close()
    caller_id, _, caller_secret = emails.pop("caller").partition(":")
    with serving(app, issuer=False) as base:  # the pages show http://localhost's URLs
        yield Site(base, urls, emails, link, (caller_id, caller_secret))
    with app.app_context():
        get_engine().dispose()


def _phone(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    context.add_init_script(path=str(AXE))
    return context


def _check(context: BrowserContext, base: str, urls: list[str], who: str) -> list[str]:
    problems: list[str] = []
    page = context.new_page()
    for url in urls:
        response = page.goto(base + url)
        where = f"{url} as {who}"
        if response is None or response.status >= 500:
            problems.append(f"{where}: status {response.status if response else None}")
            continue
        fit = page.evaluate(OVERFLOW)
        if fit["width"] > WIDTH:
            problems.append(f"{where}: {fit['width']} px wide; wider than the screen: "
                            f"{fit['wide']}")
        problems += [f"{where}: axe: {v}" for v in page.evaluate(RUN_AXE)]
    page.close()
    return problems


def _sign_in(context: BrowserContext, base: str, email: str) -> Page:
    page = context.new_page()
    page.goto(base + "/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return page


@pytest.mark.parametrize("role", ROLES)
def test_every_page_fits_a_phone_and_axe_finds_nothing(browser, site, role):
    context = _phone(browser)
    try:
        _sign_in(context, site.base, site.emails[role]).close()

        problems = _check(context, site.base, site.urls, role)
    finally:
        context.close()
    assert len(site.urls) >= 20
    assert not problems, "\n".join(problems)


def test_signed_out_pages_fit_a_phone_and_axe_finds_nothing(browser, site):
    context = _phone(browser)
    try:
        problems = _check(context, site.base,
                          ["/signin", site.invitation, "/invitation?token=lk_invite_nope",
                           "/no/such/page"], "a visitor")
    finally:
        context.close()
    assert not problems, "\n".join(problems)


def _luminance(rgb: tuple[int, ...]) -> float:
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c / 255) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_focus_ring_contrasts_three_to_one_with_what_is_around_it(browser, site):
    """WCAG 2.2 (2.4.13, 1.4.11): the ring against the page and the card it sits on."""
    context = _phone(browser)
    try:
        page = context.new_page()
        page.goto(site.base + "/signin")
        page.get_by_label("Email").focus()  # a text field always shows its focus ring
        ring = page.evaluate("""() => {
          const e = document.activeElement, style = getComputedStyle(e);
          const rgb = (c) => c.match(/\\d+/g).map(Number);
          return {tag: e.tagName, style: style.outlineStyle, width: parseFloat(style.outlineWidth),
                  color: rgb(style.outlineColor),
                  card: rgb(getComputedStyle(e.closest(".card") || document.body).backgroundColor),
                  page: rgb(getComputedStyle(document.body).backgroundColor)};
        }""")
    finally:
        context.close()
    assert ring["tag"] == "INPUT" and ring["style"] == "solid" and ring["width"] >= 2
    assert _contrast(tuple(ring["color"]), tuple(ring["card"])) >= 3
    assert _contrast(tuple(ring["color"]), tuple(ring["page"])) >= 3


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_a_new_org_is_shown_three_steps_and_copies_endpoint_urls(browser, site, javascript):
    context = browser.new_context(java_script_enabled=javascript)
    if javascript:
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.base)
    try:
        page = _sign_in(context, site.base, site.emails["fresh"])
        panel = page.get_by_role("region", name="Get your first token in three steps")
        expect(panel.get_by_role("heading", level=3)).to_have_text(
            ["Create a client", "Copy its secret", "Run this curl"])
        expect(panel.get_by_role("link", name="Create a client")).to_be_visible()
        token_url = page.get_by_role("textbox", name="Token", exact=True)
        expect(token_url).to_have_value("http://localhost/oauth/token")  # the issuer
        copy = page.locator('button[data-copy="endpoint-token"]')
        if not javascript:
            expect(copy).to_be_hidden()  # the URL stays there to select by hand
            return
        copy.click()
        expect(copy).to_have_text("Copied")
        expect(copy).to_be_focused()  # focus stays on the button
        assert page.evaluate("navigator.clipboard.readText()") == "http://localhost/oauth/token"
    finally:
        context.close()


def test_usage_names_who_introspected_a_token_it_did_not_recognise(browser, site):
    import requests

    client_id, secret = site.caller
    answer = requests.post(site.base + "/oauth/introspect", data={"token": "not-a-token"},
                           auth=(client_id, secret), timeout=10)
    assert answer.json() == {"active": False}
    context = browser.new_context()
    try:
        page = _sign_in(context, site.base, site.emails["owner"])
        page.goto(f"{site.base}/usage?kind=token_introspected&client={client_id}")
        row = page.locator("table.usage-events tbody tr").first
        expect(row.locator("td.usage-party").nth(0)).to_have_text("reports")
        expect(row.locator("td.usage-party").nth(1)).to_have_text("not recognised")
        expect(page.locator("#total-introspected")).to_have_text("1")
    finally:
        context.close()


def test_the_getting_started_panel_fits_a_phone_and_axe_finds_nothing(browser, site):
    context = _phone(browser)
    try:
        _sign_in(context, site.base, site.emails["fresh"]).close()
        problems = _check(context, site.base, ["/clients", "/usage"], "a new org's owner")
    finally:
        context.close()
    assert not problems, "\n".join(problems)
