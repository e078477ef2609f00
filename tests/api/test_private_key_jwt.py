"""POST /oauth/token with ``private_key_jwt`` client authentication (RFC 7523 §2.2)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from http import HTTPStatus

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from portal.core.clients import services as clients
from portal.core.errors import ValidationFailed
from tests.factories import TEST_ACTOR, make_client

TOKEN_URL = "http://localhost/oauth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRANT = {"grant_type": "client_credentials"}


def _public_jwk(algorithm, private_key, kid):
    jwk = algorithm.to_jwk(private_key.public_key(), as_dict=True)
    return {**jwk, "kid": kid}


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def jwks(rsa_key, ec_key):
    return {"keys": [_public_jwk(RSAAlgorithm, rsa_key, "rsa-1"),
                     _public_jwk(ECAlgorithm, ec_key, "ec-1")]}


@pytest.fixture
def pkj(session, org, jwks):
    """A client that authenticates only with private_key_jwt."""
    secret, c = make_client(session, org, auth_methods=["private_key_jwt"], jwks=jwks)
    assert secret == ""  # no secret for a key-only client
    return c


def assertion(client_id, key, *, alg="RS256", kid="rsa-1", **overrides):
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "iat": now,
              "exp": now + 60, "jti": secrets.token_urlsafe(16)}
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def post_assertion(http, value, assertion_type=ASSERTION_TYPE):
    data = {**GRANT, "client_assertion": value}
    if assertion_type is not None:
        data["client_assertion_type"] = assertion_type
    return http.post("/oauth/token", data=data)


def assert_invalid_client(response):
    assert response.status_code == HTTPStatus.BAD_REQUEST, response.get_json()
    assert response.get_json()["error"] == "invalid_client"
    assert "WWW-Authenticate" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_rs256_assertion_gets_a_token(client, pkj, rsa_key):
    response = post_assertion(client, assertion(pkj.public_id, rsa_key))
    assert response.status_code == HTTPStatus.OK, response.get_json()
    body = response.get_json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == pkj.public_id == claims["client_id"]
    assert body["token_type"] == "Bearer" and body["scope"] == "read write"


def test_es256_assertion_gets_a_token(client, pkj, ec_key):
    response = post_assertion(client, assertion(pkj.public_id, ec_key, alg="ES256", kid="ec-1"))
    assert response.status_code == HTTPStatus.OK, response.get_json()
    assert response.get_json()["access_token"]


def test_issuer_url_is_an_accepted_audience(client, pkj, rsa_key):
    response = post_assertion(client, assertion(pkj.public_id, rsa_key, aud="http://localhost"))
    assert response.status_code == HTTPStatus.OK, response.get_json()


def test_assertion_without_kid_works_with_a_single_key_jwks(client, session, org, rsa_key):
    jwks = {"keys": [_public_jwk(RSAAlgorithm, rsa_key, "only")]}
    _, c = make_client(session, org, auth_methods=["private_key_jwt"], jwks=jwks)
    now = int(time.time())
    value = jwt.encode({"iss": c.public_id, "sub": c.public_id, "aud": TOKEN_URL,
                        "iat": now, "exp": now + 60, "jti": secrets.token_urlsafe(16)},
                       rsa_key, algorithm="RS256")
    response = post_assertion(client, value)
    assert response.status_code == HTTPStatus.OK, response.get_json()


def test_replayed_jti_is_invalid_client(client, pkj, rsa_key):
    value = assertion(pkj.public_id, rsa_key)
    assert post_assertion(client, value).status_code == HTTPStatus.OK
    replay = post_assertion(client, value)
    assert_invalid_client(replay)
    assert replay.get_json()["error_description"] == "JWT ID is used before."


def test_assertion_stays_used_when_its_request_fails(client, pkj, rsa_key):
    value = assertion(pkj.public_id, rsa_key)
    first = client.post("/oauth/token", data={**GRANT, "client_assertion": value,
                                              "client_assertion_type": ASSERTION_TYPE,
                                              "scope": "admin"})
    assert first.get_json()["error"] == "invalid_scope"
    replay = post_assertion(client, value)
    assert_invalid_client(replay)
    assert replay.get_json()["error_description"] == "JWT ID is used before."


def test_same_jti_in_a_new_assertion_is_invalid_client(client, pkj, rsa_key):
    assert post_assertion(client, assertion(pkj.public_id, rsa_key, jti="once")).status_code == \
        HTTPStatus.OK
    assert_invalid_client(post_assertion(client, assertion(pkj.public_id, rsa_key, jti="once")))


def test_assertion_without_jti_is_invalid_client(client, pkj, rsa_key):
    now = int(time.time())
    value = jwt.encode({"iss": pkj.public_id, "sub": pkj.public_id, "aud": TOKEN_URL,
                        "iat": now, "exp": now + 60}, rsa_key, algorithm="RS256",
                       headers={"kid": "rsa-1"})
    assert_invalid_client(post_assertion(client, value))


@pytest.mark.parametrize("aud", ["https://evil.example.com/oauth/token",
                                 "http://localhost/oauth/introspect-not", "", ["x"]])
def test_wrong_audience_is_invalid_client(client, pkj, rsa_key, aud):
    assert_invalid_client(post_assertion(client, assertion(pkj.public_id, rsa_key, aud=aud)))


def test_expired_assertion_is_invalid_client(client, pkj, rsa_key):
    now = int(time.time())
    value = assertion(pkj.public_id, rsa_key, iat=now - 600, exp=now - 300)
    assert_invalid_client(post_assertion(client, value))


def test_assertion_without_exp_is_invalid_client(client, pkj, rsa_key):
    now = int(time.time())
    value = jwt.encode({"iss": pkj.public_id, "sub": pkj.public_id, "aud": TOKEN_URL,
                        "iat": now, "jti": secrets.token_urlsafe(16)}, rsa_key,
                       algorithm="RS256", headers={"kid": "rsa-1"})
    assert_invalid_client(post_assertion(client, value))


def test_assertion_signed_by_another_key_is_invalid_client(client, pkj):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_invalid_client(post_assertion(client, assertion(pkj.public_id, stranger)))


def test_issuer_other_than_subject_is_invalid_client(client, pkj, rsa_key):
    value = assertion(pkj.public_id, rsa_key, iss="lkc_someone_else")
    assert_invalid_client(post_assertion(client, value))


def test_unknown_subject_is_invalid_client(client, pkj, rsa_key):
    value = assertion("lkc_nobody", rsa_key)
    assert_invalid_client(post_assertion(client, value))


def test_hs256_assertion_keyed_with_the_public_key_is_invalid_client(client, pkj, rsa_key):
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = _b64(json.dumps({"iss": pkj.public_id, "sub": pkj.public_id, "aud": TOKEN_URL,
                               "iat": now, "exp": now + 60,
                               "jti": secrets.token_urlsafe(16)}).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _b64(hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    assert_invalid_client(post_assertion(client, f"{header}.{payload}.{signature}"))


def test_unsigned_assertion_is_invalid_client(client, pkj):
    now = int(time.time())
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps({"iss": pkj.public_id, "sub": pkj.public_id, "aud": TOKEN_URL,
                               "iat": now, "exp": now + 60,
                               "jti": secrets.token_urlsafe(16)}).encode())
    assert_invalid_client(post_assertion(client, f"{header}.{payload}."))


@pytest.mark.parametrize("value", ["", "not-a-jwt", "a.b.c", "e30.e30.", "x" * 4000])
def test_malformed_assertion_is_invalid_client(client, pkj, value):
    assert_invalid_client(post_assertion(client, value))


@pytest.mark.parametrize("assertion_type", [
    None, "", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"])
def test_missing_or_wrong_assertion_type_is_invalid_client(client, pkj, rsa_key, assertion_type):
    response = post_assertion(client, assertion(pkj.public_id, rsa_key), assertion_type)
    assert_invalid_client(response)
    assert response.get_json()["error_description"] == (
        "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.")


def test_secret_only_client_presenting_an_assertion_is_invalid_client(client, session, org,
                                                                      rsa_key):
    _secret, c = make_client(session, org)
    assert_invalid_client(post_assertion(client, assertion(c.public_id, rsa_key)))


def test_secret_client_with_jwks_may_not_use_private_key_jwt(client, session, org, jwks,
                                                             rsa_key):
    _secret, c = make_client(session, org, auth_methods=["client_secret_basic"], jwks=jwks)
    response = post_assertion(client, assertion(c.public_id, rsa_key))
    assert_invalid_client(response)
    assert response.get_json()["error_description"] == (
        "This client may not authenticate with private_key_jwt.")


def test_key_only_client_cannot_use_a_secret(client, pkj):
    response = client.post("/oauth/token", data={**GRANT, "client_id": pkj.public_id,
                                                 "client_secret": "lk_secret_guess"})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "invalid_client"


def test_assertion_and_secret_together_is_invalid_request(client, pkj, rsa_key):
    response = client.post("/oauth/token", data={
        **GRANT, "client_id": pkj.public_id, "client_secret": "lk_secret_x",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(pkj.public_id, rsa_key)})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "invalid_request"


def test_disabled_key_client_is_unauthorized_client(client, session, pkj, rsa_key):
    clients.set_enabled(session, pkj, enabled=False, actor=TEST_ACTOR)
    session.commit()
    response = post_assertion(client, assertion(pkj.public_id, rsa_key))
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.get_json()["error"] == "unauthorized_client"


def test_private_key_jwt_client_without_jwks_is_refused(session, org):
    with pytest.raises(ValidationFailed) as caught:
        clients.create_client(session, org=org, name="no keys", grants=[],
                              auth_methods=["private_key_jwt"], actor=TEST_ACTOR)
    assert caught.value.field == "jwks"  # the first of the errors (no grants is another)
    assert ("jwks", "private_key_jwt needs the client's public JWKS") in errors_of(caught.value)


def errors_of(failure: ValidationFailed) -> list[tuple[str | None, str]]:
    return [(e.field, e.message) for e in failure.errors]


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi"])
def test_jwks_with_a_private_member_is_refused(session, org, rsa_key, member):
    private = RSAAlgorithm.to_jwk(rsa_key, as_dict=True)
    public = {k: v for k, v in private.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
    leaked = {**public, member: private[member], "kid": "rsa-1"}
    with pytest.raises(ValidationFailed) as caught:
        clients.create_client(session, org=org, name="leaky", grants=[],
                              auth_methods=["private_key_jwt"], jwks={"keys": [leaked]},
                              actor=TEST_ACTOR)
    assert ("jwks", "the JWKS must hold public keys only") in errors_of(caught.value)


def test_jwks_with_a_symmetric_key_is_refused(session, org):
    with pytest.raises(ValidationFailed):
        clients.create_client(session, org=org, name="hmac", grants=[],
                              auth_methods=["private_key_jwt"],
                              jwks={"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, actor=TEST_ACTOR)


@pytest.mark.parametrize("jwks", [{}, {"keys": []}, {"keys": "x"}, ["x"], {"keys": [1]},
                                  {"keys": [{"kty": "RSA", "n": "AQAB"}]}])
def test_malformed_jwks_is_refused(session, org, jwks):
    with pytest.raises(ValidationFailed) as caught:
        clients.create_client(session, org=org, name="bad", grants=[],
                              auth_methods=["private_key_jwt"], jwks=jwks, actor=TEST_ACTOR)
    assert caught.value.field == "jwks"
