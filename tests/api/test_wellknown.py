"""GET /.well-known/jwks.json (RFC 7517) and the RFC 8414 metadata at both well-known paths."""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import urlsplit

import jwt
import pytest
from sqlalchemy import select

from api.wellknown import WellKnownFastPath
from portal.core.actor import Actor
from portal.core.signing_keys import services as signing_keys
from portal.core.signing_keys.models import KeyState, SigningKey
from tests.api.conftest import BACKEND_DOORS
from tests.factories import age_next_key, basic, make_api, make_client, make_org

JWKS = "/.well-known/jwks.json"
METADATA = "/.well-known/oauth-authorization-server"
METADATA_PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}
AUTH_METHODS = {"client_secret_basic", "client_secret_post", "private_key_jwt"}


@pytest.fixture(params=[p for p in BACKEND_DOORS if p.values[0][1] == "wsgi"])
def backend_door(request):
    """The well-known documents do not go through the protocol's doors: one door suffices."""
    return tuple(request.param)


def fast_path(app):
    layer = app.wsgi_app
    while not isinstance(layer, WellKnownFastPath):  # inside the request middleware
        layer = layer.wsgi_app
    return layer


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
    secret, c = make_client(session, make_org(session))
    auth = basic(c.public_id, secret)
    issued = client.post(path_of(doc["token_endpoint"]),
                         data={"grant_type": "client_credentials"}, headers=auth)
    assert issued.status_code == HTTPStatus.OK
    token = issued.get_json()["access_token"]
    jwks = client.get(path_of(doc["jwks_uri"])).get_json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="https://api.example.com",
                        issuer=doc["issuer"])
    assert claims["client_id"] == c.public_id
    introspected = client.post(path_of(doc["introspection_endpoint"]), data={"token": token},
                               headers=auth)
    assert introspected.get_json()["active"] is True
    revoked = client.post(path_of(doc["revocation_endpoint"]), data={"token": token},
                          headers=auth)
    assert revoked.status_code == HTTPStatus.OK
    after = client.post(path_of(doc["introspection_endpoint"]), data={"token": token},
                        headers=auth)
    assert after.get_json() == {"active": False}


def test_metadata_omits_scopes_supported_without_deployment_apis(client, session):
    make_client(session, make_org(session), scopes=["orders:read"])
    for path in METADATA_PATHS:
        assert "scopes_supported" not in client.get(path).get_json()


def test_metadata_lists_the_deployment_apis_scopes_only(client, session):
    make_api(session, None, identifier="https://platform.example.com",
             scopes=("platform:read", "platform:write"))
    make_api(session, make_org(session), identifier="https://private.example.com",
             scopes=("secret:thing",))
    for path in METADATA_PATHS:
        assert client.get(path).get_json()["scopes_supported"] == [
            "platform:read", "platform:write"]


@pytest.mark.parametrize("extra_config", [{"KEY_CACHE_SECONDS": 0}])
def test_metadata_shows_a_new_deployment_api_without_a_restart(client, session, extra_config):
    assert "scopes_supported" not in client.get(METADATA_PATHS[0]).get_json()

    make_api(session, None, identifier="https://platform.example.com", scopes=("platform:use",))

    assert client.get(METADATA_PATHS[0]).get_json()["scopes_supported"] == ["platform:use"]


def test_metadata_is_cacheable(client):
    response = client.get(METADATA_PATHS[0])
    assert "max-age=" in response.headers["Cache-Control"]
    again = client.get(METADATA_PATHS[1], headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == HTTPStatus.NOT_MODIFIED


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
