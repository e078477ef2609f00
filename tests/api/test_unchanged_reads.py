"""A caller's read is used again while the database is unchanged (``rawdb.Unchanged``).

On SQLite the token endpoint and introspection keep what they read of their caller
(and of the token introspected) and use it again on the same connection while
``PRAGMA data_version`` and the process's own count of writes say nothing was
committed since; on PostgreSQL every request reads. Here: that the read is saved, and
that every kind of change — by the portal, by another process, by the endpoint's own
writes — is seen by the very next request, through both doors.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from sqlalchemy import select

from portal.core.clients import services as clients
from portal.core.clients.models import ClientSecret
from portal.core.rawdb import RawStatement, Unchanged
from portal.core.tokens import services as tokens
from portal.core.tokens.store import EXTENSION_KEY as STORE_KEY
from portal.core.types import utcnow
from portal.core.users.models import Membership
from tests.factories import TEST_ACTOR, basic, get_token, make_client, make_user

GRANT = {"grant_type": "client_credentials"}
#: As shipped: a token's record and usage event follow in a batch (here never during
#: the test), so issuing writes nothing before the answer.
BATCHED = {"WRITE_DELAY_MS": 60_000, "DEFER_TOKEN_RECORDS": True}
#: Failures counted in the database, on the endpoint's own connections.
LIMITED = {"TOKEN_FAILURE_RATE_LIMIT": "2/minute", "RATELIMIT_STORAGE_URI": "latchkey+db://",
           **BATCHED}
#: The tests of what SQLite alone does (on PostgreSQL nothing is kept: the first test).
SQLITE_ONLY = pytest.mark.parametrize("backend_door", [("sqlite", "wsgi"), ("sqlite", "flask")],
                                      ids=["sqlite-wsgi", "sqlite-flask"])


@pytest.fixture
def extra_config() -> dict[str, Any]:
    """As shipped (BATCHED): with a write per request, every request would read anew and
    these tests could not tell a kept read that went stale from a fresh one."""
    return BATCHED


@pytest.fixture
def caller_reads(app: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each read of a caller (client, secret, token record, failure count) run from now."""
    statement = app.extensions[STORE_KEY]._client_and_record
    reads: list[int] = []
    real_first = RawStatement.first

    def first(self: RawStatement, *args: Any) -> Any:
        if self is statement:
            reads.append(1)
        return real_first(self, *args)

    monkeypatch.setattr(RawStatement, "first", first)
    return reads


def ask(http: Any, c: Any, secret: str) -> Any:
    return http.post("/oauth/token", data=GRANT, headers=basic(c.public_id, secret))


def introspect(http: Any, c: Any, secret: str, token: str) -> dict[str, Any]:
    response = http.post("/oauth/introspect", data={"token": token},
                         headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK
    return response.get_json()


def test_a_caller_read_again_with_nothing_changed_costs_no_read_on_sqlite_only(
        client, acme, backend_door, caller_reads):
    secret, c = acme
    token = get_token(client, c, secret)  # writes the client's last-used time: a change
    assert ask(client, c, secret).status_code == HTTPStatus.OK
    introspect(client, c, secret, token)
    del caller_reads[:]

    for _ in range(3):
        assert ask(client, c, secret).status_code == HTTPStatus.OK
        assert introspect(client, c, secret, token)["active"] is True

    assert len(caller_reads) == (0 if backend_door[0] == "sqlite" else 6)


def disable(session, c) -> None:
    clients.set_enabled(session, c, enabled=False, actor=TEST_ACTOR)
    session.commit()


def revoke_secret(session, c) -> None:
    clients.revoke_secret(session, c, secret_id=c.secrets[0].id, actor=TEST_ACTOR)
    session.commit()


def expire_secret(session, c) -> None:
    session.get(ClientSecret, c.secrets[0].id).expires_at = utcnow() - timedelta(seconds=1)
    session.commit()


def leave(session, c) -> None:
    for membership in session.scalars(select(Membership).where(Membership.user_id ==
                                                               c.user_id)):
        session.delete(membership)
    session.commit()


#: A change the portal commits, and what the next token request of the client gets.
PORTAL_CHANGES = {
    "client disabled": (disable, HTTPStatus.BAD_REQUEST, "unauthorized_client"),
    "secret revoked": (revoke_secret, HTTPStatus.UNAUTHORIZED, "invalid_client"),
    "secret expired": (expire_secret, HTTPStatus.UNAUTHORIZED, "invalid_client"),
    "user left the org": (leave, HTTPStatus.BAD_REQUEST, "invalid_grant"),
}


@pytest.mark.parametrize("change", list(PORTAL_CHANGES))
def test_a_change_the_portal_commits_is_seen_by_the_next_request(client, session, org,
                                                                 change):
    user = make_user(session, org=org)
    secret, c = make_client(session, org, kind="user", user=user)
    for _ in range(2):
        assert ask(client, c, secret).status_code == HTTPStatus.OK
    happen, status, error = PORTAL_CHANGES[change]

    happen(session, c)

    response = ask(client, c, secret)
    assert (response.status_code, response.get_json()["error"]) == (status, error)


def test_a_token_revoked_since_the_last_introspection_is_inactive(client, session, org):
    secret, c = make_client(session, org)
    caller_secret, caller = make_client(session, org)
    token = get_token(client, c, secret)
    for _ in range(2):
        assert introspect(client, caller, caller_secret, token)["active"] is True

    tokens.revoke_all_for_client(session, session.get(type(c), c.id), actor=TEST_ACTOR)
    session.commit()

    assert introspect(client, caller, caller_secret, token) == {"active": False}


def test_a_token_revoked_at_the_endpoint_is_inactive_at_once(client, acme):
    secret, c = acme
    token = get_token(client, c, secret)
    for _ in range(2):
        assert introspect(client, c, secret, token)["active"] is True

    revoked = client.post("/oauth/revoke", data={"token": token},
                          headers=basic(c.public_id, secret))

    assert revoked.status_code == HTTPStatus.OK
    assert introspect(client, c, secret, token) == {"active": False}


@SQLITE_ONLY
def test_a_change_another_process_commits_is_seen_by_the_next_request(app, client, acme):
    secret, c = acme
    for _ in range(2):
        assert ask(client, c, secret).status_code == HTTPStatus.OK
    path = app.extensions[STORE_KEY].engine.url.database

    subprocess.run([sys.executable, "-c", (
        "import sqlite3, sys\n"
        "with sqlite3.connect(sys.argv[1]) as db:\n"
        "    db.execute('UPDATE clients SET enabled = 0 WHERE id = ?', (int(sys.argv[2]),))\n"
    ), path, str(c.id)], check=True, timeout=60)

    response = ask(client, c, secret)
    assert (response.status_code, response.get_json()["error"]) == \
        (HTTPStatus.BAD_REQUEST, "unauthorized_client")




@pytest.mark.parametrize("extra_config", [LIMITED])
def test_failures_the_endpoint_writes_itself_are_counted_by_the_next_request(
        client, acme, extra_config):
    """The failure counter is written on the endpoint's own connections, whose commits
    SQLite's ``data_version`` leaves out: the process's count of writes covers them."""
    secret, c = acme
    for _ in range(2):
        assert ask(client, c, secret).status_code == HTTPStatus.OK
    for _ in range(2):
        assert ask(client, c, "lk_secret_wrong").status_code == HTTPStatus.UNAUTHORIZED

    assert ask(client, c, secret).status_code == HTTPStatus.TOO_MANY_REQUESTS


@pytest.mark.parametrize("extra_config", [LIMITED])
def test_a_read_that_counted_failures_is_not_kept(client, acme, extra_config, caller_reads):
    """A failure count can fall with time alone (its counter expires), with nothing
    committed: a read that found one is made again."""
    secret, c = acme
    assert ask(client, c, "lk_secret_wrong").status_code == HTTPStatus.UNAUTHORIZED
    del caller_reads[:]

    for _ in range(3):
        assert ask(client, c, secret).status_code == HTTPStatus.OK

    assert len(caller_reads) == 3


def test_a_kept_read_answers_no_other_secret_nor_another_orgs_client(client, tenants):
    ours, theirs = tenants.ours, tenants.theirs
    for _ in range(2):
        assert ask(client, ours.client, ours.secret).status_code == HTTPStatus.OK
        assert ask(client, theirs.client, theirs.secret).status_code == HTTPStatus.OK

    for c, secret in ((ours.client, theirs.secret), (theirs.client, ours.secret),
                      (ours.client, "lk_secret_wrong")):
        response = ask(client, c, secret)
        assert (response.status_code, response.get_json()["error"]) == \
            (HTTPStatus.UNAUTHORIZED, "invalid_client")


def test_a_kept_introspection_answers_no_other_org(client, tenants):
    """Each org's kept reads of its own token do not make the other org's caller see it."""
    ours, theirs = tenants.ours, tenants.theirs
    our_token = get_token(client, ours.client, ours.secret)
    their_token = get_token(client, theirs.client, theirs.secret)
    for _ in range(2):
        assert introspect(client, ours.client, ours.secret, our_token)["active"] is True
        assert introspect(client, theirs.client, theirs.secret, their_token)["active"] is True

    for _ in range(2):
        assert introspect(client, theirs.client, theirs.secret, our_token) == {"active": False}
        assert introspect(client, ours.client, ours.secret, their_token) == {"active": False}

# -- the cache itself ---------------------------------------------------------------------


@pytest.fixture
def unchanged(app: Any) -> Unchanged:
    return app.extensions[STORE_KEY]._unchanged


def counting_reads(result: Any = "found", keep: bool = True) -> tuple[list[int], Any]:
    reads: list[int] = []

    def read() -> tuple[Any, bool]:
        reads.append(1)
        return result, keep

    return reads, read


@SQLITE_ONLY
def test_a_result_is_kept_per_key_and_per_connection(app, unchanged):
    store = app.extensions[STORE_KEY]
    reads, read = counting_reads()
    with store.connections.connection() as one, store.connections.connection() as two:
        assert [unchanged.get(one, "k", read) for _ in range(3)] == ["found"] * 3
        assert len(reads) == 1
        unchanged.get(one, "other key", read)
        unchanged.get(two, "k", read)  # another connection: its own data_version
        assert len(reads) == 3


@SQLITE_ONLY
def test_a_result_not_to_be_kept_is_read_each_time(app, unchanged):
    reads, read = counting_reads(keep=False)
    with app.extensions[STORE_KEY].connections.connection() as connection:
        for _ in range(3):
            unchanged.get(connection, "k", read)
    assert len(reads) == 3


@SQLITE_ONLY
def test_a_write_of_the_process_drops_what_was_kept(app, unchanged):
    store = app.extensions[STORE_KEY]
    reads, read = counting_reads()
    with store.connections.connection() as connection:
        unchanged.get(connection, "k", read)
        connection.driver.execute("SELECT count(*) FROM clients").fetchone()  # a read
        unchanged.get(connection, "k", read)
        assert len(reads) == 1
        with store.connections.write(connection):
            pass
        unchanged.get(connection, "k", read)
    assert len(reads) == 2


@SQLITE_ONLY
def test_a_forked_process_starts_with_nothing_kept(app, unchanged, monkeypatch):
    store = app.extensions[STORE_KEY]
    reads, read = counting_reads()
    with store.connections.connection() as connection:
        unchanged.get(connection, "k", read)
        monkeypatch.setattr("os.getpid", lambda: -1)  # as in a child after fork()
        unchanged.get(connection, "k", read)
    assert len(reads) == 2


@SQLITE_ONLY
def test_no_more_than_the_limit_is_kept(app, unchanged, monkeypatch):
    monkeypatch.setattr(Unchanged, "LIMIT", 2)
    reads, read = counting_reads()
    with app.extensions[STORE_KEY].connections.connection() as connection:
        for key in ("a", "b", "c"):  # the third drops the first two
            unchanged.get(connection, key, read)
        unchanged.get(connection, "c", read)
        unchanged.get(connection, "a", read)
    assert len(reads) == 4
