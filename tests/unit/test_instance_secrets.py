"""Reading the generated secrets kept in ``instance/secrets.json``: never silently replaced."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest
from cryptography.fernet import Fernet

from portal.config import (
    GENERATED_SECRETS,
    StartupError,
    create_instance_secrets,
    fernet_keys,
    read_instance_secrets,
)

VALID = {"SECRET_KEY": "s" * 40, "CLIENT_SECRET_HMAC_KEY": "h" * 40,
         "KEY_ENCRYPTION_KEYS": [Fernet.generate_key().decode()]}


def write(path, text: str, mode: int = 0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_missing_file_reads_as_none(tmp_path):
    assert read_instance_secrets(tmp_path / "secrets.json") is None


def test_valid_file_is_read(tmp_path):
    path = write(tmp_path / "secrets.json", json.dumps(VALID))

    assert read_instance_secrets(path) == VALID


@pytest.mark.parametrize("text, says", [
    ("", "is empty"),
    ("   \n", "is empty"),
    ('{"SECRET_KEY": "abc", "CLIENT_SE', "is not valid JSON"),
    ("[1, 2]", "is not a JSON object"),
    (json.dumps({**VALID, "KEY_ENCRYPTION_KEYS": []}), "lacks KEY_ENCRYPTION_KEYS"),
    (json.dumps({"SECRET_KEY": "x"}), "lacks CLIENT_SECRET_HMAC_KEY, KEY_ENCRYPTION_KEYS"),
])
def test_broken_file_is_an_error_naming_it_and_what_to_do(tmp_path, text, says):
    path = write(tmp_path / "secrets.json", text)

    with pytest.raises(StartupError) as caught:
        read_instance_secrets(path)

    message = caught.value.format_message()
    assert str(path) in message and says in message
    assert "restore it from a backup" in message and "LATCHKEY_KEY_ENCRYPTION_KEYS" in message
    assert "\n" not in message
    assert path.read_text() == text  # left as it was


def test_unreadable_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "secrets.json"
    path.mkdir()  # root reads any file whatever its mode; a directory cannot be read as one

    with pytest.raises(StartupError) as caught:
        read_instance_secrets(path)

    assert f"{path} cannot be read (Is a directory)" in caught.value.format_message()


def test_file_readable_by_others_is_read_with_a_warning(tmp_path, caplog):
    path = write(tmp_path / "secrets.json", json.dumps(VALID), mode=0o644)

    with caplog.at_level(logging.WARNING, logger="latchkey"):
        assert read_instance_secrets(path) == VALID

    assert f"{path} can be read by other users (mode 0644)" in caplog.text
    assert f"chmod 600 {path}" in caplog.text


def test_private_file_is_read_without_a_warning(tmp_path, caplog):
    path = write(tmp_path / "secrets.json", json.dumps(VALID))

    with caplog.at_level(logging.WARNING, logger="latchkey"):
        read_instance_secrets(path)

    assert caplog.text == ""


def test_created_secrets_are_private_and_complete(tmp_path):
    values = create_instance_secrets(tmp_path / "instance")

    path = tmp_path / "instance" / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(values) == set(GENERATED_SECRETS) and all(values.values())
    assert list(tmp_path.joinpath("instance").iterdir()) == [path]


@pytest.mark.parametrize("value", [None, "", [], " , "])
def test_no_key_encryption_key_is_an_error(value):
    with pytest.raises(StartupError, match="KEY_ENCRYPTION_KEYS is empty"):
        fernet_keys(value)


def test_malformed_key_encryption_key_is_an_error_saying_which(tmp_path):
    with pytest.raises(StartupError, match="key 2 of 2 is not a Fernet key"):
        fernet_keys([Fernet.generate_key().decode(), "not-a-key"])
