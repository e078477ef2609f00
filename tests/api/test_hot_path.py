"""The token endpoint's and the well-known documents' fast paths keep their contracts."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from sqlalchemy import func, select, text

from portal.core.actor import Actor
from portal.core.clients import services as clients
from portal.core.clients.models import Client, ClientSecret
from portal.core.db import autocommit, get_engine
from portal.core.signing_keys import services as signing_keys
from portal.core.tokens.models import IssuedToken
from portal.core.usage.models import UsageEvent, UsageKind
from tests.factories import age_next_key, basic, get_token

GRANT = {"grant_type": "client_credentials"}
JWKS = "/.well-known/jwks.json"
METADATA = "/.well-known/oauth-authorization-server"


def fast_path(app):
    return app.wsgi_app


# -- JWKS and metadata -------------------------------------------------------------------


@pytest.mark.parametrize("path", [JWKS, METADATA])
def test_replayed_response_equals_the_first(client, org, path):
    first = client.get(path)
    second = client.get(path)
    assert second.status_code == HTTPStatus.OK
    assert second.data == first.data
    assert second.headers["ETag"] == first.headers["ETag"]
    assert second.headers["Cache-Control"] == first.headers["Cache-Control"]
    assert second.headers["Content-Type"] == "application/json"
    assert second.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", [JWKS, METADATA])
def test_replayed_response_is_served_without_flask(app, client, org, path):
    client.get(path)
    calls = []

    def not_flask(environ, start_response):
        calls.append(environ["PATH_INFO"])
        raise AssertionError("the fast path should have answered")

    fast_path(app).wsgi_app = not_flask
    response = client.get(path)
    assert response.status_code == HTTPStatus.OK and calls == []


@pytest.mark.parametrize("path", [JWKS, METADATA])
def test_matching_if_none_match_gets_304_twice(client, org, path):
    etag = client.get(path).headers["ETag"]
    for _ in range(2):  # the second one comes from the fast path
        response = client.get(path, headers={"If-None-Match": etag})
        assert response.status_code == HTTPStatus.NOT_MODIFIED
        assert response.headers["ETag"] == etag
        assert response.data == b""


@pytest.mark.parametrize("path", [JWKS, METADATA])
def test_stale_if_none_match_gets_the_document(client, org, path):
    client.get(path)
    response = client.get(path, headers={"If-None-Match": '"not-it"'})
    assert response.status_code == HTTPStatus.OK and response.get_json()


def test_head_gets_headers_without_a_body(client, org):
    length = client.get(JWKS).headers["Content-Length"]
    response = client.head(JWKS)
    assert response.status_code == HTTPStatus.OK
    assert response.headers["Content-Length"] == length and response.data == b""


def test_rotation_shows_in_the_jwks_at_once(client, session, org):
    before = client.get(JWKS)
    age_next_key(session, org)
    signing_keys.rotate(session, org_id=org.id, actor=Actor("test"))
    session.commit()
    after = client.get(JWKS)
    assert after.headers["ETag"] != before.headers["ETag"]
    kids = {key["kid"] for key in after.get_json()["keys"]}
    assert kids != {key["kid"] for key in before.get_json()["keys"]}


def test_expired_jwks_cache_is_rebuilt_from_the_database(app, client, session, org):
    client.get(JWKS)
    ring = app.extensions[signing_keys.EXTENSION_KEY]
    ring._jwks = (0.0, *ring._jwks[1:])  # as if KEY_CACHE_SECONDS had passed
    assert ring.fresh_jwks_etag() is None
    assert client.get(JWKS).status_code == HTTPStatus.OK
    assert ring.fresh_jwks_etag() is not None


def test_other_methods_still_reach_flask(client, org):
    client.get(JWKS)
    assert client.post(JWKS).status_code == HTTPStatus.METHOD_NOT_ALLOWED


# -- the token endpoint ------------------------------------------------------------------


def test_each_token_writes_its_record_and_one_usage_event(client, session, acme):
    c, secret = acme
    for _ in range(3):
        get_token(client, c, secret)
    session.commit()
    jtis = set(session.scalars(select(IssuedToken.jti)))
    events = session.scalars(
        select(UsageEvent.jti).where(UsageEvent.kind == UsageKind.TOKEN_ISSUED)
    ).all()
    assert len(jtis) == 3 and sorted(events) == sorted(jtis)


def test_token_sets_last_used_of_client_and_secret(client, session, acme):
    c, secret = acme
    get_token(client, c, secret)
    session.commit()
    assert session.scalar(select(Client.last_used_at).where(Client.id == c.id)) is not None
    used = session.scalar(select(func.count()).select_from(ClientSecret).where(
        ClientSecret.client_id == c.id, ClientSecret.last_used_at.is_not(None)))
    assert used == 1


def test_revoked_secret_fails_on_the_next_request(client, session, acme):
    c, secret = acme
    get_token(client, c, secret)
    clients.revoke_secret(session, c, secret_id=c.secrets[0].id, actor="test")
    session.commit()
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret))
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.get_json()["error"] == "invalid_client"


def test_disabled_client_fails_on_the_next_request(client, session, acme):
    c, secret = acme
    get_token(client, c, secret)
    clients.set_enabled(session, c, enabled=False, actor="test")
    session.commit()
    response = client.post("/oauth/token", data=GRANT, headers=basic(c.client_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "unauthorized_client"


def test_sqlite_reads_in_autocommit_take_no_write_lock(app, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only: PostgreSQL has no database-wide write lock to check")
    session = app.extensions["latchkey.db"]["sessionmaker"]()
    try:
        assert autocommit(session)
        session.execute(select(func.count()).select_from(Client))
        with get_engine().connect() as other:
            # Would wait for the lock (and fail after the timeout) if the
            # reading session held it.
            other.exec_driver_sql("PRAGMA busy_timeout=0")
            other.execute(text("DELETE FROM used_assertions WHERE 1 = 0"))
            other.commit()
    finally:
        session.close()
