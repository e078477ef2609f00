"""verified_claims: only tokens exactly as this server signs them, valid now, verify."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from portal.core import settings
from portal.core.signing_keys import services as signing_keys
from tests.factories import decode, make_client, make_org, mint

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture(params=["RS256", "ES256", "EdDSA"])
def org(request, session):
    return make_org(session, signing_alg=request.param)


@pytest.fixture
def issued(session, org):
    _secret, client = make_client(session, org)
    return mint(session, client)


@pytest.fixture
def key(session, org):
    return signing_keys.keyring().active_key(org.id)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims_now(**changes):
    now = int(time.time())
    claims = {"iss": settings.issuer(), "sub": "lkc_x", "jti": "j1", "iat": now, "nbf": now,
              "exp": now + 600, "scope": "read"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_our_token_decodes_to_its_claims(session, issued):
    claims = decode(issued.access_token)
    assert claims == issued.claims
    assert claims == jwt.decode(issued.access_token, options={"verify_signature": False})


def test_claims_we_sign_and_that_hold_now_decode(session, key):
    claims = claims_now()  # once: a second call may fall in the next second
    assert decode(key.sign(claims)) == claims


@pytest.mark.parametrize("changes", [
    {"exp": -1},  # expired (relative to now, below)
    {"iat": 3600},  # issued in the future
    {"nbf": 3600},  # not valid yet
    {"exp": None}, {"iat": None}, {"jti": None},
    {"exp": "9999999999"}, {"exp": 9_999_999_999.5}, {"nbf": True},
    {"jti": 7}, {"sub": 7},
    {"iss": "https://elsewhere.example"}, {"iss": None},
], ids=lambda c: ",".join(f"{k}={v!r}" for k, v in c.items()))
def test_signed_claims_that_do_not_hold_give_none(session, key, changes):
    now = int(time.time())
    relative = {k: now + v if k in ("exp", "iat", "nbf") and type(v) is int else v
                for k, v in changes.items()}
    assert decode(key.sign(claims_now(**relative))) is None


@pytest.mark.parametrize("headers", [
    {"typ": "JWT"},  # not an access token header (RFC 9068)
    {"typ": "at+jwt", "cty": "JWT"},  # a member we never write
    {"typ": "at+jwt", "jku": "https://attacker.example/jwks.json"},
])
def test_header_other_than_the_keys_own_gives_none_even_when_signed_by_it(session, key,
                                                                          headers):
    token = jwt.encode(claims_now(), key.private_key, algorithm=key.alg,
                       headers={"kid": key.kid, **headers})
    assert jwt.decode(token, key.private_key.public_key(), algorithms=[key.alg],
                      options={"verify_aud": False})  # a valid JWS all the same
    assert decode(token) is None


def test_algorithm_is_the_keys_not_the_tokens(session):
    """PS256 is another algorithm over the same RSA key as RS256."""
    rsa_org = make_org(session, signing_alg="RS256")
    key = signing_keys.keyring().active_key(rsa_org.id)
    token = jwt.encode(claims_now(), key.private_key, algorithm="PS256",
                       headers={"typ": "at+jwt", "kid": key.kid})
    assert decode(token) is None


def test_signature_in_another_spelling_gives_none(session, issued):
    """Base64url's last character can carry unused bits; only the canonical spelling counts."""
    head, body, signature = issued.access_token.split(".")
    assert len(signature) % 4 in (2, 3)  # the last character has spare low bits
    last = ALPHABET.index(signature[-1])
    respelled = signature[:-1] + ALPHABET[last + 1]
    assert base64.urlsafe_b64decode(respelled + "=" * (-len(respelled) % 4)) == \
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    assert decode(f"{head}.{body}.{respelled}") is None


@pytest.mark.parametrize("mangle", [
    lambda t: t + "=",  # padding
    lambda t: t.replace(".", ".=", 1),
    lambda t: t + ".",  # four segments
    lambda t: t.rsplit(".", 1)[0],  # two
    lambda t: t[:-2] + "+/",  # base64, not base64url
    lambda t: t[:-1] + "é",
    lambda t: t.rsplit(".", 1)[0] + ".",  # no signature
], ids=["padded", "padded-header", "four-parts", "two-parts", "std-alphabet", "non-ascii",
        "unsigned"])
def test_mangled_token_gives_none(session, issued, mangle):
    assert decode(mangle(issued.access_token)) is None


@pytest.mark.parametrize("header", [
    b"[" * 5000,  # deeper than the JSON parser recurses
    b"[]", b'"kid"', b"\xff\xfe", b'{"kid": 1}', b'{"kid": "a\\u0000b"}', b'{"kid": "unknown"}',
])
def test_header_that_names_no_key_of_ours_gives_none(session, issued, header):
    _head, body, signature = issued.access_token.split(".")
    assert decode(f"{b64(header)}.{body}.{signature}") is None


def test_payload_of_another_token_under_our_signature_gives_none(session, issued, key):
    head, _body, signature = issued.access_token.split(".")
    other = b64(json.dumps(claims_now()).encode())
    assert decode(f"{head}.{other}.{signature}") is None


def test_a_verified_signature_is_remembered_while_its_key_is(session, issued, monkeypatch):
    from portal.core.signing_keys.services import PublishedKey

    calls = []
    real = PublishedKey.verify
    monkeypatch.setattr(PublishedKey, "verify",
                        lambda self, *a: calls.append(self.kid) or real(self, *a))
    for _ in range(3):
        assert decode(issued.access_token) == issued.claims
    assert len(calls) == 1  # introspecting the same token again costs no verification


def test_another_payload_under_a_remembered_signature_is_refused(session, issued):
    assert decode(issued.access_token) is not None  # remembered now
    head, _body, signature = issued.access_token.split(".")
    other = b64(json.dumps(claims_now(jti=issued.claims["jti"])).encode())
    assert decode(f"{head}.{other}.{signature}") is None


def test_a_forged_token_is_not_remembered(session, issued, monkeypatch):
    from portal.core.signing_keys.services import PublishedKey

    head, body, signature = issued.access_token.split(".")
    forged = f"{head}.{body}.{signature[:-4]}AAAA"
    calls = []
    real = PublishedKey.verify
    monkeypatch.setattr(PublishedKey, "verify",
                        lambda self, *a: calls.append(1) or real(self, *a))
    assert decode(forged) is None and decode(forged) is None
    assert len(calls) == 2
