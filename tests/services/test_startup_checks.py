"""Startup refuses to run on secrets that cannot open the data: a missing, empty or corrupt
``instance/secrets.json`` with data in the database, or key-encryption keys that cannot
decrypt the stored signing keys. Secrets are generated only for an empty database."""

from __future__ import annotations

import json
import stat
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from flask.cli import ScriptInfo

from portal import config, create_app
from portal.cli import cli
from portal.config import StartupError
from portal.core.db import engine_of
from portal.core.signing_keys.models import KeyState
from portal.core.signing_keys.services import org_keys
from tests.conftest import TEST_SECRETS, base_config
from tests.factories import make_client, make_org


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """An instance folder of the test's own (``instance/`` of the checkout stays untouched)."""
    monkeypatch.setattr(config, "INSTANCE_PATH", tmp_path / "instance")
    return tmp_path / "instance"


def without_secrets(database_url: str) -> dict[str, Any]:
    """The test configuration with no secret set: they must come from instance/."""
    cfg = base_config(database_url)
    for key in config.GENERATED_SECRETS:
        cfg[key] = None
    return cfg


@pytest.fixture
def data(session):
    """An org with a client (a keyed hash) and signing keys (encrypted), under TEST_SECRETS."""
    org = make_org(session, name="Acme")
    make_client(session, org)
    return org


def test_missing_secrets_with_data_in_the_database_stop_startup(database_url, data, instance):
    with pytest.raises(StartupError) as caught:
        create_app(without_secrets(database_url))

    message = caught.value.format_message()
    assert f"{instance / 'secrets.json'} is missing, but the database already holds" in message
    assert "restore it from a backup" in message and "none were generated" in message
    assert not (instance / "secrets.json").exists()


@pytest.mark.parametrize("text", ["", "{\"SECRET_KEY\": \"trunc", "null"])
def test_empty_or_corrupt_secrets_with_data_in_the_database_stop_startup(database_url, data,
                                                                         instance, text):
    instance.mkdir()
    (instance / "secrets.json").write_text(text)

    with pytest.raises(StartupError, match="secrets.json"):
        create_app(without_secrets(database_url))

    assert (instance / "secrets.json").read_text() == text


def test_missing_secrets_with_an_empty_database_are_generated(app, database_url, instance):
    second = create_app(without_secrets(database_url))
    engine_of(second).dispose()

    path = instance / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert all(second.config[key] == stored[key] for key in config.GENERATED_SECRETS)


def test_kept_secrets_are_used_with_data_in_the_database(database_url, data, instance):
    instance.mkdir()
    (instance / "secrets.json").write_text(json.dumps(TEST_SECRETS))
    (instance / "secrets.json").chmod(0o600)

    second = create_app(without_secrets(database_url))
    engine_of(second).dispose()

    assert second.config["KEY_ENCRYPTION_KEYS"] == TEST_SECRETS["KEY_ENCRYPTION_KEYS"]


def test_key_encryption_key_that_cannot_decrypt_the_stored_keys_stops_startup(database_url,
                                                                              session, data):
    active = next(k for k in org_keys(session, org_id=data.id) if k.state is KeyState.ACTIVE)
    wrong = base_config(database_url, KEY_ENCRYPTION_KEYS=[Fernet.generate_key().decode()])

    with pytest.raises(StartupError) as caught:
        create_app(wrong)

    assert f"cannot decrypt the active signing key {active.kid} of org {data.slug}" \
        in caught.value.format_message()


def test_new_key_encryption_key_first_with_the_old_one_after_starts(database_url, data):
    rotated = base_config(database_url, KEY_ENCRYPTION_KEYS=[
        Fernet.generate_key().decode(), *TEST_SECRETS["KEY_ENCRYPTION_KEYS"]])

    started = create_app(rotated)
    engine_of(started).dispose()

    assert started.config["KEY_ENCRYPTION_KEYS"] == rotated["KEY_ENCRYPTION_KEYS"]


def test_cli_prints_a_startup_error_on_one_line_and_exits_1(database_url, data, instance):
    info = ScriptInfo(create_app=lambda: create_app(without_secrets(database_url)))

    result = CliRunner().invoke(cli, ["db", "upgrade"], obj=info)

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latchkey: error: ")
    assert "secrets.json is missing" in lines[0]
    assert "Traceback" not in result.output
