"""Fixtures shared by the protocol suites: an org, a client of it, a token, another org.

Every test here runs through both doors of the protocol endpoints: the WSGI door in
front of Flask (``PROTOCOL_DOOR`` on, the default) and the Flask views alone — on
SQLite, and through the WSGI door on PostgreSQL too (the doors share every statement,
so the Flask door on PostgreSQL would repeat the same database work).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from sqlalchemy import select

from portal.core.usage.models import UsageEvent, UsageKind
from tests.factories import basic, get_token, make_client

# A header nested deeper than the JSON parser recurses (once a 500).
NESTED_HEADER = base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("=") + ".e30.c2ln"
#: Strings that are no token of ours, for introspection and revocation.
NOT_TOKENS = ["", "garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", NESTED_HEADER]

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
def acme(session, org):
    """``(secret, client)``: scopes ``read write``, audience ``https://api.example.com``."""
    return make_client(session, org)


@pytest.fixture
def token(client, acme):
    secret, c = acme
    return get_token(client, c, secret)


def wrong_secrets_then_the_right_one_elsewhere(http: Any, other: Any, c: Any, secret: str,
                                               failures: int = 3) -> Any:
    """``failures`` token requests with a wrong secret through ``http``, then one with the
    right ``secret`` through ``other`` (a second app: another worker or machine); the
    second app's response."""
    grant = {"grant_type": "client_credentials"}
    for _ in range(failures):
        http.post("/oauth/token", data=grant, headers=basic(c.public_id, "wrong"))
    return other.test_client().post("/oauth/token", data=grant,
                                    headers=basic(c.public_id, secret))


def only_usage_event(session: Any, kind: UsageKind) -> UsageEvent:
    """The usage event of ``kind``, asserting it is the only one."""
    events = session.scalars(select(UsageEvent).where(UsageEvent.kind == kind)).all()
    assert len(events) == 1, events
    return events[0]
