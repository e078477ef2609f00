"""``latchkey rotate-kek``: re-encrypt stored private keys under a new key-encryption key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import select

from portal import create_app
from portal.config import StartupError
from portal.core.audit.models import AuditEntry
from portal.core.db import get_engine, get_session
from portal.core.signing_keys.models import KeyState, SigningKey
from tests.conftest import base_config
from tests.factories import get_token, make_client, make_org

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()


@pytest.fixture
def app_config():
    return {"KEY_ENCRYPTION_KEYS": [OLD]}


@contextmanager
def deployment(database_url: str, keys: list[str]) -> Iterator[Flask]:
    """The same database with another KEY_ENCRYPTION_KEYS, as after a config change."""
    other = create_app(base_config(database_url, KEY_ENCRYPTION_KEYS=keys))
    try:
        with other.app_context():  # the CLI runs in the current app context
            yield other
            get_session().close()
    finally:
        with other.app_context():
            get_engine().dispose()


def ciphertexts(session) -> dict[str, bytes]:
    """Every stored ciphertext, read in a transaction of its own (on SQLite, one left
    open would hold the write lock the command then waits for)."""
    session.commit()
    found = {k.kid: k.private_key_ciphertext for k in session.scalars(select(SigningKey))}
    session.commit()
    return found


def test_rotate_kek_reencrypts_every_key_so_the_old_kek_can_go(database_url, session):
    org = make_org(session)
    secret, c = make_client(session, org)
    make_org(session)

    with deployment(database_url, [NEW, OLD]) as both:
        result = both.test_cli_runner().invoke(args=["rotate-kek"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 4 signing keys" in result.output

    with deployment(database_url, [NEW]) as new_only:
        http = new_only.test_client()
        assert http.get("/readyz").status_code == 200
        get_token(http, c, secret)  # signs with a key only NEW can now open


def test_rotate_kek_is_audited_once_for_the_deployment(database_url, session):
    make_org(session)

    with deployment(database_url, [NEW, OLD]) as both:
        both.test_cli_runner().invoke(args=["rotate-kek"])

    session.commit()
    entries = session.scalars(select(AuditEntry).where(
        AuditEntry.action == "signing_key:reencrypted")).all()
    assert [(e.org_id, e.actor, e.details) for e in entries] == [
        (None, "cli", {"reencrypted": 2, "unchanged": 0})]


def test_rotate_kek_a_second_time_changes_nothing(database_url, session):
    make_org(session)
    with deployment(database_url, [NEW, OLD]) as both:
        both.test_cli_runner().invoke(args=["rotate-kek"])
        before = ciphertexts(session)

        result = both.test_cli_runner().invoke(args=["rotate-kek"])

    assert "re-encrypted 0 signing keys with the first key-encryption key (2 already were)" \
        in result.output
    assert ciphertexts(session) == before


def test_a_deployment_without_the_old_kek_refuses_to_start_and_changes_nothing(
        database_url, session):
    make_org(session)
    before = ciphertexts(session)

    with pytest.raises(StartupError, match="KEY_ENCRYPTION_KEYS cannot decrypt the active"):
        create_app(base_config(database_url, KEY_ENCRYPTION_KEYS=[NEW]))

    assert ciphertexts(session) == before


def test_rotate_kek_refuses_a_retired_key_it_cannot_open_and_changes_nothing(
        database_url, session):
    """A retired key is not checked at startup; the command still must not half-finish."""
    org = make_org(session)
    lost = Fernet(Fernet.generate_key())  # a key-encryption key nobody has any more
    retired = session.scalars(select(SigningKey).where(SigningKey.org_id == org.id)).first()
    retired.state = KeyState.RETIRED
    retired.private_key_ciphertext = lost.encrypt(b"-----BEGIN PRIVATE KEY-----")
    session.commit()
    before = ciphertexts(session)

    with deployment(database_url, [NEW, OLD]) as both:
        result = both.test_cli_runner().invoke(args=["rotate-kek"])

    assert result.exit_code == 2
    assert "cannot be decrypted with any of KEY_ENCRYPTION_KEYS; nothing was changed" \
        in result.output
    assert ciphertexts(session) == before
