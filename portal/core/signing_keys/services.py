"""Signing-key generation, the next -> active -> retired lifecycle, and the JWKS.

Each organisation has its own keys. An org always has one ``active`` key that
signs and one ``next`` key that is already published, so rotation
(``next`` -> ``active``, ``active`` -> ``retired``, new ``next``) never makes a
resource server meet a ``kid`` it has not been able to fetch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from flask import current_app
from jwt.utils import base64url_encode
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from portal.core import crypto, settings
from portal.core.actor import Actor
from portal.core.audit import services as audit
from portal.core.db import autocommit
from portal.core.errors import NoSigningKey, RotationTooSoon, ValidationFailed
from portal.core.signing_keys.models import KeyState, SigningKey
from portal.core.tokens.jws import UnverifiedToken
from portal.core.tokens.models import IssuedToken
from portal.core.types import utcnow

SUPPORTED_ALGS = ("RS256", "ES256", "EdDSA")
EXTENSION_KEY = "latchkey.keys"


def generate_private_key(alg: str) -> Any:
    """A new private key for ``alg``."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValidationFailed(
        f"unsupported signing algorithm {alg!r}; choose one of {', '.join(SUPPORTED_ALGS)}",
        field="alg",
    )


def public_jwk(private_key: Any, *, alg: str) -> dict[str, Any]:
    """The public JWK of a private key, with a thumbprint-derived ``kid`` (RFC 7638)."""
    algo = jwt.get_algorithm_by_name(alg)
    jwk: dict[str, Any] = json.loads(algo.to_jwk(private_key.public_key()))
    required = {
        "RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")
    }
    members = {k: jwk[k] for k in required[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    kid = jwt.utils.base64url_encode(digest.digest()).decode()
    return {**members, "kid": kid, "alg": alg, "use": "sig"}


def create_key(
    session: Session, *, org_id: int, alg: str, state: KeyState, now: datetime | None = None
) -> SigningKey:
    """Generate a key pair and store it with the private half encrypted."""
    now = now or utcnow()
    private_key = generate_private_key(alg)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    jwk = public_jwk(private_key, alg=alg)
    key = SigningKey(
        org_id=org_id,
        kid=jwk["kid"],
        alg=alg,
        state=state,
        public_jwk=jwk,
        private_key_ciphertext=crypto.encrypt_private_key(settings.key_encryption_keys(), pem),
        created_at=now,
        activated_at=now if state is KeyState.ACTIVE else None,
    )
    session.add(key)
    session.flush()
    return key


def ensure_org_keys(session: Session, *, org_id: int, alg: str | None = None) -> None:
    """Give a new org its ``active`` and ``next`` keys."""
    alg = alg or current_app.config["DEFAULT_SIGNING_ALG"]
    create_key(session, org_id=org_id, alg=alg, state=KeyState.ACTIVE)
    create_key(session, org_id=org_id, alg=alg, state=KeyState.NEXT)


def org_keys(session: Session, *, org_id: int) -> list[SigningKey]:
    """Every stored key of the org, newest first."""
    stmt = select(SigningKey).where(SigningKey.org_id == org_id).order_by(SigningKey.id.desc())
    return list(session.scalars(stmt))


#: Slack for a rotation's own commit and for token requests in flight: a
#: process may read the old active key until the rotation commits (on SQLite
#: after waiting up to its 30 s busy timeout), and a token signed just before
#: is recorded a moment later.
ROTATION_SLACK = timedelta(seconds=60)


def publication_delay() -> timedelta:
    """How long a key is published before it may sign.

    Resource servers may cache the JWKS for ``JWKS_MAX_AGE`` (its
    ``Cache-Control`` max-age), and each of our processes serves its cached copy
    for up to ``KEY_CACHE_SECONDS`` after the key appears.
    """
    cfg = current_app.config
    return timedelta(seconds=float(cfg["JWKS_MAX_AGE"]) + float(cfg["KEY_CACHE_SECONDS"]))


def ready_at(key: SigningKey) -> datetime:
    """When a ``next`` key has been published long enough to start signing (after this)."""
    return key.created_at + publication_delay()


def publish_until(
    *, retired_at: datetime, last_expiry: datetime | None, cache_seconds: float, max_ttl: float
) -> datetime:
    """How long a key retired at ``retired_at`` stays in the JWKS.

    Until the last token it signed expires, counting the tokens that processes
    still sign with their cached active key for up to ``cache_seconds`` after
    the rotation (plus :data:`ROTATION_SLACK`), each living up to ``max_ttl``
    seconds; ``last_expiry`` is the latest expiry recorded so far.
    :func:`prune_retired` shortens it to the recorded expiries once no process
    can sign with the key any more.
    """
    bound = retired_at + timedelta(seconds=cache_seconds + max_ttl) + ROTATION_SLACK
    return max(bound, last_expiry) if last_expiry is not None else bound


def default_next_alg(keys: list[SigningKey]) -> str:
    """The algorithm a rotation gives the new ``next`` key unless told otherwise.

    The org keeps its algorithm: the one of the key that signs after the
    rotation (the current ``next``), else of the active key.
    """
    by_state = {k.state: k for k in keys if k.state is not KeyState.RETIRED}
    for state in (KeyState.NEXT, KeyState.ACTIVE):
        if state in by_state:
            return by_state[state].alg
    return str(current_app.config["DEFAULT_SIGNING_ALG"])


def _too_soon(key: SigningKey, ready: datetime, now: datetime) -> str:
    wait = max(int((ready - now).total_seconds()) + 1, 1)
    minutes, seconds = divmod(wait, 60)
    delay = publication_delay().total_seconds()
    return (
        f"The next key {key.kid} was published at {key.created_at:%H:%M:%S} UTC, and resource "
        f"servers may still verify with a JWKS fetched before that (cached for up to "
        f"{delay:g} s), so it can start signing only after {ready:%Y-%m-%d %H:%M:%S} UTC "
        f"(in {f'{minutes} min ' if minutes else ''}{seconds} s). Rotate again then."
    )


def rotate(
    session: Session,
    *,
    org_id: int,
    alg: str | None = None,
    actor: Actor,
    now: datetime | None = None,
) -> SigningKey:
    """Promote ``next`` to ``active``, retire the old ``active``, publish a new ``next``.

    Refused (:class:`RotationTooSoon`) while the next key has been published
    for no longer than :func:`publication_delay`: a resource server could meet
    its ``kid`` before it can fetch it. An org without a next key gets one
    published, and the same refusal. The retired key stays in the JWKS until the
    last token it signed expires (:func:`publish_until`). ``alg`` chooses the
    algorithm of the new ``next`` key (it signs after the following rotation);
    by default the org keeps its algorithm (:func:`default_next_alg`). Returns
    the newly active key.
    """
    now = now or utcnow()
    if alg is not None and alg not in SUPPORTED_ALGS:
        generate_private_key(alg)  # raises the clear error
    current = org_keys(session, org_id=org_id)
    keys = {k.state: k for k in current if k.state is not KeyState.RETIRED}
    old = keys.get(KeyState.ACTIVE)
    new = keys.get(KeyState.NEXT)
    if new is None:
        new = create_key(session, org_id=org_id, alg=alg or default_next_alg(current),
                         state=KeyState.NEXT, now=now)
        audit.record(session, org_id=org_id, actor=actor, action="signing_key:published",
                     target_type="signing_key", target_id=new.kid, details={"alg": new.alg},
                     now=now)
        keyring().forget_org(org_id)
    ready = ready_at(new)
    if now <= ready:
        raise RotationTooSoon(_too_soon(new, ready, now), ready_at=ready)
    alg = alg or new.alg
    if old is not None:
        last_expiry = session.scalar(
            select(func.max(IssuedToken.expires_at)).where(IssuedToken.kid == old.kid)
        )
        cfg = current_app.config
        old.state = KeyState.RETIRED
        old.retired_at = now
        old.publish_until = publish_until(
            retired_at=now, last_expiry=last_expiry,
            cache_seconds=float(cfg["KEY_CACHE_SECONDS"]), max_ttl=float(cfg["MAX_TOKEN_TTL"]),
        )
    new.state = KeyState.ACTIVE
    new.activated_at = now
    session.flush()
    create_key(session, org_id=org_id, alg=alg, state=KeyState.NEXT, now=now)
    audit.record(
        session,
        org_id=org_id,
        actor=actor,
        action="signing_key:rotated",
        target_type="signing_key",
        target_id=new.kid,
        details={"retired": old.kid if old else None, "next_alg": alg},
        now=now,
    )
    keyring().forget_org(org_id)
    return new


def prune_retired(session: Session, *, now: datetime) -> int:
    """Delete retired keys whose last token has expired; returns how many.

    Once no process can sign with a retired key any more (``KEY_CACHE_SECONDS``
    plus :data:`ROTATION_SLACK` after its retirement), every token it signed is
    recorded, so its ``publish_until`` is first shortened to the last recorded
    expiry: a key that signed little leaves the JWKS long before the
    ``MAX_TOKEN_TTL`` bound that rotation had to assume.
    """
    settled = now - timedelta(seconds=float(current_app.config["KEY_CACHE_SECONDS"])) \
        - ROTATION_SLACK
    for key in session.scalars(
        select(SigningKey).where(
            SigningKey.state == KeyState.RETIRED,
            SigningKey.publish_until > now,
            SigningKey.retired_at <= settled,
        )
    ):
        if key.retired_at is None or key.publish_until is None:
            continue
        last_expiry = session.scalar(
            select(func.max(IssuedToken.expires_at)).where(IssuedToken.kid == key.kid)
        )
        floor = key.retired_at + timedelta(
            seconds=float(current_app.config["KEY_CACHE_SECONDS"])) + ROTATION_SLACK
        shortened = max(last_expiry, floor) if last_expiry is not None else floor
        if shortened < key.publish_until:
            key.publish_until = shortened
    session.flush()
    result = session.execute(
        delete(SigningKey).where(
            SigningKey.state == KeyState.RETIRED, SigningKey.publish_until <= now
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


# -- the per-process key ring ----------------------------------------------------------


#: RFC 9068's ``typ`` of a JWT access token.
ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 (a media type, not a secret)


def header_segment(alg: str, kid: str) -> bytes:
    """The JWS header segment of every token signed by key ``kid``.

    As PyJWT writes it (compact, keys sorted): ``alg``, ``kid`` and RFC 9068's ``typ``.
    """
    header = json.dumps({"alg": alg, "kid": kid, "typ": ACCESS_TOKEN_TYP}, separators=(",", ":"),
                        sort_keys=True)
    return base64url_encode(header.encode())


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()
_claims_json = json.JSONEncoder(separators=(",", ":")).encode  # as jwt.encode writes them


def _es256(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    # RFC 7518 §3.4: R and S, 32 bytes each, not the DER that OpenSSL returns.
    r, s = decode_dss_signature(key.sign(data, _ECDSA_SHA256))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


#: A JWS signature of each algorithm, as PyJWT's algorithms make it, without their
#: per-call padding, hash and curve objects (bench/README.md, "Ninth session").
SIGNATURES: dict[str, Callable[[Any, bytes], bytes]] = {
    "RS256": lambda key, data: key.sign(data, _PKCS1V15, _SHA256),
    "ES256": _es256,
    "EdDSA": lambda key, data: key.sign(data),
}


@dataclass(frozen=True)
class _Key:
    kid: str
    alg: str
    org_id: int

    @functools.cached_property
    def header_segment(self) -> bytes:
        """The header of every token this key signs (its algorithm is the key's)."""
        return header_segment(self.alg, self.kid)

    @functools.cached_property
    def _algorithm(self) -> Any:
        return jwt.get_algorithm_by_name(self.alg)


@dataclass(frozen=True)
class ActiveKey(_Key):
    private_key: Any  # the loaded cryptography key object, reused for every signature

    def sign(self, claims: dict[str, Any]) -> str:
        """The compact JWS of ``claims``, the same bytes as ``jwt.encode`` would give.

        The header segment is encoded once per key rather than per token.
        """
        payload = base64url_encode(_claims_json(claims).encode())
        signing_input = self.header_segment + b"." + payload
        signature = SIGNATURES[self.alg](self.private_key, signing_input)
        return (signing_input + b"." + base64url_encode(signature)).decode()


@dataclass(frozen=True)
class PublishedKey(_Key):
    """A published key as a verifier needs it: its org, its algorithm and its public key."""

    public_key: Any  # the loaded cryptography key object

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (raw bytes, as in a JWS) is this key's over ``signing_input``."""
        return bool(self._algorithm.verify(signing_input, self.public_key, signature))

    def verifies(self, token: UnverifiedToken) -> bool:
        """Whether ``token`` is one this key signed: the key's own header, byte for byte
        (the algorithm is the key's, never the token's choice, RFC 8725 §3.1; typ at+jwt),
        and a valid signature."""
        if token.head.encode() != self.header_segment:
            return False
        signature = token.raw_signature
        return signature is not None and self.verify(token.signing_input, signature)


class KeyRing:
    """Per-process caches of decrypted private keys, public keys and the JWKS.

    Decrypting a key and parsing PEM costs more than signing a token, so each
    key is loaded once per process. Which key is active, and the JWKS document,
    are re-read from the database after ``KEY_CACHE_SECONDS``; rotation works
    across processes because the next key is published before it signs.

    Needs no app context: it reads through sessions of its own (in autocommit
    mode, so a read never holds a transaction, and on SQLite never the write lock)
    unless a caller passes the session it is in.
    """

    def __init__(self, sessions: Callable[[], Session], key_encryption_keys: tuple[str, ...],
                 ttl: float) -> None:
        self.sessions = sessions
        self.key_encryption_keys = key_encryption_keys
        self.ttl = ttl
        self._lock = threading.Lock()
        self._private: dict[str, Any] = {}
        self._active: dict[int, tuple[float, ActiveKey]] = {}
        self._public: dict[str, tuple[float, PublishedKey]] = {}
        self._jwks: tuple[float, bytes, str] | None = None
        # signature segment -> (fresh until, header and payload segments, the key)
        self._verified: OrderedDict[str, tuple[float, str, str, PublishedKey]] = OrderedDict()

    #: Tokens whose signature was checked, remembered for ``ttl`` (resource servers
    #: introspect the same token on every call they receive with it).
    VERIFIED_CACHE_SIZE = 4096

    def signed_by(self, token: UnverifiedToken, kid: str) -> PublishedKey | None:
        """The published key ``kid`` if it signed ``token`` (its own header, a valid
        signature), else None.

        A positive answer is remembered for as long as the key itself is (``ttl``): an
        ES256 or EdDSA verification costs more than the rest of an introspection, and
        the same token is introspected again and again. Only the signature is
        remembered; whether the token is live and its claims hold is checked anew.
        """
        hit = self._verified.get(token.signature)
        now = time.monotonic()
        if hit is not None and hit[0] > now and hit[1] == token.head and hit[2] == token.body \
                and hit[3].kid == kid:
            return hit[3]
        key = self.public_key(kid)
        if key is None or not key.verifies(token):
            return None
        with self._lock:
            self._verified[token.signature] = (now + self.ttl, token.head, token.body, key)
            self._verified.move_to_end(token.signature)
            while len(self._verified) > self.VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return key

    @contextlib.contextmanager
    def _reading(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
            return
        own = self.sessions()
        try:
            autocommit(own)
            yield own
        finally:
            own.close()

    def forget_org(self, org_id: int) -> None:
        with self._lock:
            self._active.pop(org_id, None)
            self._jwks = None
            self._public.clear()
            self._verified.clear()

    def active_key(self, org_id: int, session: Session | None = None) -> ActiveKey:
        """The org's signing key, loaded and decrypted at most once per process."""
        hit = self._active.get(org_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        with self._reading(session) as reader:
            row = reader.scalar(
                select(SigningKey).where(
                    SigningKey.org_id == org_id, SigningKey.state == KeyState.ACTIVE
                )
            )
        if row is None:
            raise NoSigningKey("this organisation has no active signing key")
        private = self._private.get(row.kid)
        if private is None:
            pem = crypto.decrypt_private_key(self.key_encryption_keys, row.private_key_ciphertext)
            # Our own key, made here and read back through Fernet's authenticated
            # encryption: OpenSSL's RSA consistency check (about 40 ms, the cost of
            # a worker's first token) proves nothing more (cryptography's docs on
            # ``unsafe_skip_rsa_key_validation``: keys known to be valid).
            private = serialization.load_pem_private_key(
                pem, password=None, unsafe_skip_rsa_key_validation=True)
            self._private[row.kid] = private
        key = ActiveKey(kid=row.kid, alg=row.alg, org_id=row.org_id, private_key=private)
        with self._lock:
            self._active[org_id] = (time.monotonic() + self.ttl, key)
        return key

    def public_key(self, kid: str, session: Session | None = None) -> PublishedKey | None:
        """The published key ``kid``, or None."""
        hit = self._public.get(kid)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        with self._reading(session) as reader:
            row = reader.scalar(select(SigningKey).where(SigningKey.kid == kid))
        if row is None or not row.is_published(utcnow()):
            # Only hits are cached: caching misses would let tokens with random
            # kids grow this dict without bound.
            return None
        public = jwt.get_algorithm_by_name(row.alg).from_jwk(json.dumps(row.public_jwk))
        value = PublishedKey(kid=row.kid, alg=row.alg, org_id=row.org_id, public_key=public)
        with self._lock:
            self._public[kid] = (time.monotonic() + self.ttl, value)
        return value

    def fresh_jwks_etag(self) -> str | None:
        """The ETag of the cached JWKS document while it is fresh, else None; never reads."""
        hit = self._jwks
        if hit is not None and hit[0] > time.monotonic():
            return hit[2]
        return None

    def jwks(self, session: Session | None = None) -> tuple[bytes, str]:
        """The JWKS document as bytes and its ETag, rebuilt at most every ``ttl``."""
        hit = self._jwks
        if hit is not None and hit[0] > time.monotonic():
            return hit[1], hit[2]
        now = utcnow()
        with self._reading(session) as reader:
            rows = list(reader.scalars(select(SigningKey).order_by(SigningKey.id)))
        keys = [row.public_jwk for row in rows if row.is_published(now)]
        body = json.dumps({"keys": keys}, separators=(",", ":")).encode()
        etag = hashlib.sha256(body).hexdigest()[:32]
        with self._lock:
            self._jwks = (time.monotonic() + self.ttl, body, etag)
        return body, etag


def keyring() -> KeyRing:
    """The current app's key ring."""
    ring: KeyRing = current_app.extensions[EXTENSION_KEY]
    return ring


def init_app(app: Any) -> None:
    from portal.config import key_list
    from portal.core.db import sessions

    app.extensions[EXTENSION_KEY] = KeyRing(
        sessions(app), tuple(key_list(app.config["KEY_ENCRYPTION_KEYS"])),
        ttl=float(app.config["KEY_CACHE_SECONDS"]))
