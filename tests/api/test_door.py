"""The WSGI door answers the token endpoint and introspection itself — successes and
refusals alike — with the same answers as the Flask views; and its connections."""

from __future__ import annotations

import json
import sqlite3
import threading
from http import HTTPStatus

import pytest
from sqlalchemy import select

from api.oauth.door import ProtocolDoor
from portal import create_app
from portal.core.db import get_engine
from portal.core.rawdb import RawConnections
from portal.core.tokens.store import EXTENSION_KEY as STORE_KEY
from portal.core.usage.models import UsageEvent, UsageKind
from tests.api.conftest import BACKEND_DOORS
from tests.conftest import ArrangedFirstClient, base_config
from tests.factories import basic, make_api_key

GRANT = {"grant_type": "client_credentials"}
#: Differ between any two responses, or are Flask's own and mean nothing here.
PER_RESPONSE = {"Content-Length", "Vary", "X-Request-Id"}


@pytest.fixture(params=[p for p in BACKEND_DOORS if p.values[0][1] == "wsgi"])
def backend_door(request):
    """These tests are about the WSGI door itself."""
    return tuple(request.param)


def door_of(app) -> ProtocolDoor:
    layer = app.wsgi_app
    while not isinstance(layer, ProtocolDoor):
        layer = getattr(layer, "wsgi_app", None) or layer.app  # ProxyFix keeps it in .app
    return layer


@pytest.fixture
def flask_calls(app):
    """Paths of the requests the door handed to Flask."""
    door = door_of(app)
    inner = door.wsgi_app
    calls: list[str] = []

    def spy(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    door.wsgi_app = spy
    yield calls
    door.wsgi_app = inner


@pytest.fixture
def flask_only(database_url):
    """The same database served by an app without the door: the Flask views answer."""
    app = create_app(base_config(database_url, PROTOCOL_DOOR=False))
    app.test_client_class = ArrangedFirstClient
    yield app.test_client()
    with app.app_context():
        get_engine().dispose()


def post_token(client, c, secret, **data):
    return client.post("/oauth/token", data={**GRANT, **data}, headers=basic(c.public_id, secret))


def headers_of(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in PER_RESPONSE}


@pytest.mark.parametrize("request_of", [
    pytest.param(lambda c, s: ("/oauth/token", {"data": GRANT, "headers": basic(c.public_id, s)}),
                 id="token-basic"),
    pytest.param(lambda c, s: ("/oauth/token", {"json": {**GRANT, "client_id": c.public_id,
                                                         "client_secret": s}}),
                 id="token-json"),
    pytest.param(lambda c, s: ("/oauth/token", {"data": GRANT,
                                                "headers": basic(c.public_id, "wrong")}),
                 id="token-wrong-secret"),
    pytest.param(lambda c, s: ("/oauth/token", {"data": {"grant_type": "password"},
                                                "headers": basic(c.public_id, s)}),
                 id="token-unsupported-grant"),
    pytest.param(lambda c, s: ("/oauth/token", {"data": "x", "content_type": "text/plain"}),
                 id="token-malformed"),
    pytest.param(lambda c, s: ("/oauth/token", {"data": {**GRANT, "scope": "read " * 20000},
                                                "headers": basic(c.public_id, s)}),
                 id="token-too-large"),
    pytest.param(lambda c, s: ("/oauth/introspect", {"data": {"token": "x"},
                                                     "headers": basic(c.public_id, s)}),
                 id="introspect"),
    pytest.param(lambda c, s: ("/oauth/introspect", {"data": {},
                                                     "headers": basic(c.public_id, s)}),
                 id="introspect-without-token"),
])
def test_the_door_answers_every_request_itself(client, acme, flask_calls, flask_only,
                                               request_of):
    secret, c = acme
    path, kwargs = request_of(c, secret)
    through_door = client.post(path, **kwargs)
    through_flask = flask_only.post(path, **kwargs)
    assert flask_calls == []
    assert through_door.status_code == through_flask.status_code
    assert headers_of(through_door) == headers_of(through_flask)
    door_body, flask_body = json.loads(through_door.data), json.loads(through_flask.data)
    assert list(door_body) == list(flask_body)  # the same members, in the same order
    if "access_token" not in door_body:
        assert door_body == flask_body


def test_introspection_by_an_api_key_is_answered_by_the_door(client, session, org, token,
                                                            flask_calls):
    from tests.factories import bearer

    plaintext, _key = make_api_key(session, org)
    response = client.post("/oauth/introspect", data={"token": token}, headers=bearer(plaintext))
    assert response.get_json()["active"] is True and flask_calls == []


def test_revocation_is_answered_by_flask(client, acme, token, flask_calls):
    secret, c = acme
    response = client.post("/oauth/revoke", data={"token": token},
                           headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK and flask_calls == ["/oauth/revoke"]


def test_other_methods_are_answered_by_flask(client, flask_calls):
    assert client.get("/oauth/token").status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert flask_calls == ["/oauth/token"]


@pytest.mark.parametrize("extra_config", [{"PROTOCOL_DOOR": False}])
def test_without_the_door_flask_answers(app, client, acme, extra_config):
    secret, c = acme
    assert not any(isinstance(layer, ProtocolDoor) for layer in _layers(app))
    assert post_token(client, c, secret).status_code == HTTPStatus.OK


def _layers(app):
    layer = app.wsgi_app
    while layer is not None:
        yield layer
        layer = getattr(layer, "wsgi_app", None) or getattr(layer, "app", None)


@pytest.mark.parametrize("extra_config", [{"KEY_CACHE_SECONDS": 0}])
def test_keys_reread_for_every_request_do_not_block_the_write(client, acme, extra_config):
    # The key ring re-reads its keys on every request here; a read that left a
    # transaction open would, on SQLite, hold the write lock the token's write waits for.
    secret, c = acme
    for _ in range(3):
        assert post_token(client, c, secret).status_code == HTTPStatus.OK


def test_connections_are_reused_and_closed_with_the_engine(app, client, acme):
    secret, c = acme
    for _ in range(3):
        post_token(client, c, secret)
    connections = app.extensions[STORE_KEY].connections
    assert len(connections._idle) == 1  # one request at a time: one connection, reused
    get_engine().dispose()
    assert connections._idle == []


@pytest.mark.parametrize("extra_config", [{"PROXY_FIX": 1}])
def test_behind_a_proxy_the_door_sees_the_forwarded_address_and_scheme(
    client, session, acme, flask_calls, extra_config
):
    secret, c = acme
    response = client.post("http://api.example.com/oauth/token", data=GRANT, headers={
        **basic(c.public_id, secret), "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "203.0.113.7",
    })
    assert response.status_code == HTTPStatus.OK and flask_calls == []
    session.commit()
    event = session.scalar(select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_ISSUED))
    assert event.source_ip == "203.0.113.7"


def test_plain_http_off_loopback_is_refused_by_the_door(client, acme, flask_calls):
    secret, c = acme
    response = client.post("http://api.example.com/oauth/token", data=GRANT,
                           headers=basic(c.public_id, secret))
    assert response.get_json()["error"] == "insecure_transport" and flask_calls == []


def test_sqlite_wal_is_checkpointed_by_a_thread_not_by_requests(app, client, acme, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only: PostgreSQL has no WAL checkpoint per connection")
    secret, c = acme
    post_token(client, c, secret)
    connections = app.extensions[STORE_KEY].connections
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
    secret, c = acme
    for _ in range(5):
        post_token(client, c, secret)
    path = get_engine().url.database
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM issued_tokens").fetchone()  # holds this snapshot
    for _ in range(5):
        post_token(client, c, secret)
    connections = app.extensions[STORE_KEY].connections
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
