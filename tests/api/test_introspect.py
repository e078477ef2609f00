"""POST /oauth/introspect (RFC 7662): who may ask, what an active token shows, what is inactive."""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from portal.core.api_keys import services as api_keys
from portal.core.api_keys.models import ApiKey
from portal.core.clients import services as clients
from portal.core.tokens import services as tokens
from portal.core.types import utcnow
from portal.core.usage.models import UsageEvent, UsageKind
from tests.api.conftest import NOT_TOKENS, only_usage_event
from tests.factories import TEST_ACTOR, basic, bearer, get_token, issue, make_api_key, make_client

INTROSPECT = "/oauth/introspect"
INACTIVE = {"active": False}


def introspect(http, token, headers, **params):
    return http.post(INTROSPECT, data={"token": token, **params}, headers=headers)


def assert_inactive(http, acme, token):
    """Introspected by ``acme``'s client (Basic): 200 and only ``{"active": false}``."""
    secret, c = acme
    response = introspect(http, token, basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK
    assert response.get_json() == INACTIVE


def claims_of(token):
    return jwt.decode(token, options={"verify_signature": False})


def test_active_token_shows_its_claims(client, acme, token, org):
    secret, c = acme
    response = introspect(client, token, basic(c.public_id, secret))
    claims = claims_of(token)
    assert response.status_code == HTTPStatus.OK
    assert response.get_json() == {
        "active": True,
        "token_type": "Bearer",
        "scope": "read write",
        "client_id": c.public_id,
        "sub": c.public_id,
        "aud": "https://api.example.com",
        "iss": "http://localhost",
        "exp": claims["exp"],
        "iat": claims["iat"],
        "nbf": claims["iat"],
        "jti": claims["jti"],
        "oid": org.public_id,
    }
    assert response.headers["Cache-Control"] == "no-store"


def test_another_client_of_the_org_may_introspect_with_basic(client, session, org, token):
    secret, caller = make_client(session, org)
    response = introspect(client, token, basic(caller.public_id, secret))
    assert response.status_code == HTTPStatus.OK
    assert response.get_json()["active"] is True


def test_another_client_of_the_org_may_introspect_with_post(client, session, org, token):
    secret, caller = make_client(session, org)
    response = introspect(client, token, {}, client_id=caller.public_id, client_secret=secret)
    assert response.status_code == HTTPStatus.OK
    assert response.get_json()["active"] is True


def test_org_api_key_may_introspect_as_bearer(client, session, org, token):
    key, _row = make_api_key(session, org)
    response = introspect(client, token, bearer(key))
    assert response.status_code == HTTPStatus.OK
    assert response.get_json()["active"] is True
    assert response.get_json()["jti"] == claims_of(token)["jti"]


def test_an_api_key_that_introspects_shows_when_it_was_last_used(client, session, org, token,
                                                                 other_org):
    key, row = make_api_key(session, org)
    _, theirs = make_api_key(session, other_org)
    started = utcnow() - timedelta(seconds=1)

    assert introspect(client, token, bearer(key)).status_code == HTTPStatus.OK
    session.expire_all()
    used = session.get(ApiKey, row.id).last_used_at
    assert used is not None and used >= started
    assert session.get(ApiKey, theirs.id).last_used_at is None

    # Within a minute it is not written again; after one it is.
    recent = utcnow() - timedelta(seconds=10)
    session.get(ApiKey, row.id).last_used_at = recent
    session.commit()
    assert introspect(client, token, bearer(key)).status_code == HTTPStatus.OK
    session.expire_all()
    assert session.get(ApiKey, row.id).last_used_at == recent
    session.get(ApiKey, row.id).last_used_at = utcnow() - timedelta(minutes=5)
    session.commit()
    assert introspect(client, token, bearer(key)).status_code == HTTPStatus.OK
    session.expire_all()
    assert session.get(ApiKey, row.id).last_used_at >= started


@pytest.mark.parametrize(("asked", "active"), [
    ("read", True),
    ("read write", True),
    ("write read", True),
    ("admin", False),
    ("read admin", False),
    ("", True),  # RFC 6749 §3.1: a parameter sent without a value is as if omitted
])
def test_scope_parameter_requires_every_scope_asked_for(client, session, org, asked, active):
    secret, c = make_client(session, org, scopes=["read", "write", "other"])
    token = get_token(client, c, secret, scope="read write")
    body = introspect(client, token, basic(c.public_id, secret), scope=asked).get_json()
    assert body["active"] is active
    if not active:
        assert body == INACTIVE


def test_revoked_token_is_inactive(client, session, acme, token, org):
    record = tokens.find_record(session, org_id=org.id, jti=claims_of(token)["jti"])
    tokens.revoke(session, record, actor=TEST_ACTOR, now=utcnow())
    session.commit()
    assert_inactive(client, acme, token)


def test_expired_token_is_inactive(client, session, acme):
    expired = issue(session, acme[1], now=utcnow() - timedelta(hours=2))
    assert_inactive(client, acme, expired)


def test_token_that_has_not_expired_yet_is_active(client, session, acme):
    secret, c = acme
    recent = issue(session, c, now=utcnow() - timedelta(minutes=50))
    assert introspect(client, recent, basic(c.public_id, secret)).get_json()["active"] is True


def test_token_forged_with_another_key_is_inactive(client, acme, token):
    header = jwt.get_unverified_header(token)
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims_of(token), foreign, algorithm="RS256",
                        headers={"typ": "at+jwt", "kid": header["kid"]})
    assert_inactive(client, acme, forged)


@pytest.mark.parametrize("garbage", NOT_TOKENS)
def test_malformed_token_is_inactive(client, acme, garbage):
    assert_inactive(client, acme, garbage)


def test_unauthenticated_caller_is_invalid_client(client, token):
    response = introspect(client, token, {})
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.get_json() == {"error": "invalid_client",
                                   "error_description": "Client authentication is required."}
    assert response.headers["Cache-Control"] == "no-store"


def test_wrong_caller_secret_is_invalid_client(client, acme, token):
    _secret, c = acme
    response = introspect(client, token, basic(c.public_id, "lk_secret_wrong"))
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.get_json() == {"error": "invalid_client",
                                   "error_description": "Invalid client credentials."}


def test_revoked_api_key_is_invalid_client(client, session, org, token):
    key, row = make_api_key(session, org)
    api_keys.revoke_api_key(session, org_id=org.id, key_id=row.id, actor=TEST_ACTOR, now=utcnow())
    session.commit()
    response = introspect(client, token, bearer(key))
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.get_json() == {"error": "invalid_client",
                                   "error_description": "Invalid API key."}


def test_disabled_client_may_not_introspect(client, session, acme, token):
    secret, c = acme
    clients.set_enabled(session, c, enabled=False, actor=TEST_ACTOR)
    session.commit()
    response = introspect(client, token, basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json() == {"error": "unauthorized_client",
                                   "error_description": "This client is disabled."}


#: What can happen to a client after it got a token.
CLIENT_CHANGES = {
    "disabled": lambda session, c: clients.set_enabled(session, c, enabled=False, actor=TEST_ACTOR),
    "deleted": lambda session, c: clients.delete_client(session, c, actor=TEST_ACTOR, now=utcnow()),
}


@pytest.mark.parametrize("change", CLIENT_CHANGES)
def test_tokens_of_a_disabled_or_deleted_client_are_inactive(client, session, org, acme, token,
                                                             change):
    _secret, c = acme
    key, _row = make_api_key(session, org)
    CLIENT_CHANGES[change](session, c)
    session.commit()
    response = introspect(client, token, bearer(key))
    assert response.status_code == HTTPStatus.OK
    assert response.get_json() == INACTIVE


def test_introspection_records_usage_event(client, session, acme, token):
    secret, c = acme
    introspect(client, token, basic(c.public_id, secret))
    event = only_usage_event(session, UsageKind.TOKEN_INTROSPECTED)
    assert event.org_id == c.org_id and event.client_id == c.id
    assert event.jti == claims_of(token)["jti"] and event.reason == "active"
    assert event.client_ref == f"client:{c.public_id}" and event.source_ip == "127.0.0.1"


def test_inactive_introspection_records_usage_event(client, session, org, acme):
    secret, c = acme
    introspect(client, "garbage", basic(c.public_id, secret))
    event = session.scalar(
        select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_INTROSPECTED))
    assert event.org_id == org.id and event.reason == "inactive"
    assert event.client_id is None and event.jti is None


# -- two orgs -------------------------------------------------------------------------


def test_other_orgs_client_sees_token_inactive(client, session, acme, token, other_org):
    secret, c = acme
    stranger_secret, stranger = make_client(session, other_org)
    response = introspect(client, token, basic(stranger.public_id, stranger_secret))
    assert response.status_code == HTTPStatus.OK
    assert response.get_json() == INACTIVE
    assert introspect(client, token, basic(c.public_id, secret)).get_json()["active"] is True


def test_other_orgs_api_key_sees_token_inactive(client, session, acme, token, other_org):
    secret, c = acme
    key, _row = make_api_key(session, other_org)
    response = introspect(client, token, bearer(key))
    assert response.status_code == HTTPStatus.OK
    assert response.get_json() == INACTIVE
    assert introspect(client, token, basic(c.public_id, secret)).get_json()["active"] is True


def test_other_orgs_introspection_is_recorded_without_the_token(client, session, token, org,
                                                                other_org):
    key, _row = make_api_key(session, other_org)
    introspect(client, token, bearer(key))
    event = session.scalar(
        select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_INTROSPECTED))
    assert event.org_id == other_org.id != org.id
    assert event.client_id is None and event.jti is None and event.reason == "inactive"


def test_introspecting_a_revoked_token_records_the_token_client(client, session, org, acme,
                                                                token):
    secret, c = acme
    caller_secret, caller = make_client(session, org, name="gateway")
    tokens.revoke(session, tokens.get_record(session, org_id=org.id,
                                             jti=claims_of(token)["jti"]), actor=TEST_ACTOR)
    session.commit()

    assert introspect(client, token, basic(caller.public_id, caller_secret)).get_json() \
        == INACTIVE
    event = session.scalar(
        select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_INTROSPECTED))
    # The token is authentic (signed by its record's key), so its client is named.
    assert event.reason == "inactive" and event.client_id == c.id
    assert event.jti == claims_of(token)["jti"]
    assert event.client_ref == f"client:{caller.public_id}"


def test_a_forged_token_naming_a_real_jti_is_not_attributed(client, session, org, acme, token):
    secret, c = acme
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    header = jwt.get_unverified_header(token)
    forged = jwt.encode(claims_of(token), key, algorithm="RS256",
                        headers={"kid": header["kid"], "typ": "at+jwt"})

    assert introspect(client, forged, basic(c.public_id, secret)).get_json() == INACTIVE
    event = session.scalar(
        select(UsageEvent).where(UsageEvent.kind == UsageKind.TOKEN_INTROSPECTED))
    assert event.reason == "inactive" and event.client_id is None and event.jti is None
