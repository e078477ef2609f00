"""The token and introspection fast path answers as Flask would, or lets Flask answer."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from datetime import timedelta
from http import HTTPStatus

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from api.oauth.fast import ProtocolFastPath
from portal.core.clients import services as clients
from portal.core.db import get_engine
from portal.core.hotpath import EXTENSION_KEY as HOT_PATH_KEY
from portal.core.rawdb import RawConnections
from portal.core.signing_keys.services import keyring
from portal.core.tokens import services as tokens
from portal.core.tokens.models import IssuedToken
from portal.core.types import utcnow
from portal.core.usage.models import UsageEvent, UsageKind
from tests.factories import basic, issue, make_client, make_user

GRANT = {"grant_type": "client_credentials"}
#: Differ between any two responses, or (Vary) are Flask's own and mean nothing here.
PER_RESPONSE = {"Content-Length", "Vary"}


def fast_path(app) -> ProtocolFastPath:
    layer = app.wsgi_app
    while not isinstance(layer, ProtocolFastPath):
        layer = getattr(layer, "wsgi_app", None) or layer.app  # ProxyFix keeps it in .app
    return layer


@pytest.fixture
def flask_calls(app):
    """Paths of the requests the fast path handed to Flask."""
    fast = fast_path(app)
    inner = fast.wsgi_app
    calls: list[str] = []

    def spy(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    fast.wsgi_app = spy
    yield calls
    fast.wsgi_app = inner


def without_fast_path(app, send):
    """Run ``send()`` with the fast path out of the way: Flask answers everything."""
    fast = fast_path(app)
    handlers = fast.handlers
    fast.handlers = {}
    try:
        return send()
    finally:
        fast.handlers = handlers


def headers_of(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in PER_RESPONSE}


def post_token(client, c, secret, **data):
    return client.post("/oauth/token", data={**GRANT, **data}, headers=basic(c.client_id, secret))


# -- answered without Flask --------------------------------------------------------------


def test_token_with_basic_credentials_is_answered_without_flask(client, acme, flask_calls):
    c, secret = acme
    response = post_token(client, c, secret)
    assert response.status_code == HTTPStatus.OK and flask_calls == []
    assert response.get_json()["token_type"] == "Bearer"


def test_token_with_a_json_body_is_answered_without_flask(client, acme, flask_calls):
    c, secret = acme
    response = client.post("/oauth/token", json={
        **GRANT, "client_id": c.client_id, "client_secret": secret,
        "audience": "https://api.example.com", "scope": "read",
    })
    assert response.status_code == HTTPStatus.OK and flask_calls == []
    assert response.get_json()["scope"] == "read"


def test_introspection_is_answered_without_flask(client, acme, flask_calls):
    c, secret = acme
    token = post_token(client, c, secret).get_json()["access_token"]
    response = client.post("/oauth/introspect", data={"token": token},
                           headers=basic(c.client_id, secret))
    assert response.get_json()["active"] is True and flask_calls == []


def test_token_for_a_user_client_is_answered_without_flask(client, session, org, flask_calls):
    user = make_user(session, org=org)
    c, secret = make_client(session, org, kind="user", user=user)
    token = post_token(client, c, secret).get_json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["uid"] == claims["sub"] == user.public_id and flask_calls == []


@pytest.mark.parametrize("app_config", [{"KEY_CACHE_SECONDS": 0}])
def test_keys_reread_for_every_request_do_not_block_the_write(client, acme, flask_calls):
    # The key ring re-reads its keys on every request here; a read that left an
    # ORM transaction open would, on SQLite, hold the write lock that the fast
    # path's own write then waits for (busy_timeout) before giving up to Flask.
    c, secret = acme
    for _ in range(3):
        assert post_token(client, c, secret).status_code == HTTPStatus.OK
    assert flask_calls == []


# -- the same answers as Flask -----------------------------------------------------------


def test_token_response_matches_flasks(app, client, acme):
    c, secret = acme
    fast = post_token(client, c, secret, scope="read")
    slow = without_fast_path(app, lambda: post_token(client, c, secret, scope="read"))
    assert fast.status_code == slow.status_code == HTTPStatus.OK
    assert headers_of(fast) == headers_of(slow)
    fast_body, slow_body = fast.get_json(), slow.get_json()
    assert list(json.loads(fast.data)) == list(json.loads(slow.data))  # key order too
    assert {**fast_body, "access_token": ""} == {**slow_body, "access_token": ""}
    volatile = {"jti", "iat", "nbf", "exp"}
    fast_token, slow_token = fast_body["access_token"], slow_body["access_token"]
    assert jwt.get_unverified_header(fast_token) == jwt.get_unverified_header(slow_token)
    fast_claims = jwt.decode(fast_token, options={"verify_signature": False})
    slow_claims = jwt.decode(slow_token, options={"verify_signature": False})
    assert {k: v for k, v in fast_claims.items() if k not in volatile} == \
        {k: v for k, v in slow_claims.items() if k not in volatile}


def test_token_records_match_flasks(app, client, session, acme):
    c, secret = acme
    def jti_of(response):
        token = response.get_json()["access_token"]
        return jwt.decode(token, options={"verify_signature": False})["jti"]

    fast_jti = jti_of(post_token(client, c, secret))
    slow_jti = jti_of(without_fast_path(app, lambda: post_token(client, c, secret)))
    session.commit()

    def record(jti):
        row = session.scalar(select(IssuedToken).where(IssuedToken.jti == jti))
        event = session.scalar(select(UsageEvent).where(UsageEvent.jti == jti))
        return (
            (row.org_id, row.client_id, row.subject, row.audience, row.scopes, row.kid,
             row.source, row.expires_at - row.issued_at, row.revoked_at),
            (event.kind, event.org_id, event.client_id, event.client_ref, event.reason,
             event.source_ip),
        )

    assert record(fast_jti) == record(slow_jti)
    assert record(fast_jti)[1][0] is UsageKind.TOKEN_ISSUED


@pytest.mark.parametrize("scope", [None, "read", "write read"])
def test_introspection_response_matches_flasks(app, client, acme, scope):
    c, secret = acme
    token = post_token(client, c, secret, scope="read").get_json()["access_token"]
    data = {"token": token} | ({"scope": scope} if scope else {})

    def introspect():
        return client.post("/oauth/introspect", data=data, headers=basic(c.client_id, secret))

    fast, slow = introspect(), without_fast_path(app, introspect)
    assert fast.status_code == slow.status_code == HTTPStatus.OK
    assert fast.data == slow.data and headers_of(fast) == headers_of(slow)


def test_introspection_events_match_flasks(app, client, session, acme):
    c, secret = acme
    token = post_token(client, c, secret).get_json()["access_token"]

    def introspect():
        client.post("/oauth/introspect", data={"token": token}, headers=basic(c.client_id, secret))

    introspect()
    without_fast_path(app, introspect)
    session.commit()
    events = session.scalars(
        select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_INTROSPECTED)
    ).all()
    assert len(events) == 2
    fields = [(e.org_id, e.client_id, e.client_ref, e.reason, e.jti, e.source_ip) for e in events]
    assert fields[0] == fields[1]


def _forged(token):
    """The token's own claims (a real jti) and header, signed by a key that is not ours."""
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, foreign, algorithm="RS256",
                      headers={"typ": "at+jwt", "kid": jwt.get_unverified_header(token)["kid"]})


@pytest.mark.parametrize("kind", ["live", "revoked", "expired", "forged-real-jti",
                                  "another-orgs", "unknown-jti", "garbage"])
def test_introspection_of_each_kind_of_token_matches_flasks(app, client, session, org,
                                                             other_org, acme, kind):
    """The caller and the record of the jti a token claims are read together; only a
    token that verifies may match its record, as in the Flask view."""
    c, secret = acme
    if kind == "another-orgs":
        stranger, stranger_secret = make_client(session, other_org)
        token = post_token(client, stranger, stranger_secret).get_json()["access_token"]
    elif kind == "expired":
        token = issue(session, c, now=utcnow() - timedelta(hours=2))
    else:
        token = post_token(client, c, secret).get_json()["access_token"]
    if kind == "revoked":
        jti = jwt.decode(token, options={"verify_signature": False})["jti"]
        tokens.revoke(session, tokens.find_record(session, org_id=org.id, jti=jti), by="test",
                      now=utcnow())
        session.commit()
    if kind == "forged-real-jti":
        token = _forged(token)
    elif kind == "unknown-jti":  # signed by the org's own key, but never recorded
        claims = jwt.decode(token, options={"verify_signature": False}) | {"jti": "never-issued"}
        token = keyring().active_key(session, org.id).sign(claims)
    elif kind == "garbage":
        token = "not.a.token"

    def introspect():
        return client.post("/oauth/introspect", data={"token": token},
                           headers=basic(c.client_id, secret))

    fast, slow = introspect(), without_fast_path(app, introspect)
    assert fast.status_code == slow.status_code == HTTPStatus.OK
    assert fast.data == slow.data
    assert fast.get_json()["active"] is (kind == "live")
    session.commit()
    events = session.scalars(
        select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_INTROSPECTED)
    ).all()
    fields = [(e.client_id, e.reason, e.jti) for e in events]
    assert len(fields) == 2 and fields[0] == fields[1]


# -- everything else goes to Flask -------------------------------------------------------


def _wrong_secret(c, secret):
    return {"data": GRANT, "headers": basic(c.client_id, secret + "x")}


def _unknown_client(c, secret):
    return {"data": GRANT, "headers": basic("lkc_nobody", secret)}


def _bad_scope(c, secret):
    return {"data": {**GRANT, "scope": "admin"}, "headers": basic(c.client_id, secret)}


def _empty_scope(c, secret):
    return {"data": {**GRANT, "scope": ""}, "headers": basic(c.client_id, secret)}


def _bad_audience(c, secret):
    return {"data": {**GRANT, "audience": "https://elsewhere.test"},
            "headers": basic(c.client_id, secret)}


def _bad_resource(c, secret):
    return {"data": {**GRANT, "resource": "not a uri"}, "headers": basic(c.client_id, secret)}


def _wrong_grant(c, secret):
    return {"data": {"grant_type": "password"}, "headers": basic(c.client_id, secret)}


def _two_methods(c, secret):
    return {"data": {**GRANT, "client_id": c.client_id, "client_secret": secret},
            "headers": basic(c.client_id, secret)}


def _unknown_parameter(c, secret):
    return {"data": {**GRANT, "extra": "1"}, "headers": basic(c.client_id, secret)}


def _repeated_parameter(c, secret):
    return {"data": "grant_type=client_credentials&grant_type=client_credentials",
            "content_type": "application/x-www-form-urlencoded",
            "headers": basic(c.client_id, secret)}


def _query_string(c, secret):
    return {"data": GRANT, "query_string": {"x": "1"}, "headers": basic(c.client_id, secret)}


def _bad_basic(c, secret):
    return {"data": GRANT,
            "headers": {"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()}}


@pytest.mark.parametrize("request_of", [
    _wrong_secret, _unknown_client, _bad_scope, _empty_scope, _bad_audience, _bad_resource,
    _wrong_grant, _two_methods, _repeated_parameter, _bad_basic,
])
def test_failed_token_requests_are_answered_by_flask(client, acme, flask_calls, request_of):
    c, secret = acme
    response = client.post("/oauth/token", **request_of(c, secret))
    assert response.status_code >= HTTPStatus.BAD_REQUEST
    assert "error" in response.get_json()
    assert flask_calls == ["/oauth/token"]


@pytest.mark.parametrize("request_of", [_unknown_parameter, _query_string])
def test_requests_the_fast_path_does_not_know_are_answered_by_flask(client, acme, flask_calls,
                                                                    request_of):
    c, secret = acme
    response = client.post("/oauth/token", **request_of(c, secret))
    assert response.status_code == HTTPStatus.OK  # Flask ignores both
    assert flask_calls == ["/oauth/token"]


def test_a_disabled_client_is_answered_by_flask(client, session, acme, flask_calls):
    c, secret = acme
    clients.set_enabled(session, c, enabled=False, actor="test")
    session.commit()
    response = post_token(client, c, secret)
    assert response.get_json()["error"] == "unauthorized_client"
    assert flask_calls == ["/oauth/token"]


def test_a_method_the_client_may_not_use_is_answered_by_flask(client, session, org, flask_calls):
    c, secret = make_client(session, org, auth_methods=["client_secret_post"])
    response = post_token(client, c, secret)
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert flask_calls == ["/oauth/token"]


def test_a_user_client_whose_user_left_is_answered_by_flask(client, session, org, flask_calls):
    from portal.core.users.models import Membership

    user = make_user(session, org=org)
    c, secret = make_client(session, org, kind="user", user=user)
    for membership in session.scalars(select(Membership).where(Membership.user_id == user.id)):
        session.delete(membership)
    session.commit()
    assert post_token(client, c, secret).get_json()["error"] == "invalid_grant"
    assert flask_calls == ["/oauth/token"]


def test_a_body_over_the_limit_is_answered_by_flask(client, acme, flask_calls):
    c, secret = acme
    response = client.post("/oauth/token", data={**GRANT, "scope": "read " * 5000},
                           headers=basic(c.client_id, secret))
    assert response.status_code >= HTTPStatus.BAD_REQUEST
    assert flask_calls == ["/oauth/token"]


def test_introspection_by_an_api_key_is_answered_by_flask(client, session, org, token,
                                                          flask_calls):
    from tests.factories import bearer, make_api_key

    plaintext, _key = make_api_key(session, org)
    response = client.post("/oauth/introspect", data={"token": token}, headers=bearer(plaintext))
    assert response.get_json()["active"] is True
    assert flask_calls == ["/oauth/introspect"]


def test_introspection_without_a_token_is_answered_by_flask(client, acme, flask_calls):
    c, secret = acme
    response = client.post("/oauth/introspect", data={}, headers=basic(c.client_id, secret))
    assert response.get_json()["error"] == "invalid_request"
    assert flask_calls == ["/oauth/introspect"]


# -- the connections ---------------------------------------------------------------------


def test_connections_are_reused_and_closed_with_the_engine(app, client, acme):
    c, secret = acme
    for _ in range(3):
        post_token(client, c, secret)
    connections = app.extensions[HOT_PATH_KEY].connections
    assert len(connections._idle) == 1  # one request at a time: one connection, reused
    get_engine().dispose()
    assert connections._idle == []


@pytest.mark.parametrize("app_config", [{"PROXY_FIX": 1}])
def test_behind_a_proxy_the_fast_path_sees_the_forwarded_address_and_scheme(
    client, session, acme, flask_calls, app_config
):
    c, secret = acme
    response = client.post("http://api.example.com/oauth/token", data=GRANT, headers={
        **basic(c.client_id, secret), "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "203.0.113.7",
    })
    assert response.status_code == HTTPStatus.OK and flask_calls == []
    session.commit()
    event = session.scalar(select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_ISSUED))
    assert event.source_ip == "203.0.113.7"


def test_plain_http_off_loopback_is_answered_by_flask(client, acme, flask_calls):
    c, secret = acme
    response = client.post("http://api.example.com/oauth/token", data=GRANT,
                           headers=basic(c.client_id, secret))
    assert response.get_json()["error"] == "insecure_transport"
    assert flask_calls == ["/oauth/token"]


def test_sqlite_wal_is_checkpointed_by_a_thread_not_by_requests(app, client, acme, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only: PostgreSQL has no WAL checkpoint per connection")
    c, secret = acme
    post_token(client, c, secret)
    connections = app.extensions[HOT_PATH_KEY].connections
    (lent,) = connections._idle
    assert lent.driver.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    thread = connections._checkpointer
    assert thread is not None and thread.is_alive()
    get_engine().dispose()
    thread.join(timeout=5)
    assert not thread.is_alive()
    post_token(client, c, secret)  # a disposed engine's next request starts a new one
    assert connections._checkpointer is not None and connections._checkpointer.is_alive()


def test_sqlite_wal_starts_over_though_no_passive_checkpoint_catches_up(app, client, acme,
                                                                        database_url,
                                                                        monkeypatch):
    """Under a steady stream of tokens every PASSIVE checkpoint falls short (here a reader's
    older snapshot holds it back) and a WAL only starts over after a complete one: without
    the RESTART pass it would grow for ever."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only: PostgreSQL has no WAL file of the app's own")
    monkeypatch.setattr(RawConnections, "RESTART_FRAMES", 10)
    monkeypatch.setattr(RawConnections, "CHECKPOINT_WAIT_MS", 5000)
    # Only the checkpoint called below: the app's thread must not run one meanwhile.
    monkeypatch.setattr(RawConnections, "CHECKPOINT_SECONDS", 3600)
    c, secret = acme
    for _ in range(5):
        post_token(client, c, secret)
    path = get_engine().url.database
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM issued_tokens").fetchone()  # holds this snapshot
    for _ in range(5):
        post_token(client, c, secret)
    connections = app.extensions[HOT_PATH_KEY].connections
    checkpointer = connections._new_checkpointer()
    ends = threading.Timer(0.2, reader.rollback)  # the reader is done while RESTART waits
    ends.start()
    try:
        connections.checkpoint(checkpointer)
    finally:
        ends.join()
        checkpointer.close()
        reader.close()
    post_token(client, c, secret)
    probe = sqlite3.connect(path)
    try:
        _busy, frames, _copied = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        probe.close()
    assert frames < 40  # the next token's pages, written at the start of the WAL
