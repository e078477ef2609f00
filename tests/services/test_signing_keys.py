"""Signing keys: encrypted at rest, next -> active -> retired, pruning and the JWKS."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization

from portal.core import crypto, settings
from portal.core.actor import Actor
from portal.core.audit.models import AuditEntry
from portal.core.errors import RotationTooSoon
from portal.core.signing_keys import services as signing_keys
from portal.core.signing_keys.models import KeyState
from portal.core.types import utcnow
from tests.factories import age_next_key, decode, make_client, make_org, mint

AUDIENCE = "https://api.example.com"
TEST = Actor("test")


def states(session, org):
    return sorted(k.state.value for k in signing_keys.org_keys(session, org_id=org.id))


def key_in(session, org, state):
    (key,) = [k for k in signing_keys.org_keys(session, org_id=org.id) if k.state is state]
    return key


def issue(session, org, client, **kwargs):
    return mint(session, client, **kwargs)


def jwks_kids(http):
    return {k["kid"] for k in http.get("/.well-known/jwks.json").get_json()["keys"]}


@pytest.fixture
def org(session):
    """An org whose next key has been published long enough to start signing."""
    org = make_org(session)
    age_next_key(session, org)
    return org


@pytest.fixture
def acme(session, org):
    return make_client(session, org)[1]


def test_new_org_has_one_active_and_one_next_key(session, org):
    assert states(session, org) == ["active", "next"]


def test_new_org_keys_use_the_default_algorithm(session, org):
    assert {k.alg for k in signing_keys.org_keys(session, org_id=org.id)} == {"RS256"}


def test_private_key_is_not_stored_as_pem(session, org):
    for key in signing_keys.org_keys(session, org_id=org.id):
        assert b"PRIVATE KEY" not in key.private_key_ciphertext
        assert b"-----BEGIN" not in key.private_key_ciphertext


def test_private_key_decrypts_with_the_configured_keys_and_matches_the_public_jwk(session, org):
    key = key_in(session, org, KeyState.ACTIVE)
    pem = crypto.decrypt_private_key(settings.key_encryption_keys(), key.private_key_ciphertext)
    assert b"PRIVATE KEY" in pem
    private = serialization.load_pem_private_key(pem, password=None)
    assert signing_keys.public_jwk(private, alg="RS256") == key.public_jwk


def test_private_key_does_not_decrypt_with_another_key(session, org):
    key = key_in(session, org, KeyState.ACTIVE)
    with pytest.raises(crypto.KeyDecryptionFailed):
        crypto.decrypt_private_key((Fernet.generate_key().decode(),), key.private_key_ciphertext)


def test_public_jwk_has_no_private_members(session, org):
    for key in signing_keys.org_keys(session, org_id=org.id):
        assert set(key.public_jwk) == {"kty", "n", "e", "kid", "alg", "use"}


def test_rotation_promotes_next_and_retires_active(session, org):
    active, upcoming = key_in(session, org, KeyState.ACTIVE), key_in(session, org, KeyState.NEXT)
    now = utcnow()
    new = signing_keys.rotate(session, org_id=org.id, actor=TEST, now=now)
    session.commit()
    assert new.kid == upcoming.kid and new.state is KeyState.ACTIVE
    assert active.state is KeyState.RETIRED and active.retired_at == now
    assert states(session, org) == ["active", "next", "retired"]


def test_rotation_publishes_a_fresh_next_key(session, org):
    before = {k.kid for k in signing_keys.org_keys(session, org_id=org.id)}
    signing_keys.rotate(session, org_id=org.id, actor=TEST)
    session.commit()
    fresh = key_in(session, org, KeyState.NEXT)
    assert fresh.kid not in before


def test_retired_key_is_published_until_its_last_recorded_token_expires(session, org, acme):
    now = utcnow()
    old = key_in(session, org, KeyState.ACTIVE)
    issue(session, org, acme, ttl=300, now=now)
    last = issue(session, org, acme, ttl=86400, now=now)
    rotated_at = now + timedelta(seconds=10)
    signing_keys.rotate(session, org_id=org.id, actor=TEST, now=rotated_at)
    session.commit()
    assert last.kid == old.kid
    assert old.publish_until >= last.values["expires_at"]


def test_retired_key_stays_published_for_tokens_that_stale_processes_sign_after_rotation(
        app, session, org, acme):
    # Each process signs with its cached active key for up to KEY_CACHE_SECONDS after a
    # rotation: a token it signs then, with the longest TTL, must still verify.
    now = utcnow()
    old = key_in(session, org, KeyState.ACTIVE)
    issue(session, org, acme, ttl=3600, now=now)
    signing_keys.rotate(session, org_id=org.id, actor=TEST, now=now)
    session.commit()
    stale_signing_at = now + timedelta(seconds=app.config["KEY_CACHE_SECONDS"])
    stale_token_expiry = stale_signing_at + timedelta(seconds=app.config["MAX_TOKEN_TTL"])
    assert old.publish_until >= stale_token_expiry
    assert old.is_published(stale_token_expiry - timedelta(seconds=1))


def test_retired_key_that_signed_nothing_stays_published_while_processes_may_sign_with_it(
        app, session, org):
    old = key_in(session, org, KeyState.ACTIVE)
    now = utcnow()
    signing_keys.rotate(session, org_id=org.id, actor=TEST, now=now)
    session.commit()
    assert old.is_published(now + timedelta(seconds=app.config["KEY_CACHE_SECONDS"]))


def test_prune_shortens_publication_to_the_last_recorded_token_once_no_process_signs(
        app, session, org, acme):
    now = utcnow()
    old = key_in(session, org, KeyState.ACTIVE)
    last = issue(session, org, acme, ttl=3600, now=now)
    signing_keys.rotate(session, org_id=org.id, actor=TEST, now=now)
    session.commit()
    settled = now + timedelta(seconds=app.config["KEY_CACHE_SECONDS"]) \
        + signing_keys.ROTATION_SLACK
    assert signing_keys.prune_retired(session, now=settled) == 0
    session.commit()
    assert old.publish_until == last.values["expires_at"]


def test_prune_does_not_shorten_publication_while_processes_may_still_sign(app, session, org,
                                                                          acme):
    now = utcnow()
    old = key_in(session, org, KeyState.ACTIVE)
    issue(session, org, acme, ttl=300, now=now)
    signing_keys.rotate(session, org_id=org.id, actor=TEST, now=now)
    session.commit()
    bound = old.publish_until
    assert signing_keys.prune_retired(session, now=now + timedelta(seconds=1)) == 0
    session.commit()
    assert old.publish_until == bound


def test_prune_deletes_a_retired_key_that_signed_nothing_after_the_cache_window(app, session,
                                                                              org):
    now = utcnow()
    old_kid = key_in(session, org, KeyState.ACTIVE).kid
    signing_keys.rotate(session, org_id=org.id, actor=TEST, now=now)
    session.commit()
    after = now + timedelta(seconds=app.config["KEY_CACHE_SECONDS"]) \
        + signing_keys.ROTATION_SLACK + timedelta(seconds=1)
    assert signing_keys.prune_retired(session, now=after) == 1
    session.commit()
    assert old_kid not in {k.kid for k in signing_keys.org_keys(session, org_id=org.id)}


def test_rotation_is_audited(session, org):
    new = signing_keys.rotate(session, org_id=org.id, actor=TEST)
    session.commit()
    entry = session.query(AuditEntry).filter_by(action="signing_key:rotated").one()
    assert entry.org_id == org.id and entry.target_id == new.kid and entry.actor == "test"


def test_tokens_issued_after_rotation_carry_the_new_kid(session, org, acme):
    before = issue(session, org, acme)
    new = signing_keys.rotate(session, org_id=org.id, actor=TEST)
    session.commit()
    after = issue(session, org, acme)
    assert jwt.get_unverified_header(before.access_token)["kid"] != new.kid
    assert jwt.get_unverified_header(after.access_token)["kid"] == new.kid
    assert after.kid == new.kid


def test_token_signed_before_rotation_still_verifies(session, org, acme):
    before = issue(session, org, acme)
    signing_keys.rotate(session, org_id=org.id, actor=TEST)
    session.commit()
    claims = decode(before.access_token)
    assert claims is not None and claims["jti"] == before.values["jti"]


def test_next_key_is_published_before_it_signs(session, client, org):
    upcoming = key_in(session, org, KeyState.NEXT)
    assert upcoming.kid in jwks_kids(client)


@pytest.mark.parametrize("app_config", [{"KEY_CACHE_SECONDS": 0}])
def test_retired_key_stays_in_jwks_until_its_last_token_expires(session, client, org, acme,
                                                                 app_config):
    now = utcnow()
    old = key_in(session, org, KeyState.ACTIVE)
    last = issue(session, org, acme, now=now)
    signing_keys.rotate(session, org_id=org.id, actor=TEST, now=now)
    session.commit()
    before_expiry = last.values["expires_at"] - timedelta(seconds=1)
    assert signing_keys.prune_retired(session, now=before_expiry) == 0
    session.commit()
    assert old.is_published(before_expiry)
    assert old.kid in jwks_kids(client)


@pytest.mark.parametrize("app_config", [{"KEY_CACHE_SECONDS": 0}])
def test_retired_key_leaves_jwks_once_pruned_after_its_last_token_expired(session, client, org,
                                                                          acme, app_config):
    now = utcnow()
    old_kid = key_in(session, org, KeyState.ACTIVE).kid
    last = issue(session, org, acme, now=now)
    signing_keys.rotate(session, org_id=org.id, actor=TEST, now=now)
    session.commit()
    assert signing_keys.prune_retired(session, now=last.values["expires_at"]) == 1
    session.commit()
    assert old_kid not in jwks_kids(client)
    assert states(session, org) == ["active", "next"]


def test_prune_retired_keeps_active_and_next_keys(session, org):
    far_future = utcnow() + timedelta(days=3650)
    assert signing_keys.prune_retired(session, now=far_future) == 0
    assert states(session, org) == ["active", "next"]


def test_rotation_of_one_org_leaves_another_alone(session, org, other_org):
    other = other_org
    other_kids = {k.kid: k.state for k in signing_keys.org_keys(session, org_id=other.id)}
    signing_keys.rotate(session, org_id=org.id, actor=TEST)
    session.commit()
    assert {k.kid: k.state for k in signing_keys.org_keys(session, org_id=other.id)} == other_kids


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_org_signs_with_its_algorithm_and_tokens_verify_with_jwks(session, client, alg):
    org = make_org(session, signing_alg=alg)
    acme = make_client(session, org)[1]
    issued = issue(session, org, acme)
    header = jwt.get_unverified_header(issued.access_token)
    assert header["alg"] == alg and header["typ"] == "at+jwt"
    key = jwt.PyJWKSet.from_dict(client.get("/.well-known/jwks.json").get_json())[header["kid"]]
    claims = jwt.decode(issued.access_token, key.key, algorithms=[alg], audience=AUDIENCE,
                        issuer="http://localhost")
    assert claims["jti"] == issued.values["jti"]


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_org_algorithm_applies_to_both_keys(session, alg):
    org = make_org(session, signing_alg=alg)
    assert {k.alg for k in signing_keys.org_keys(session, org_id=org.id)} == {alg}


def test_rotation_is_refused_while_the_next_key_is_younger_than_the_jwks_caches(session):
    org = make_org(session)  # its next key was published just now
    upcoming = key_in(session, org, KeyState.NEXT)

    with pytest.raises(RotationTooSoon) as caught:
        signing_keys.rotate(session, org_id=org.id, actor=TEST)

    assert caught.value.ready_at == upcoming.created_at + timedelta(seconds=300 + 5)
    session.rollback()
    assert key_in(session, org, KeyState.NEXT).kid == upcoming.kid


def test_refusal_says_when_the_rotation_can_happen(session):
    org = make_org(session)
    upcoming = key_in(session, org, KeyState.NEXT)
    now = upcoming.created_at + timedelta(seconds=65)

    with pytest.raises(RotationTooSoon) as caught:
        signing_keys.rotate(session, org_id=org.id, actor=TEST, now=now)

    ready = upcoming.created_at + timedelta(seconds=305)
    assert f"can start signing only after {ready:%Y-%m-%d %H:%M:%S} UTC (in 4 min 1 s)" \
        in caught.value.message
    assert upcoming.kid in caught.value.message


def test_rotation_waits_for_the_jwks_max_age_plus_the_key_cache(app, session):
    org = make_org(session)
    upcoming = key_in(session, org, KeyState.NEXT)
    delay = timedelta(seconds=app.config["JWKS_MAX_AGE"] + app.config["KEY_CACHE_SECONDS"])

    with pytest.raises(RotationTooSoon):
        signing_keys.rotate(session, org_id=org.id, actor=TEST, now=upcoming.created_at + delay)
    new = signing_keys.rotate(session, org_id=org.id, actor=TEST,
                              now=upcoming.created_at + delay + timedelta(seconds=1))

    assert new.kid == upcoming.kid and new.state is KeyState.ACTIVE


def test_second_rotation_right_after_the_first_is_refused(session, org):
    signing_keys.rotate(session, org_id=org.id, actor=TEST)
    session.commit()
    active = key_in(session, org, KeyState.ACTIVE).kid

    with pytest.raises(RotationTooSoon):
        signing_keys.rotate(session, org_id=org.id, actor=TEST)
    session.rollback()

    assert key_in(session, org, KeyState.ACTIVE).kid == active


def test_org_without_a_next_key_gets_one_published_and_the_rotation_refused(session, org):
    session.delete(key_in(session, org, KeyState.NEXT))
    session.commit()
    active = key_in(session, org, KeyState.ACTIVE)

    with pytest.raises(RotationTooSoon):
        signing_keys.rotate(session, org_id=org.id, actor=TEST)
    session.commit()

    assert key_in(session, org, KeyState.ACTIVE).kid == active.kid
    assert key_in(session, org, KeyState.NEXT).alg == active.alg


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_rotation_without_alg_keeps_the_orgs_algorithm(session, alg):
    org = make_org(session, signing_alg=alg)
    for _ in range(2):
        age_next_key(session, org)
        signing_keys.rotate(session, org_id=org.id, actor=TEST)
        session.commit()

    assert {k.alg for k in signing_keys.org_keys(session, org_id=org.id)} == {alg}


def test_rotation_without_alg_keeps_the_algorithm_the_next_key_was_given(session, org):
    signing_keys.rotate(session, org_id=org.id, alg="ES256", actor=TEST)
    session.commit()
    age_next_key(session, org)

    signing_keys.rotate(session, org_id=org.id, actor=TEST)
    session.commit()

    assert key_in(session, org, KeyState.ACTIVE).alg == "ES256"
    assert key_in(session, org, KeyState.NEXT).alg == "ES256"


def test_unsupported_algorithm_is_refused(session, org):
    from portal.core.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as caught:
        signing_keys.rotate(session, org_id=org.id, alg="HS256", actor=TEST)
    assert "HS256" in caught.value.message


def test_key_encrypted_under_old_kek_decrypts_after_kek_rotation():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    ciphertext = crypto.encrypt_private_key((old,), b"-----BEGIN PRIVATE KEY-----\n...")
    assert crypto.decrypt_private_key((new, old), ciphertext) == b"-----BEGIN PRIVATE KEY-----\n..."


def test_first_kek_encrypts_after_kek_rotation():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    ciphertext = crypto.encrypt_private_key((new, old), b"pem")
    assert crypto.decrypt_private_key((new,), ciphertext) == b"pem"
    with pytest.raises(crypto.KeyDecryptionFailed):
        crypto.decrypt_private_key((old,), ciphertext)


def test_removed_kek_no_longer_decrypts():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    ciphertext = crypto.encrypt_private_key((old,), b"pem")
    with pytest.raises(crypto.KeyDecryptionFailed):
        crypto.decrypt_private_key((new,), ciphertext)


def test_org_keeps_signing_after_kek_rotation(app, session, org, acme):
    old = list(settings.key_encryption_keys())
    app.config["KEY_ENCRYPTION_KEYS"] = [Fernet.generate_key().decode(), *old]
    signing_keys.init_app(app)  # a fresh process: nothing decrypted yet
    issued = issue(session, org, acme)
    assert decode(issued.access_token) is not None


def test_keys_made_after_kek_rotation_use_the_new_kek(app, session, org):
    new_kek = Fernet.generate_key().decode()
    app.config["KEY_ENCRYPTION_KEYS"] = [new_kek, *settings.key_encryption_keys()]
    signing_keys.rotate(session, org_id=org.id, actor=TEST)
    session.commit()
    fresh = key_in(session, org, KeyState.NEXT)
    pem = crypto.decrypt_private_key((new_kek,), fresh.private_key_ciphertext)
    private = serialization.load_pem_private_key(pem, password=None)
    assert signing_keys.public_jwk(private, alg=fresh.alg) == fresh.public_jwk
