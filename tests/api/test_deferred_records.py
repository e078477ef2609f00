"""With ``DEFER_TOKEN_RECORDS`` the token endpoint's records follow in ``WRITE_DELAY_MS``'s
batches: until a token's record is written, introspection and revocation judge it by its
claims and its client now (``exchange.unrecorded``), with every rule a written record has.

Here the queue's own thread never runs during a test (a delay of a minute): a record is
written when the test flushes the queue, so each check is made both before and after.
"""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus
from typing import Any

import jwt
import pytest
from sqlalchemy import func, select

from portal.core.clients import services as clients
from portal.core.tokens import exchange
from portal.core.tokens import services as tokens
from portal.core.tokens.models import TokenSource
from portal.core.tokens.store import EXTENSION_KEY as STORE_KEY
from portal.core.types import utcnow
from portal.core.usage.models import UsageEvent, UsageKind
from tests.factories import (
    TEST_ACTOR,
    basic,
    bearer,
    get_token,
    jti_of,
    make_api_key,
    make_client,
    token_records,
)

GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def extra_config() -> dict[str, Any]:
    return {"WRITE_DELAY_MS": 60_000, "DEFER_TOKEN_RECORDS": True}


def flush(app) -> int:
    return app.extensions[STORE_KEY].queue.flush()


def introspect(http, c, secret: str, token: str, **extra: str) -> dict[str, Any]:
    response = http.post("/oauth/introspect", data={"token": token, **extra},
                         headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK
    return response.get_json()


def test_the_answer_does_not_wait_for_the_record(app, client, session, acme):
    secret, c = acme
    token = get_token(client, c, secret)
    assert token_records(session) == []

    assert flush(app) == 2  # the record and its usage event

    (record,) = token_records(session)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (record.jti, record.client_id, record.source) == \
        (claims["jti"], c.id, TokenSource.TOKEN_ENDPOINT)
    assert record.scopes == ["read", "write"] and record.revoked_at is None


def test_introspection_says_the_same_before_and_after_the_record(app, client, session, acme):
    secret, c = acme
    token = get_token(client, c, secret)

    before = introspect(client, c, secret, token)
    flush(app)
    after = introspect(client, c, secret, token)

    assert before["active"] is True
    assert before == after
    assert introspect(client, c, secret, token, scope="read admin") == {"active": False}


def disable(session, c) -> None:
    clients.set_enabled(session, c, enabled=False, actor=TEST_ACTOR)
    session.commit()


def revoke_all(session, c) -> None:
    tokens.revoke_all_for_client(session, session.get(type(c), c.id), actor=TEST_ACTOR)
    session.commit()


def revoke_by_the_endpoint(session, c, client, secret, token) -> None:
    response = client.post("/oauth/revoke", data={"token": token},
                           headers=basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK


def delete(session, c) -> None:
    clients.delete_client(session, session.get(type(c), c.id), actor=TEST_ACTOR)
    session.commit()


#: What happens to a token while its record is queued, and whether it stays active.
WHILE_QUEUED = {
    "nothing": (lambda session, c, client, secret, token: None, True),
    "its client disabled": (lambda session, c, client, secret, token: disable(session, c),
                            False),
    "its client's tokens all revoked": (
        lambda session, c, client, secret, token: revoke_all(session, c), False),
    "revoked at the endpoint": (revoke_by_the_endpoint, False),
}


@pytest.mark.parametrize("event", list(WHILE_QUEUED))
def test_a_queued_token_is_judged_by_the_rules_of_a_written_one(app, client, session, org,
                                                                   event):
    secret, c = make_client(session, org)
    # The caller is another client of the org, so disabling the token's client leaves it.
    caller_secret, caller = make_client(session, org)
    token = get_token(client, c, secret)
    happen, active = WHILE_QUEUED[event]
    happen(session, c, client, secret, token)

    before = introspect(client, caller, caller_secret, token)
    flush(app)
    after = introspect(client, caller, caller_secret, token)

    assert (before["active"], after["active"]) == (active, active)
    if not active:
        assert before == after == {"active": False}


def test_a_revocation_of_a_queued_token_writes_its_record_and_the_batch_keeps_it(
        app, client, session, acme):
    secret, c = acme
    token = get_token(client, c, secret)

    revoke_by_the_endpoint(session, c, client, secret, token)
    (revoked,) = token_records(session)
    assert flush(app) == 2  # the record (kept as it is) and the token's usage event

    (record,) = token_records(session)
    assert record.id == revoked.id and record.jti == jti_of(token)
    assert record.revoked_at is not None and record.revoked_by == f"client:{c.public_id}"
    assert record.scopes == ["read", "write"] and record.audience == ["https://api.example.com"]
    assert record.source == TokenSource.TOKEN_ENDPOINT and record.subject == c.public_id
    session.commit()
    revocations = session.scalars(
        select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_REVOKED)).all()
    assert [e.jti for e in revocations] == [record.jti]


def test_only_its_own_client_or_an_api_key_revokes_a_queued_token(app, client, session, org,
                                                                     acme):
    secret, c = acme
    token = get_token(client, c, secret)
    other_secret, other = make_client(session, org)

    refused = client.post("/oauth/revoke", data={"token": token},
                          headers=basic(other.public_id, other_secret))
    assert refused.status_code == HTTPStatus.BAD_REQUEST
    assert refused.get_json()["error"] == "unauthorized_client"
    assert introspect(client, c, secret, token)["active"] is True

    key, _ = make_api_key(session, org)
    assert client.post("/oauth/revoke", data={"token": token},
                       headers=bearer(key)).status_code == HTTPStatus.OK
    assert introspect(client, c, secret, token) == {"active": False}


def test_another_orgs_caller_neither_sees_nor_revokes_a_queued_token(client, session, tenants):
    ours, theirs = tenants.ours, tenants.theirs
    token = get_token(client, ours.client, ours.secret)

    assert introspect(client, theirs.client, theirs.secret, token) == {"active": False}
    response = client.post("/oauth/revoke", data={"token": token},
                           headers=basic(theirs.client.public_id, theirs.secret))
    assert response.status_code == HTTPStatus.OK
    assert token_records(session) == []
    assert introspect(client, ours.client, ours.secret, token)["active"] is True
    # And the other way round.
    theirs_token = get_token(client, theirs.client, theirs.secret)
    assert introspect(client, ours.client, ours.secret, theirs_token) == {"active": False}
    assert introspect(client, theirs.client, theirs.secret, theirs_token)["active"] is True


def test_a_token_forged_with_another_orgs_key_is_not_taken_for_a_queued_one(
        client, session, acme, tenants):
    from portal.core.signing_keys.services import keyring

    secret, c = acme
    real = get_token(client, c, secret)
    claims = jwt.decode(real, options={"verify_signature": False})
    forged = keyring().active_key(tenants.theirs.org.id).sign(claims)

    assert introspect(client, c, secret, forged) == {"active": False}
    assert introspect(client, c, secret, real)["active"] is True


def test_a_token_whose_record_never_comes_is_inactive_after_a_minute(app, client, session,
                                                                      acme, monkeypatch):
    """A crash of the machine loses the queue and the journal's last moments: the rule
    fails closed once the record is overdue."""
    import api.oauth.protocol as protocol

    secret, c = acme
    token = get_token(client, c, secret)
    app.extensions[STORE_KEY].queue._pending.clear()  # what a crash of the machine loses
    issued = utcnow()

    monkeypatch.setattr(protocol, "utcnow", lambda: issued + timedelta(
        seconds=exchange.UNRECORDED_SECONDS - 2))
    assert introspect(client, c, secret, token)["active"] is True
    monkeypatch.setattr(protocol, "utcnow", lambda: issued + timedelta(
        seconds=exchange.UNRECORDED_SECONDS + 2))
    assert introspect(client, c, secret, token) == {"active": False}


def listed(session, c) -> list[str]:
    """The jti of the client's tokens the portal lists as active."""
    session.commit()
    found = [r.jti for r in session.scalars(tokens.active_tokens_query(
        client=session.get(type(c), c.id), now=utcnow()))]
    session.commit()
    return found


def test_revoke_all_covers_the_tokens_still_queued(app, client, session, acme):
    secret, c = acme
    token = get_token(client, c, secret)
    revoke_all(session, c)  # nothing written to revoke yet

    before = introspect(client, c, secret, token)
    flush(app)
    after = introspect(client, c, secret, token)

    assert before == after == {"active": False}
    assert listed(session, c) == []


def test_a_token_issued_after_revoke_all_is_live(app, client, session, acme):
    secret, c = acme
    # A second ago: a token issued now is after it even in iat's whole seconds.
    tokens.revoke_all_for_client(session, session.get(type(c), c.id), actor=TEST_ACTOR,
                                 now=utcnow() - timedelta(seconds=1))
    session.commit()
    token = get_token(client, c, secret)

    before = introspect(client, c, secret, token)
    flush(app)

    assert before["active"] is True
    assert introspect(client, c, secret, token) == before
    assert listed(session, c) == [jti_of(token)]


def test_the_record_of_a_client_deleted_meanwhile_is_dropped_and_the_rest_written(
        app, client, session, org, acme):
    secret, c = acme
    gone_secret, gone = make_client(session, org)
    get_token(client, gone, gone_secret)
    kept = get_token(client, c, secret)
    delete(session, gone)

    flush(app)

    assert [r.jti for r in token_records(session)] == [jti_of(kept)]
    assert introspect(client, c, secret, kept)["active"] is True


@pytest.mark.parametrize("extra_config", [
    pytest.param({"WRITE_DELAY_MS": 60_000, "DEFER_TOKEN_RECORDS": False}, id="not-deferred"),
    pytest.param({"WRITE_DELAY_MS": 60_000, "DEFER_TOKEN_RECORDS": True,
                  "DURABLE_TOKEN_WRITES": True}, id="durable")])
def test_otherwise_the_record_comes_before_the_answer(app, client, session, acme,
                                                       extra_config):
    secret, c = acme
    token = get_token(client, c, secret)

    assert [r.jti for r in token_records(session)] == [jti_of(token)]
    session.commit()
    assert session.scalar(select(func.count()).select_from(UsageEvent)) == 0  # queued
    session.commit()
    assert flush(app) == 1


def test_only_a_recent_token_of_the_very_client_read_can_have_a_queued_record(
        session, org, acme):
    from portal.core.tokens.store import token_store

    _secret, c = acme
    now = utcnow()
    with token_store().connections.connection() as connection:
        snapshot = token_store().client(connection, public_id=c.public_id)
    claims = {"iat": int(now.timestamp()), "exp": int(now.timestamp()) + 60, "jti": "j",
              "scope": "read", "client_id": c.public_id}

    def made(**changes: Any) -> bool:
        return exchange.unrecorded({**claims, **changes}, kid="k", client=snapshot,
                                   now=now) is not None

    assert made()
    assert not made(client_id="lkc_someone_else")
    assert not made(iat=int(now.timestamp()) + 5)  # ahead of the clock
    assert not made(iat=int(now.timestamp()) - exchange.UNRECORDED_SECONDS - 1)
    assert not made(iat=float(now.timestamp()))
    assert exchange.unrecorded(claims, kid=None, client=snapshot, now=now) is None
