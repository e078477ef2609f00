"""Portal fixtures: signed-in test clients for each role, CSRF tokens included.

The portal suites run on SQLite; queries that differ by backend are tested on
both in tests/services.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.factories import PASSWORD, make_user

CSRF_INPUT = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


INPUT_TAG = re.compile(r"<input\b([^>]*)>")
ATTRIBUTE = re.compile(r'([a-zA-Z_:-]+)="([^"]*)"')


def hidden_fields(html: str) -> dict[str, str]:
    """Name -> value of the page's hidden inputs, whatever order their attributes are in
    (WTForms writes ``id name type value``; hand-written inputs often ``type name value``)."""
    fields: dict[str, str] = {}
    for attrs in INPUT_TAG.findall(html):
        found = dict(ATTRIBUTE.findall(attrs))
        if found.get("type") == "hidden" and "name" in found:
            fields.setdefault(found["name"], unescape(found.get("value", "")))
    return fields


class Portal:
    """A browser-like test client: signs in through the form, posts with CSRF tokens."""

    def __init__(self, http: FlaskClient) -> None:
        self.http = http
        self.token = ""

    def sign_in(self, email: str, password: str = PASSWORD) -> TestResponse:
        page = self.http.get("/signin")
        self.token = csrf_token(page.get_data(as_text=True))
        response = self.http.post("/signin", data={
            "email": email, "password": password, "csrf_token": self.token})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        self.refresh_token()  # a new session gets a new CSRF token
        return response

    def refresh_token(self) -> None:
        """Read the CSRF token of the current session from a page that has a form."""
        page = self.http.get("/account", follow_redirects=True)
        self.token = csrf_token(page.get_data(as_text=True))

    def get(self, url: str, **kwargs: Any) -> TestResponse:
        return self.http.get(url, **kwargs)

    def post(self, url: str, data: dict[str, Any] | None = None, *, csrf: bool = True,
             **kwargs: Any) -> TestResponse:
        body = dict(data or {})
        if csrf:
            body.setdefault("csrf_token", self.token)
        return self.http.post(url, data=body, **kwargs)

    def form_post(self, page_url: str, data: dict[str, Any], *, action: str | None = None,
                  **kwargs: Any) -> TestResponse:
        """GET a page, then POST its form with the page's hidden fields plus ``data``."""
        html = self.get(page_url).get_data(as_text=True)
        hidden = hidden_fields(html)
        return self.http.post(action or page_url, data={**hidden, **data}, **kwargs)


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url


def _portal_for(app: Flask, session: Any, org: Any, role: str) -> Portal:
    user = make_user(session, org=org, role=role)
    portal = Portal(app.test_client())
    portal.sign_in(user.email)
    portal.user = user  # type: ignore[attr-defined]
    return portal


def _signed_in(name: str, role: str, org_fixture: str) -> Any:
    """A fixture ``name``: a :class:`Portal` signed in as a new ``role`` of ``org_fixture``
    (``org``: ours of ``tenants``; ``other_org``: theirs)."""

    def portal(app: Flask, session: Any, request: pytest.FixtureRequest) -> Portal:
        return _portal_for(app, session, request.getfixturevalue(org_fixture), role)

    portal.__doc__ = f"Signed in as a new {role} of ``{org_fixture}``."
    return pytest.fixture(name=name)(portal)


owner = _signed_in("owner", "owner", "org")
admin = _signed_in("admin", "admin", "org")
viewer = _signed_in("viewer", "viewer", "org")
outsider = _signed_in("outsider", "owner", "other_org")  # an owner of another org


@pytest.fixture(params=["owner", "admin"])
def editor(request: pytest.FixtureRequest) -> Portal:
    """Each role that may change the org's settings in turn: the ``owner``, then an ``admin``."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


# -- one of each org-owned object, for the route walkers (tests/portal/test_security.py,
#    tests/portal/test_a11y.py) ----------------------------------------------------------


class OrgObjects:
    """Real objects of one org, by the URL parameter name that identifies them.

    ``url(rule)`` builds a rule's URL from them. A route whose parameter is not
    in :attr:`params` makes the walking test fail: add the new name here, so no
    route escapes the security walk.
    """

    def __init__(self, org: Any, params: dict[str, Any]) -> None:
        self.org = org
        self.params = params

    @staticmethod
    def rules(app: Flask, method: str) -> list[Any]:
        """Every rule of the portal blueprint that accepts ``method``, in a stable order."""
        return sorted(
            (r for r in app.url_map.iter_rules()
             if r.endpoint.startswith("portal.") and method in (r.methods or ())),
            key=lambda r: r.rule,
        )

    @staticmethod
    def request(problems: list[str], call: Any, where: str) -> Any:
        """``call()``, or None with a problem noted when the app raised (a walk goes on)."""
        try:
            return call()
        except Exception as e:  # report every broken route, not only the first
            problems.append(f"{where}: raised {type(e).__name__}: {e}"[:500])
            return None

    def pages(self, app: Flask, portal: Portal, problems: list[str]) -> Iterator[tuple[str, Any]]:
        """``(url, response)`` of every GET route of the portal, fetched by ``portal`` with
        redirects followed; a request that raised is noted in ``problems`` and skipped."""
        for rule in self.rules(app, "GET"):
            url = self.url(rule)
            response = self.request(
                problems, lambda url=url: portal.get(url, follow_redirects=True), f"GET {url}")
            if response is not None:
                yield url, response

    def url(self, rule: Any) -> str:
        unknown = sorted(set(rule.arguments) - set(self.params))
        if unknown:
            pytest.fail(
                f"route {rule.rule} ({rule.endpoint}) has URL parameter(s) {unknown} that the "
                "walkers cannot fill: add each name to OrgObjects in tests/portal/conftest.py "
                "(the org_objects fixture), mapped to a real object of the org",
                pytrace=False,
            )
        values = {name: self.params[name] for name in rule.arguments}
        method = sorted((rule.methods or {"GET"}) - {"HEAD", "OPTIONS"})[0]
        return str(rule.map.bind("localhost").build(rule.endpoint, values, method=method))


@pytest.fixture
def org_objects(app, session, org) -> OrgObjects:
    """One of each object in ``org`` (see :func:`make_org_objects`)."""
    return make_org_objects(session, org)


def make_org_objects(session: Any, org: Any) -> OrgObjects:
    """One of each object in ``org`` (client, its API and a scope of it, secret, token,
    API key, member, signing key, pending invitation); also used by the browser's walk
    of every page (tests/browser/test_every_page.py)."""
    import jwt
    from sqlalchemy import select

    from portal.core.actor import Actor
    from portal.core.signing_keys.models import KeyState, SigningKey
    from portal.core.users.invitations import invite
    from portal.core.users.models import Membership
    from tests.factories import issue, make_api_key, make_client

    _secret, client = make_client(session, org, name="walked client")
    api = client.grants[0].api
    token = issue(session, client)
    _plaintext, api_key = make_api_key(session, org)
    member = make_user(session, org=org, role="viewer", email="walked.member@example.com")
    membership = session.scalar(
        select(Membership).where(Membership.user_id == member.id, Membership.org_id == org.id))
    kid = session.scalar(select(SigningKey.kid).where(
        SigningKey.org_id == org.id, SigningKey.state == KeyState.ACTIVE))
    _link_secret, invitation = invite(session, org=org, email="walked.invitee@example.com",
                                      role="viewer", actor=Actor("test"))
    session.commit()
    return OrgObjects(org, {
        "client_id": client.public_id,
        "secret_id": client.secrets[0].id,
        "jti": jwt.decode(token, options={"verify_signature": False})["jti"],
        "key_id": api_key.id,
        "member_id": membership.id,
        "kid": kid,
        "invitation_id": invitation.id,
        "api_id": api.public_id,
        "scope_id": api.scopes[0].id,
    })
