"""Re-encrypting private signing keys after a key-encryption key is added (``rotate-kek``).

``KEY_ENCRYPTION_KEYS`` lists Fernet keys: the first encrypts, all decrypt.
Rotating it is: put a new key first (every process can still decrypt with the
old one), re-encrypt what is stored with :func:`reencrypt_private_keys`, then
drop the old key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core import crypto, settings
from portal.core.actor import Actor
from portal.core.audit import services as audit
from portal.core.errors import UndecryptableKey
from portal.core.signing_keys.models import SigningKey
from portal.core.types import utcnow


def reencrypt_private_keys(session: Session, *, actor: Actor,
                           now: datetime | None = None) -> tuple[int, int]:
    """Encrypt every stored private key with the first key-encryption key.

    Returns ``(re-encrypted, already under the first key)``. One key that no
    configured key opens raises :class:`UndecryptableKey` before anything is
    flushed, so the caller's rollback leaves every key as it was.
    """
    keys = settings.key_encryption_keys()
    changed = unchanged = 0
    rows = list(session.scalars(select(SigningKey).order_by(SigningKey.id)))
    updates: list[tuple[SigningKey, bytes]] = []
    for row in rows:
        try:
            ciphertext = crypto.reencrypt_private_key(keys, row.private_key_ciphertext)
        except crypto.KeyDecryptionFailed as e:
            raise UndecryptableKey(
                f"signing key {row.kid} cannot be decrypted with any of KEY_ENCRYPTION_KEYS; "
                "nothing was changed (add the key it was encrypted with, after the new one)"
            ) from e
        if ciphertext is None:
            unchanged += 1
        else:
            updates.append((row, ciphertext))
    for row, ciphertext in updates:
        row.private_key_ciphertext = ciphertext
        changed += 1
    session.flush()
    if changed:
        audit.record(
            session, org_id=None, actor=actor, action="signing_key:reencrypted",
            target_type="key_encryption_keys", target_id="first",
            details={"reencrypted": changed, "unchanged": unchanged}, now=now or utcnow(),
        )
    return changed, unchanged
