"""Fixtures shared by the protocol suites: an org, a client of it, a token, another org.

Every test here runs through both doors of the protocol endpoints: the WSGI door in
front of Flask (``PROTOCOL_DOOR`` on, the default) and the Flask views alone — on
SQLite, and through the WSGI door on PostgreSQL too (the doors share every statement,
so the Flask door on PostgreSQL would repeat the same database work).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import get_token, make_client, make_org

BACKEND_DOORS = [
    pytest.param(("sqlite", "wsgi"), id="sqlite-wsgi"),
    pytest.param(("sqlite", "flask"), id="sqlite-flask"),
    pytest.param(("postgresql", "wsgi"), id="postgresql-wsgi", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKEND_DOORS)
def backend_door(request: pytest.FixtureRequest) -> tuple[str, str]:
    return tuple(request.param)  # type: ignore[return-value]


@pytest.fixture
def database_url(request: pytest.FixtureRequest, backend_door: tuple[str, str]) -> str:
    name = "sqlite_url" if backend_door[0] == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def door(backend_door: tuple[str, str]) -> str:
    """``wsgi``: the WSGI door answers token and introspection requests; ``flask``: the views."""
    return backend_door[1]


@pytest.fixture
def extra_config() -> dict[str, Any]:
    """A test's own configuration (parametrise this one, not ``app_config``)."""
    return {}


@pytest.fixture
def app_config(door: str, extra_config: dict[str, Any]) -> dict[str, Any]:
    return {"PROTOCOL_DOOR": door == "wsgi", **extra_config}


@pytest.fixture
def org(session):
    return make_org(session)


@pytest.fixture
def other_org(session):
    """A second tenant, for isolation tests."""
    return make_org(session)


@pytest.fixture
def acme(session, org):
    """``(secret, client)``: scopes ``read write``, audience ``https://api.example.com``."""
    return make_client(session, org)


@pytest.fixture
def token(client, acme):
    secret, c = acme
    return get_token(client, c, secret)
