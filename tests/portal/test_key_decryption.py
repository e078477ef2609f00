"""A signing key that the configured key-encryption keys cannot decrypt is a clear error
in the portal (the startup check refuses such a configuration; this is a running process
whose keys changed under it), never a 500."""

from __future__ import annotations

from cryptography.fernet import Fernet

from portal.core.signing_keys import services as signing_keys
from tests.factories import make_client
from tests.portal.test_mint import mint, token_count


def test_mint_with_an_undecryptable_signing_key_is_a_form_error(app, owner, session, org):
    _, client = make_client(session, org)
    app.config["KEY_ENCRYPTION_KEYS"] = [Fernet.generate_key().decode()]  # not the one used
    signing_keys.init_app(app)  # a fresh key ring: nothing decrypted yet

    response = mint(owner, client)

    assert response.status_code == 400
    assert "No configured key-encryption key (KEY_ENCRYPTION_KEYS) can decrypt this " \
           "organisation&#39;s signing key" in response.get_data(as_text=True)
    assert token_count(session) == 0
