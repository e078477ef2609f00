"""``DURABLE_TOKEN_WRITES``: whether the protocol endpoints' commits wait for the disk.

Off (the default) they are committed before each answer but not flushed at each commit:
SQLite's WAL with ``synchronous=NORMAL``, PostgreSQL with ``synchronous_commit=off`` on the
token store's connections only. On: SQLite ``synchronous=FULL``, PostgreSQL the server's
setting. The portal's own session never changes.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from portal.core.db import get_session
from portal.core.tokens.store import token_store
from tests.factories import basic

SQLITE_SYNCHRONOUS = {1: "NORMAL", 2: "FULL"}


def store_setting(app) -> str:
    """The flush-at-commit setting of a connection of the token store."""
    connections = token_store().connections
    with connections.connection() as connection:
        cursor = connection.cursor()
        try:
            if connections.sqlite:
                cursor.execute("PRAGMA synchronous")
                return SQLITE_SYNCHRONOUS[cursor.fetchone()[0]]
            cursor.execute("SHOW synchronous_commit")
            return str(cursor.fetchone()[0])
        finally:
            cursor.close()


def session_setting(session) -> str:
    if session.get_bind().dialect.name == "sqlite":
        return SQLITE_SYNCHRONOUS[session.scalar(text("PRAGMA synchronous"))]
    return str(session.scalar(text("SHOW synchronous_commit")))


def test_by_default_token_writes_do_not_wait_for_a_flush(app, database_url):
    expected = "NORMAL" if database_url.startswith("sqlite") else "off"
    assert store_setting(app) == expected


def test_the_portals_session_keeps_the_servers_setting(app, database_url):
    expected = "NORMAL" if database_url.startswith("sqlite") else "on"
    assert session_setting(get_session()) == expected
    get_session().rollback()


@pytest.mark.parametrize("app_config", [{"DURABLE_TOKEN_WRITES": True}])
def test_durable_token_writes_wait_for_the_flush(app, database_url):
    expected = "FULL" if database_url.startswith("sqlite") else "on"
    assert store_setting(app) == expected


@pytest.mark.parametrize("app_config", [{"DURABLE_TOKEN_WRITES": True}])
def test_a_token_is_recorded_with_durable_writes_too(app, client, acme):
    secret, c = acme
    response = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                           headers=basic(c.public_id, secret))
    assert response.status_code == 200
    introspected = client.post("/oauth/introspect",
                               data={"token": response.get_json()["access_token"]},
                               headers=basic(c.public_id, secret))
    assert introspected.get_json()["active"] is True
