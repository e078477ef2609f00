"""Fixtures of the management API suites: two orgs, a key of each role, a caller."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import API_IDENTIFIER, bearer, make_api, make_api_key


@pytest.fixture
def orders_api(session, org):
    return make_api(session, org, identifier=API_IDENTIFIER, scopes=("read", "write"),
                    name="Orders")


@pytest.fixture
def admin_key(session, org) -> str:
    return make_api_key(session, org, role="admin", name="admin key")[0]


@pytest.fixture
def viewer_key(session, org) -> str:
    return make_api_key(session, org, role="viewer", name="viewer key")[0]


class Caller:
    """``client.<method>`` on ``/api/v1`` with an API key, JSON in."""

    def __init__(self, http: Any, key: str) -> None:
        self.http = http
        self.key = key

    def __call__(self, method: str, path: str, json: Any = None, **kwargs: Any) -> Any:
        headers = {**bearer(self.key), **kwargs.pop("headers", {})}
        return self.http.open("/api/v1" + path, method=method, json=json, headers=headers,
                              **kwargs)


@pytest.fixture
def admin(client, admin_key) -> Caller:
    return Caller(client, admin_key)


@pytest.fixture
def viewer(client, viewer_key) -> Caller:
    return Caller(client, viewer_key)


def new_client_body(**overrides: Any) -> dict[str, Any]:
    return {"name": "billing", "grants": [{"api": API_IDENTIFIER, "scopes": ["read"]}],
            **overrides}


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """SQLite: the API adds no SQL of its own beyond the services (tested on both backends)
    and its pages; test_security.py walks every operation on PostgreSQL too."""
    return sqlite_url
