"""Secrets, keyed hashes, password hashing and encryption of private keys at rest."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from portal.core.errors import LatchkeyError

#: One fixed prefix per kind of secret, so secret scanners can recognise leaks.
CLIENT_SECRET_PREFIX = "lk_secret_"  # noqa: S105 (a prefix)
API_KEY_PREFIX = "lk_apikey_"
INVITATION_PREFIX = "lk_invite_"
CLIENT_ID_PREFIX = "lkc_"

#: 32 random bytes: 256 bits of entropy, 43 characters of base64url.
SECRET_BYTES = 32


def new_secret(prefix: str) -> str:
    """A new high-entropy secret: ``prefix`` + 256 random bits in base64url."""
    return prefix + secrets.token_urlsafe(SECRET_BYTES)


def new_public_id(prefix: str, nbytes: int = 12) -> str:
    """A random, non-secret identifier such as a client id or an org id."""
    return prefix + secrets.token_urlsafe(nbytes).replace("-", "x").replace("_", "y")


def hmac_digest(key: bytes, value: str) -> bytes:
    """HMAC-SHA256 of ``value``: how client secrets and API keys are stored.

    A slow password hash adds nothing to a random 256-bit value and would cap the
    token endpoint at a few dozen requests a second; the server-side key means a
    stolen database alone cannot be used to test guesses.
    """
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).digest()


def digests_equal(a: bytes, b: bytes) -> bool:
    """Compare two digests in constant time."""
    return hmac.compare_digest(a, b)


def secret_hint(secret: str) -> str:
    """The short non-secret hint shown next to a stored secret: its last 4 characters."""
    return secret[-4:]


# -- human passwords ---------------------------------------------------------------

#: argon2id with RFC 9106's second recommended option's memory and passes (64 MiB, 3),
#: on one lane: the same cost to an attacker, but a sign-in takes one core instead of
#: every core (four lanes), so a loop of failed sign-ins leaves the other cores to the
#: token endpoint (``make bench-portal-busy``). Hashes made with other parameters still
#: verify and are replaced at the next sign-in (``password_needs_rehash``).
_password_hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    """Hash a human password with argon2id."""
    return _password_hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Check a password against its argon2 hash; never raises for a bad hash."""
    try:
        return _password_hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError, UnicodeEncodeError):
        # argon2 encodes the stored hash as ASCII before parsing it.
        return False


def password_needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with parameters other than the current ones."""
    return _password_hasher.check_needs_rehash(password_hash)


# -- private keys at rest ------------------------------------------------------------


class KeyDecryptionFailed(LatchkeyError):
    """No configured key-encryption key opens this ciphertext.

    A domain error (code ``key_decryption_failed``, 503): the deployment's
    ``KEY_ENCRYPTION_KEYS`` lack the key a stored signing key was encrypted
    with. Startup refuses to run in that state (``portal/__init__.py``); this is
    what a request meets if the keys change under a running process.
    """

    code = "key_decryption_failed"
    http_status = 503


@lru_cache(maxsize=8)
def _vault(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ValueError("KEY_ENCRYPTION_KEYS is empty")
    return MultiFernet([Fernet(k.encode()) for k in keys])


def encrypt_private_key(keys: tuple[str, ...], plaintext: bytes) -> bytes:
    """Encrypt with the first key-encryption key (Fernet: AES-128-CBC + HMAC)."""
    return _vault(keys).encrypt(plaintext)


def decrypt_private_key(keys: tuple[str, ...], ciphertext: bytes) -> bytes:
    """Decrypt with whichever configured key opens it, so keys can be rotated."""
    try:
        return _vault(keys).decrypt(ciphertext)
    except InvalidToken as e:
        raise KeyDecryptionFailed(
            "No configured key-encryption key (KEY_ENCRYPTION_KEYS) can decrypt this "
            "organisation's signing key; the operator must restore the key it was encrypted with."
        ) from e


def reencrypt_private_key(keys: tuple[str, ...], ciphertext: bytes) -> bytes | None:
    """``ciphertext`` encrypted again with the first key-encryption key; None when it
    already is (so re-encrypting everything twice changes nothing the second time)."""
    try:
        Fernet(keys[0].encode()).decrypt(ciphertext)
        return None
    except InvalidToken:
        pass
    try:
        return _vault(keys).rotate(ciphertext)
    except InvalidToken as e:
        raise KeyDecryptionFailed("no key-encryption key can decrypt this key") from e
