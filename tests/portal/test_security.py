"""Portal-wide security guarantees, checked by walking every route of the blueprint.

The walkers read ``app.url_map`` when they run, so routes added later are
covered without touching this file; a route with a URL parameter the walkers
cannot fill fails loudly (see ``OrgObjects`` in conftest.py).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from http import HTTPStatus
from typing import Any

import pytest
from sqlalchemy import select

from portal.core.db import Base, get_session
from portal.views import OPEN_POSTS
from tests.factories import PASSWORD, make_org, make_user
from tests.portal.conftest import OrgObjects, Portal, csrf_token

# Pages for signed-out visitors too: an invitation link opens without an account.
PUBLIC_PAGES = {"portal.signin", "portal.signup", "portal.invitation",
                "portal.invitation_accept"}
CSRF_MESSAGE = ("The form expired or was not submitted from this site. "
                "Go back, reload and try again.")


def db_snapshot() -> dict[str, list[str]]:
    """Every committed row of every table.

    Test-client requests share the test's app context and so its database
    session; rolling it back first drops what a request flushed but did not
    commit, as closing the session at the end of a real request would.
    """
    session = get_session()
    session.rollback()
    return {
        table.name: sorted(repr(tuple(row)) for row in session.execute(select(table)))
        for table in Base.metadata.sorted_tables
    }


def changed_tables(before: dict[str, list[str]]) -> list[str]:
    after = db_snapshot()
    return [name for name in before if before[name] != after[name]]


def body(response: Any) -> str:
    return str(response.get_data(as_text=True))


# -- (a) CSRF on every state-changing route --------------------------------------------


@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["missing", "forged"])
def test_every_post_route_refuses_a_request_without_a_valid_csrf_token(
        app, owner, org_objects, token):
    rules = OrgObjects.rules(app, "POST")
    assert {"portal.signin", "portal.signout", "portal.members_add"} <= {r.endpoint for r in rules}
    failures = []
    for rule in rules:
        url = org_objects.url(rule)
        before = db_snapshot()
        data = {} if token is None else {"csrf_token": token}

        response = OrgObjects.request(
            failures, lambda url=url, data=data: owner.post(url, data, csrf=False), f"POST {url}")

        if response is None:
            pass
        elif response.status_code != HTTPStatus.BAD_REQUEST:
            failures.append(f"POST {url} ({rule.endpoint}): {response.status_code}, not 400")
        elif CSRF_MESSAGE not in body(response):
            failures.append(f"POST {url} ({rule.endpoint}): 400 without the friendly CSRF page")
        if tables := changed_tables(before):
            failures.append(f"POST {url} ({rule.endpoint}) changed {tables}")
    assert not failures, "\n".join(failures)
    assert owner.get("/members").status_code == HTTPStatus.OK  # still signed in


def test_csrf_failure_is_a_friendly_html_page(owner):
    response = owner.post("/signout", csrf=False)

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.mimetype == "text/html"
    html = body(response)
    assert "<h1>The form expired</h1>" in html
    assert CSRF_MESSAGE in html
    assert 'href="/"' in html


# -- (b) viewers change nothing ----------------------------------------------------------


def test_every_post_route_is_forbidden_to_a_viewer(app, viewer, org_objects):
    failures = []
    for rule in OrgObjects.rules(app, "POST"):
        if rule.endpoint in OPEN_POSTS:
            continue
        url = org_objects.url(rule)
        before = db_snapshot()

        response = OrgObjects.request(failures, lambda url=url: viewer.post(url, {}),
                                      f"POST {url}")

        if response is not None and response.status_code != HTTPStatus.FORBIDDEN:
            failures.append(f"POST {url} ({rule.endpoint}): {response.status_code}, not 403")
        if tables := changed_tables(before):
            failures.append(f"POST {url} ({rule.endpoint}) changed {tables}")
    assert not failures, "\n".join(failures)


def test_forbidden_page_says_why(viewer, org_objects):
    response = viewer.post(f"/members/{org_objects.params['member_id']}/remove")

    assert response.status_code == HTTPStatus.FORBIDDEN
    html = body(response)
    assert "<h1>You don&#39;t have permission to do this</h1>" in html
    assert "Your role in this organisation is read-only." in html
    assert 'href="/"' in html


# -- (c) another org's objects are not found --------------------------------------------


def test_every_route_with_parameters_hides_another_orgs_objects(app, owner, outsider,
                                                                org_objects):
    failures = []
    walked = 0
    for method in ("GET", "POST"):
        for rule in OrgObjects.rules(app, method):
            if not rule.arguments:
                continue  # parameterless routes test other orgs' ids in their own suites
            walked += 1
            url = org_objects.url(rule)
            before = db_snapshot()

            response = OrgObjects.request(
                failures,
                lambda url=url, method=method: (
                    outsider.get(url) if method == "GET" else outsider.post(url, {})),
                f"{method} {url}")

            if response is not None and response.status_code != HTTPStatus.NOT_FOUND:
                failures.append(f"{method} {url} ({rule.endpoint}) as another org's owner: "
                                f"{response.status_code}, not 404")
            if tables := changed_tables(before):
                failures.append(f"{method} {url} ({rule.endpoint}) changed {tables}")
            own = OrgObjects.request(failures, lambda url=url: owner.get(url), f"GET {url}") \
                if method == "GET" else None
            if own is not None and own.status_code == HTTPStatus.NOT_FOUND:
                failures.append(f"GET {url} ({rule.endpoint}) is 404 for its own org's owner "
                                "too: the walk proves nothing; fix OrgObjects' mapping")
    assert walked, "no portal route has URL parameters yet"
    assert not failures, "\n".join(failures)


def test_a_parameter_the_walkers_do_not_know_fails_the_walk(app, org_objects):
    class FakeRule:
        rule, endpoint, arguments, methods = "/widgets/<widget_id>", "portal.widget", \
            {"widget_id"}, {"GET"}

    with pytest.raises(pytest.fail.Exception, match="add each name to OrgObjects"):
        org_objects.url(FakeRule())


# -- (d) signed-out visitors ---------------------------------------------------------------


def test_every_page_sends_a_signed_out_visitor_to_sign_in(app, org_objects):
    visitor = app.test_client()
    failures = []
    for rule in OrgObjects.rules(app, "GET"):
        if rule.endpoint in PUBLIC_PAGES:
            continue
        url = org_objects.url(rule)

        response = OrgObjects.request(failures, lambda url=url: visitor.get(url), f"GET {url}")
        if response is None:
            continue
        location = response.headers.get("Location", "")
        if response.status_code != HTTPStatus.FOUND or not location.startswith("/signin?next="):
            failures.append(f"GET {url} ({rule.endpoint}): {response.status_code} {location!r}")
    assert not failures, "\n".join(failures)


def test_no_post_route_serves_a_signed_out_visitor(app, org_objects):
    visitor = Portal(app.test_client())
    visitor.token = csrf_token(body(visitor.get("/signin")))
    failures = []
    for rule in OrgObjects.rules(app, "POST"):
        url = org_objects.url(rule)
        before = db_snapshot()
        for with_token in (False, True):
            response = OrgObjects.request(
                failures, lambda url=url, t=with_token: visitor.post(url, {}, csrf=t),
                f"POST {url}")
            if response is None:
                continue
            location = response.headers.get("Location", "")
            if rule.endpoint in PUBLIC_PAGES:
                ok = response.status_code in (HTTPStatus.BAD_REQUEST, HTTPStatus.NOT_FOUND)
            elif with_token:
                ok = response.status_code == HTTPStatus.FOUND and \
                    location.startswith("/signin?next=")
            else:
                ok = response.status_code == HTTPStatus.BAD_REQUEST
            if not ok:
                failures.append(f"POST {url} ({rule.endpoint}) signed out, "
                                f"{'with' if with_token else 'without'} a CSRF token: "
                                f"{response.status_code} {location!r}")
        if tables := changed_tables(before):
            failures.append(f"POST {url} ({rule.endpoint}) signed out changed {tables}")
    assert not failures, "\n".join(failures)


# -- (e) headers and cookies ---------------------------------------------------------------


class InlineCode(HTMLParser):
    """Finds what the Content-Security-Policy would block: inline scripts, styles, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            if name == "style":
                self.found.append(f"<{tag} style=...>")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith(
                    "javascript:"):
                self.found.append(f"<{tag} {name}=javascript:...>")


def assert_security_headers(response: Any, where: str) -> list[str]:
    problems = []
    csp = response.headers.get("Content-Security-Policy", "")
    if "default-src 'self'" not in csp or "unsafe-inline" in csp or "unsafe-eval" in csp:
        problems.append(f"{where}: Content-Security-Policy {csp!r}")
    expected = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"}
    for name, value in expected.items():
        if response.headers.get(name) != value:
            problems.append(f"{where}: {name} {response.headers.get(name)!r}")
    if response.headers.get("Referrer-Policy") not in ("same-origin", "strict-origin",
                                                        "strict-origin-when-cross-origin",
                                                        "no-referrer"):
        problems.append(f"{where}: Referrer-Policy {response.headers.get('Referrer-Policy')!r}")
    return problems


def test_every_portal_page_sends_security_headers_and_no_inline_code(app, owner, org_objects):
    problems = []
    for url, response in org_objects.pages(app, owner, problems):
        problems += assert_security_headers(response, f"GET {url}")
        if response.mimetype == "text/html":
            parser = InlineCode()
            parser.feed(body(response))
            problems += [f"GET {url}: {what} (blocked by the CSP)" for what in parser.found]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("url", ["/signin", "/no/such/page"])
def test_public_and_error_pages_send_security_headers(client, url):
    assert not assert_security_headers(client.get(url), url)


def test_signed_out_error_pages_are_friendly_too(client):
    response = client.get("/no/such/page")

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert "<h1>Page not found</h1>" in body(response)
    assert 'href="/"' in body(response)


def test_not_found_page_for_a_signed_in_user(owner):
    response = owner.get("/no/such/page")

    assert response.status_code == HTTPStatus.NOT_FOUND
    assert "<h1>Page not found</h1>" in body(response)
    assert 'aria-label="Portal"' in body(response)  # inside the usual layout


def session_cookie(response: Any) -> str:
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert cookies, response.headers
    return cookies[-1]


def test_session_cookie_is_httponly_and_samesite_lax(app, session):
    user = make_user(session, org=make_org(session))
    portal = Portal(app.test_client())

    cookie = session_cookie(portal.sign_in(user.email))

    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "secure" not in attributes  # the test issuer is plain http


class TestHttpsIssuer:
    @pytest.fixture
    def app_config(self):
        return {"ISSUER": "https://auth.example.com"}

    def test_session_cookie_is_secure(self, app, session):
        user = make_user(session, org=make_org(session))
        http = app.test_client()
        base = "https://auth.example.com"
        page = http.get("/signin", base_url=base)

        response = http.post("/signin", base_url=base, headers={"Referer": base + "/signin"},
                             data={"email": user.email, "password": PASSWORD,
                                   "csrf_token": csrf_token(body(page))})

        assert response.status_code == HTTPStatus.FOUND
        attributes = {part.strip().lower() for part in session_cookie(response).split(";")[1:]}
        assert {"secure", "httponly", "samesite=lax"} <= attributes


def test_no_page_offers_remember_me(client):
    assert not re.search(r"remember", body(client.get("/signin")), re.IGNORECASE)
