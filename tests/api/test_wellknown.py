"""GET /.well-known/jwks.json (RFC 7517) and the RFC 8414 metadata at both well-known paths."""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import urlsplit

import jwt
import pytest
from sqlalchemy import select

from portal.core.signing_keys.models import KeyState, SigningKey
from tests.factories import basic, make_client, make_org

JWKS = "/.well-known/jwks.json"
METADATA_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}
AUTH_METHODS = {"client_secret_basic", "client_secret_post", "private_key_jwt"}


@pytest.fixture
def orgs(session):
    """Three orgs, one per signing algorithm (RSA, EC and OKP keys)."""
    return [make_org(session, signing_alg=alg) for alg in ("RS256", "ES256", "EdDSA")]


def path_of(url):
    return urlsplit(url).path


# -- JWKS -----------------------------------------------------------------------------


def test_jwks_has_only_public_members(client, orgs):
    keys = client.get(JWKS).get_json()["keys"]
    assert {key["kty"] for key in keys} == {"RSA", "EC", "OKP"}
    for key in keys:
        assert not PRIVATE_MEMBERS & set(key), key


def test_every_jwk_has_kid_alg_and_use(client, orgs):
    keys = client.get(JWKS).get_json()["keys"]
    assert keys
    for key in keys:
        assert key["kid"] and key["use"] == "sig"
        assert key["alg"] in {"RS256", "ES256", "EdDSA"}
    assert len({key["kid"] for key in keys}) == len(keys)


def test_jwks_contains_next_and_active_key_of_every_org(client, session, orgs):
    kids = {key["kid"] for key in client.get(JWKS).get_json()["keys"]}
    for org in orgs:
        states = {k.state: k.kid for k in session.scalars(
            select(SigningKey).where(SigningKey.org_id == org.id))}
        assert states[KeyState.ACTIVE] in kids
        assert states[KeyState.NEXT] in kids


def test_jwks_is_cacheable(client, orgs):
    response = client.get(JWKS)
    assert response.status_code == HTTPStatus.OK
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert response.headers["ETag"]


def test_jwks_if_none_match_is_304(client, orgs):
    etag = client.get(JWKS).headers["ETag"]
    response = client.get(JWKS, headers={"If-None-Match": etag})
    assert response.status_code == HTTPStatus.NOT_MODIFIED
    assert response.get_data() == b""
    assert response.headers["ETag"] == etag


def test_jwks_stale_etag_gets_the_document(client, orgs):
    response = client.get(JWKS, headers={"If-None-Match": '"0000"'})
    assert response.status_code == HTTPStatus.OK
    assert response.get_json()["keys"]


# -- metadata -------------------------------------------------------------------------


def test_both_metadata_paths_serve_the_same_document(client):
    first, second = (client.get(path) for path in METADATA_PATHS)
    assert first.status_code == second.status_code == HTTPStatus.OK
    assert first.get_json() == second.get_json()
    assert first.mimetype == "application/json"


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_metadata_names_the_issuer_and_its_endpoints(client, path):
    doc = client.get(path).get_json()
    assert doc["issuer"] == "http://localhost"
    assert doc["token_endpoint"] == "http://localhost/oauth/token"
    assert doc["introspection_endpoint"] == "http://localhost/oauth/introspect"
    assert doc["revocation_endpoint"] == "http://localhost/oauth/revoke"
    assert doc["jwks_uri"] == "http://localhost/.well-known/jwks.json"


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_metadata_lists_only_client_credentials(client, path):
    doc = client.get(path).get_json()
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert "response_types_supported" not in doc  # RFC 8414 §3.2: no empty arrays
    assert "authorization_endpoint" not in doc


@pytest.mark.parametrize("path", METADATA_PATHS)
def test_metadata_lists_the_three_auth_methods(client, path):
    doc = client.get(path).get_json()
    for endpoint in ("token", "introspection", "revocation"):
        methods = doc[f"{endpoint}_endpoint_auth_methods_supported"]
        assert sorted(methods) == sorted(AUTH_METHODS)


def test_advertised_endpoints_answer(client, session):
    doc = client.get(METADATA_PATHS[0]).get_json()
    c, secret = make_client(session, make_org(session))
    auth = basic(c.client_id, secret)
    issued = client.post(path_of(doc["token_endpoint"]),
                         data={"grant_type": "client_credentials"}, headers=auth)
    assert issued.status_code == HTTPStatus.OK
    token = issued.get_json()["access_token"]
    jwks = client.get(path_of(doc["jwks_uri"])).get_json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="https://api.example.com",
                        issuer=doc["issuer"])
    assert claims["client_id"] == c.client_id
    introspected = client.post(path_of(doc["introspection_endpoint"]), data={"token": token},
                               headers=auth)
    assert introspected.get_json()["active"] is True
    revoked = client.post(path_of(doc["revocation_endpoint"]), data={"token": token},
                          headers=auth)
    assert revoked.status_code == HTTPStatus.OK
    after = client.post(path_of(doc["introspection_endpoint"]), data={"token": token},
                        headers=auth)
    assert after.get_json() == {"active": False}


def test_metadata_omits_scopes_supported_by_default(client, session):
    make_client(session, make_org(session), scopes=["orders:read"])
    for path in METADATA_PATHS:
        assert "scopes_supported" not in client.get(path).get_json()


@pytest.mark.parametrize("app_config", [{"SCOPES_SUPPORTED": ["orders:read", "orders:write"]}])
def test_metadata_lists_configured_scopes(client, app_config):
    for path in METADATA_PATHS:
        assert client.get(path).get_json()["scopes_supported"] == ["orders:read", "orders:write"]


@pytest.mark.parametrize("app_config", [{"SCOPES_SUPPORTED": "orders:read, orders:write"}])
def test_metadata_lists_configured_scopes_from_a_string(client, app_config):
    doc = client.get(METADATA_PATHS[1]).get_json()
    assert doc["scopes_supported"] == ["orders:read", "orders:write"]


def test_metadata_is_cacheable(client):
    response = client.get(METADATA_PATHS[0])
    assert "max-age=" in response.headers["Cache-Control"]
    again = client.get(METADATA_PATHS[1], headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == HTTPStatus.NOT_MODIFIED
