"""POST /oauth/revoke (RFC 7009): a client revokes its own tokens, an API key any of its org's."""

from __future__ import annotations

from http import HTTPStatus

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from portal.core.audit.models import AuditEntry
from portal.core.usage.models import UsageKind
from tests.api.conftest import NOT_TOKENS, only_usage_event
from tests.factories import basic, bearer, get_token, jti_of, make_api_key, make_client

REVOKE = "/oauth/revoke"
INTROSPECT = "/oauth/introspect"


@pytest.fixture
def org_key(session, org):
    key, _row = make_api_key(session, org)
    return key


def revoke(http, token, headers, **params):
    return http.post(REVOKE, data={"token": token, **params}, headers=headers)


def is_active(http, token, api_key):
    """Whether the token introspects active for its own org (asked with the org's API key)."""
    body = http.post(INTROSPECT, data={"token": token}, headers=bearer(api_key)).get_json()
    return body["active"]


def test_client_revokes_its_own_token(client, acme, token, org_key):
    secret, c = acme
    response = revoke(client, token, basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK
    assert response.get_json() == {}
    assert response.headers["Cache-Control"] == "no-store"
    assert is_active(client, token, org_key) is False


def test_client_revokes_with_client_secret_post(client, acme, token, org_key):
    secret, c = acme
    response = revoke(client, token, {}, client_id=c.public_id, client_secret=secret)
    assert response.status_code == HTTPStatus.OK
    assert is_active(client, token, org_key) is False


def test_revoking_leaves_other_tokens_of_the_client_active(client, acme, token, org_key):
    secret, c = acme
    other = get_token(client, c, secret)
    revoke(client, token, basic(c.public_id, secret))
    assert is_active(client, other, org_key) is True


@pytest.mark.parametrize("garbage", NOT_TOKENS)
def test_unknown_token_answers_200(client, acme, garbage):
    secret, c = acme
    response = revoke(client, garbage, basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK
    assert response.get_json() == {}


def test_forged_token_with_a_real_jti_revokes_nothing(client, acme, token, org_key):
    secret, c = acme
    claims = jwt.decode(token, options={"verify_signature": False})
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, foreign, algorithm="RS256",
                        headers={"typ": "at+jwt", "kid": jwt.get_unverified_header(token)["kid"]})
    response = revoke(client, forged, basic(c.public_id, secret))
    assert response.status_code == HTTPStatus.OK
    assert is_active(client, token, org_key) is True


def test_another_client_of_the_org_is_unauthorized_client(client, session, org, token, org_key):
    secret, other = make_client(session, org)
    response = revoke(client, token, basic(other.public_id, secret))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json() == {"error": "unauthorized_client",
                                   "error_description": "The token was not issued to this client."}
    assert is_active(client, token, org_key) is True


def test_org_api_key_revokes_any_token_of_its_org(client, session, org, token, org_key):
    response = revoke(client, token, bearer(org_key))
    assert response.status_code == HTTPStatus.OK
    assert is_active(client, token, org_key) is False
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "token:revoked"))
    assert entry.org_id == org.id and entry.target_type == "token"
    assert entry.target_id == jti_of(token)
    assert entry.actor == f"api_key:{org_key[-4:]}"


def test_revocation_records_usage_event(client, session, acme, token):
    secret, c = acme
    revoke(client, token, basic(c.public_id, secret))
    event = only_usage_event(session, UsageKind.TOKEN_REVOKED)
    assert event.jti == jti_of(token) and event.client_id == c.id
    assert event.org_id == c.org_id and event.client_ref == f"client:{c.public_id}"


def test_unauthenticated_caller_is_invalid_client(client, token, org_key):
    response = client.post(REVOKE, data={"token": token})
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert response.get_json() == {"error": "invalid_client",
                                   "error_description": "Client authentication is required."}
    assert is_active(client, token, org_key) is True


def test_revoking_twice_is_fine(client, session, acme, token, org_key):
    secret, c = acme
    first = revoke(client, token, basic(c.public_id, secret))
    second = revoke(client, token, basic(c.public_id, secret))
    assert first.status_code == second.status_code == HTTPStatus.OK
    assert second.get_json() == {}
    assert is_active(client, token, org_key) is False


# -- two orgs -------------------------------------------------------------------------


def test_other_orgs_client_cannot_revoke(client, session, token, org_key, other_org):
    secret, stranger = make_client(session, other_org)
    response = revoke(client, token, basic(stranger.public_id, secret))
    assert response.status_code == HTTPStatus.OK
    assert response.get_json() == {}
    assert is_active(client, token, org_key) is True


def test_other_orgs_api_key_cannot_revoke(client, session, token, org_key, other_org):
    stranger_key, _row = make_api_key(session, other_org)
    response = revoke(client, token, bearer(stranger_key))
    assert response.status_code == HTTPStatus.OK
    assert response.get_json() == {}
    assert is_active(client, token, org_key) is True
    assert session.scalar(select(AuditEntry).where(AuditEntry.action == "token:revoked")) is None
