"""Secrets, keyed hashes and password hashing: pure functions, no app, no database."""

from __future__ import annotations

import re

import jwt
import pytest

from portal.core import crypto
from portal.core.signing_keys.services import ActiveKey, generate_private_key

B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


@pytest.mark.parametrize("prefix", [crypto.CLIENT_SECRET_PREFIX, crypto.API_KEY_PREFIX])
def test_new_secret_starts_with_its_prefix(prefix):
    assert crypto.new_secret(prefix).startswith(prefix)


def test_new_secret_carries_at_least_256_bits():
    body = crypto.new_secret(crypto.CLIENT_SECRET_PREFIX)[len(crypto.CLIENT_SECRET_PREFIX):]
    assert B64URL.match(body)
    assert len(body) >= 43  # 43 base64url characters hold 258 bits
    assert len(body) * 6 >= 256


def test_new_secrets_differ():
    assert crypto.new_secret("p_") != crypto.new_secret("p_")


def test_client_secret_prefix_is_recognisable():
    assert crypto.CLIENT_SECRET_PREFIX == "lk_secret_"
    assert crypto.API_KEY_PREFIX == "lk_apikey_"


def test_secret_hint_is_last_four_characters():
    assert crypto.secret_hint("lk_secret_abcdWXYZ") == "WXYZ"


def test_hmac_digest_is_32_bytes():
    digest = crypto.hmac_digest(b"server key", "lk_secret_value")
    assert isinstance(digest, bytes) and len(digest) == 32


def test_hmac_digest_is_deterministic():
    assert crypto.hmac_digest(b"k", "v") == crypto.hmac_digest(b"k", "v")


def test_hmac_digest_depends_on_the_key():
    value = "lk_secret_same"
    assert crypto.hmac_digest(b"key one", value) != crypto.hmac_digest(b"key two", value)


def test_hmac_digest_depends_on_the_value():
    assert crypto.hmac_digest(b"k", "value a") != crypto.hmac_digest(b"k", "value b")


def test_hmac_digest_is_not_a_plain_hash():
    import hashlib

    assert crypto.hmac_digest(b"k", "v") != hashlib.sha256(b"v").digest()


def test_digests_equal_compares_whole_values():
    assert crypto.digests_equal(b"\x01" * 32, b"\x01" * 32)
    assert not crypto.digests_equal(b"\x01" * 32, b"\x01" * 31 + b"\x02")


def test_hash_password_uses_argon2id():
    assert crypto.hash_password("correct horse battery staple").startswith("$argon2id$")


def test_hash_password_is_salted():
    assert crypto.hash_password("same password") != crypto.hash_password("same password")


def test_verify_password_accepts_the_right_password():
    hashed = crypto.hash_password("correct horse battery staple")
    assert crypto.verify_password(hashed, "correct horse battery staple") is True


def test_verify_password_rejects_a_wrong_password():
    hashed = crypto.hash_password("correct horse battery staple")
    assert crypto.verify_password(hashed, "correct horse battery stapler") is False


@pytest.mark.parametrize("garbage", [
    "",
    "garbage",
    "$argon2id$",
    "$argon2id$v=19$m=65536,t=3,p=4$bad$bad",
    "$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
    "pbkdf2_sha256$600000$salt$hash",
    "$argon2id$v=19$m=65536,t=3,p=4$é$é",
    "ünïcode",
])
def test_verify_password_rejects_garbage_hash_without_raising(garbage):
    assert crypto.verify_password(garbage, "any password") is False


def test_new_public_id_has_prefix_and_no_dashes_or_underscores_after_it():
    value = crypto.new_public_id(crypto.CLIENT_ID_PREFIX, 16)
    assert value.startswith("lkc_")
    assert re.match(r"^[A-Za-z0-9]+$", value[len("lkc_"):])


# -- signing tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_active_key_signs_what_pyjwt_verifies_with_the_same_header(alg):
    key = ActiveKey(kid="kid-1", alg=alg, org_id=1, private_key=generate_private_key(alg))
    claims = {"iss": "https://issuer.test", "exp": 2_000_000_000, "scope": "a b", "x": ["é", 1]}
    token = key.sign(claims)
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": "kid-1", "typ": "at+jwt"}
    public = key.private_key.public_key()
    assert jwt.decode(token, public, algorithms=[alg], options={"verify_exp": False}) == claims


@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])  # deterministic signatures
def test_active_key_signs_the_same_bytes_as_pyjwt(alg):
    key = ActiveKey(kid="kid-1", alg=alg, org_id=1, private_key=generate_private_key(alg))
    claims = {"sub": "c", "n": 1, "nested": {"b": 2, "a": 1}}
    assert key.sign(claims) == jwt.encode(claims, key.private_key, algorithm=alg,
                                          headers={"typ": "at+jwt", "kid": key.kid})


@pytest.mark.production_argon2
def test_passwords_are_hashed_on_one_lane_with_64_mib_and_three_passes():
    """One lane: a sign-in takes one core, not every core (bench/README.md, portal busy)."""
    assert crypto.hash_password("correct horse").startswith("$argon2id$v=19$m=65536,t=3,p=1$")
