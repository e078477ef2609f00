"""Portal fixtures: signed-in test clients for each role, CSRF tokens included.

The portal suites run on SQLite; queries that differ by backend are tested on
both in tests/services.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.factories import PASSWORD, make_org, make_user

CSRF_INPUT = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


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
        return response

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
        hidden = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"',
                                 html))
        return self.http.post(action or page_url, data={**hidden, **data}, **kwargs)


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url


@pytest.fixture
def org(session):
    return make_org(session, name="Acme")


@pytest.fixture
def other_org(session):
    return make_org(session, name="Globex")


def _portal_for(app: Flask, session: Any, org: Any, role: str) -> Portal:
    user = make_user(session, org=org, role=role)
    portal = Portal(app.test_client())
    portal.sign_in(user.email)
    portal.user = user  # type: ignore[attr-defined]
    return portal


@pytest.fixture
def owner(app, session, org) -> Portal:
    """Signed in as an owner of ``org``."""
    return _portal_for(app, session, org, "owner")


@pytest.fixture
def admin(app, session, org) -> Portal:
    """Signed in as an admin of ``org``."""
    return _portal_for(app, session, org, "admin")


@pytest.fixture
def viewer(app, session, org) -> Portal:
    """Signed in as a viewer of ``org``."""
    return _portal_for(app, session, org, "viewer")


@pytest.fixture
def outsider(app, session, other_org) -> Portal:
    """Signed in as an owner of another org."""
    return _portal_for(app, session, other_org, "owner")
