"""Issuing, verifying, introspecting and revoking access tokens (RFC 9068 JWTs)."""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Insert, Select, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from portal.core import settings
from portal.core.apis.grants import GrantedApi, resolve
from portal.core.audit import services as audit
from portal.core.clients.models import Client, ClientKind
from portal.core.db import table_of
from portal.core.errors import AudienceNotAllowed, NotFound, ScopeNotAllowed
from portal.core.signing_keys.services import keyring
from portal.core.tokens.claims import audience_claim, check_custom_claims
from portal.core.tokens.models import IssuedToken, TokenSource
from portal.core.types import utcnow
from portal.core.usage.models import UsageEvent

#: Largest token we try to parse; anything longer is not ours.
MAX_TOKEN_LENGTH = 8192


__all__ = ["AudienceNotAllowed", "ScopeNotAllowed"]  # the refusals of sign_token


@dataclass(frozen=True)
class Issued:
    """A freshly signed token: the compact JWT, its claims and its record."""

    access_token: str
    claims: dict[str, Any]
    record: IssuedToken
    expires_in: int


class _HasPublicId(Protocol):
    @property
    def public_id(self) -> str: ...


class Grantee(Protocol):
    """What :func:`sign_token` reads of a client: a :class:`Client`, or the
    token endpoint's :class:`portal.core.hotpath.AuthenticatedClient`."""

    @property
    def id(self) -> int: ...
    @property
    def org_id(self) -> int: ...
    @property
    def client_id(self) -> str: ...
    @property
    def kind(self) -> ClientKind: ...
    @property
    def granted(self) -> Mapping[str, GrantedApi]: ...
    @property
    def default_audience(self) -> str | None: ...
    @property
    def token_ttl(self) -> int: ...
    @property
    def custom_claims(self) -> dict[str, Any]: ...
    @property
    def user(self) -> _HasPublicId | None: ...


@dataclass(frozen=True)
class Signed:
    """A signed token and the column values of its record, not yet written."""

    access_token: str
    claims: dict[str, Any]
    expires_in: int
    values: dict[str, Any]  # the issued_tokens row


def sign_token(
    session: Session | None,
    *,
    client: Grantee,
    org_public_id: str,
    scopes: list[str] | None = None,
    audiences: list[str] | None = None,
    ttl: int | None = None,
    extra_claims: dict[str, Any] | None = None,
    source: TokenSource = TokenSource.TOKEN_ENDPOINT,
    now: datetime | None = None,
) -> Signed:
    """Judge the request against the client and sign the token; writes nothing.

    Custom claims come from the client, then ``extra_claims`` (mint time);
    reserved claims in either are refused. The session (None: one of the key ring's
    own) is only read, and only when this process has no fresh copy of the org's key.
    """
    now = (now or utcnow()).replace(microsecond=0)
    # The client's grants decide (portal.core.apis.grants.resolve): unknown or
    # another org's audience -> invalid_target, an ungranted scope -> invalid_scope.
    grant = resolve(client.granted, client.default_audience, scopes=scopes, audiences=audiences,
                    client_ttl=client.token_ttl, ttl=ttl, ttl_bounds=settings.ttl_bounds())
    granted_scopes, granted_audiences, lifetime = grant.scopes, grant.audiences, grant.lifetime
    custom = {**client.custom_claims, **check_custom_claims(extra_claims)}
    key = keyring().active_key(session, client.org_id)
    jti = secrets.token_urlsafe(18)
    iat = int(now.timestamp())
    claims: dict[str, Any] = {
        **custom,
        "iss": settings.issuer(),
        "sub": client.client_id,
        "aud": audience_claim(granted_audiences),
        "exp": iat + lifetime,
        "iat": iat,
        "nbf": iat,
        "jti": jti,
        "client_id": client.client_id,
        "scope": " ".join(granted_scopes),
        "oid": org_public_id,
    }
    if client.kind is ClientKind.USER and client.user is not None:
        claims["sub"] = client.user.public_id
        claims["uid"] = client.user.public_id
    token = key.sign(claims)
    values = {
        "jti": jti,
        "org_id": client.org_id,
        "client_id": client.id,
        "subject": claims["sub"],
        "audience": granted_audiences,
        "scopes": granted_scopes,
        "kid": key.kid,
        "issued_at": now,
        "expires_at": now + timedelta(seconds=lifetime),
        "source": source,
    }
    return Signed(access_token=token, claims=claims, expires_in=lifetime, values=values)


def issue_token(
    session: Session,
    *,
    client: Client,
    org_public_id: str,
    scopes: list[str] | None = None,
    audiences: list[str] | None = None,
    ttl: int | None = None,
    extra_claims: dict[str, Any] | None = None,
    source: TokenSource = TokenSource.TOKEN_ENDPOINT,
    actor: str | None = None,
    source_ip: str = "",
    now: datetime | None = None,
) -> Issued:
    """Sign an access token for ``client`` and record it.

    Custom claims come from the client, then ``extra_claims`` (mint time);
    reserved claims in either are refused. Portal and API mints are audited.
    The token endpoint uses :func:`sign_token` and :func:`record_issued` instead.
    """
    signed = sign_token(
        session, client=client, org_public_id=org_public_id, scopes=scopes,
        audiences=audiences, ttl=ttl, extra_claims=extra_claims, source=source, now=now,
    )
    values = signed.values
    record = IssuedToken(**values)
    session.add(record)
    if source is not TokenSource.TOKEN_ENDPOINT:
        audit.record(
            session,
            org_id=client.org_id,
            actor=actor or "system",
            action="token:minted",
            target_type="client",
            target_id=client.client_id,
            details={"jti": values["jti"], "scopes": values["scopes"],
                     "audience": values["audience"], "ttl": signed.expires_in,
                     "source": source.value},
            source_ip=source_ip,
            now=values["issued_at"],
        )
    return Issued(access_token=signed.access_token, claims=signed.claims, record=record,
                  expires_in=signed.expires_in)


def record_issued(session: Session, signed: Signed, *, event: dict[str, Any]) -> None:
    """Write a token endpoint token's record and its usage event with Core ``INSERT`` s.

    ``event`` is :func:`portal.core.usage.services.event_values`. On PostgreSQL
    both rows go in one statement (a data-modifying CTE): one round trip, atomic
    even in autocommit mode. Elsewhere (SQLite) they are two statements, so the
    caller runs them in one transaction: the write lock is held for just these.
    """
    if session.get_bind().dialect.name == "postgresql":
        params = {f"t_{k}": v for k, v in signed.values.items()}
        params.update({f"e_{k}": v for k, v in event.items()})
        session.execute(issued_with_event(), params)
    else:
        session.execute(insert(table_of(IssuedToken)), signed.values)
        session.execute(insert(table_of(UsageEvent)), event)


@functools.cache
def issued_with_event() -> Insert:
    """``WITH issued_token AS (INSERT INTO issued_tokens ...) INSERT INTO usage_events ...``.

    Built once with named parameters (``t_*`` and ``e_*``), so each request
    only binds values; SQLAlchemy's compiled cache does the rest.
    """
    tokens_table = table_of(IssuedToken)
    events_table = table_of(UsageEvent)
    token_columns = [c.name for c in tokens_table.columns if c.name not in ("id",)]
    token_columns = [c for c in token_columns if c not in ("revoked_at", "revoked_by")]
    event_columns = [c.name for c in events_table.columns if c.name != "id"]
    tokens = insert(tokens_table).values(
        {c: bindparam(f"t_{c}", type_=tokens_table.c[c].type) for c in token_columns}
    )
    events = insert(events_table).values(
        {c: bindparam(f"e_{c}", type_=events_table.c[c].type) for c in event_columns}
    )
    return events.add_cte(tokens.cte("issued_token"))


def decode_token(session: Session | None, token: str) -> dict[str, Any] | None:
    """The claims of a token this server signed and that verifies now, else None.

    Anything malformed, forged, signed by an unknown or unpublished key, with
    another header than its key signs with, expired, not yet valid or from
    another issuer gives None; never raises.

    Only our own tokens are accepted, so this checks them against what we sign
    (RFC 7515 compact form, unpadded base64url, RFC 9068 header) rather than
    through ``jwt.decode``, whose per-character segment checks in Python cost
    more than verifying an ES256 signature.
    """
    return verify_token(session, read_token(token))


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """A token split into its segments, with the claims its payload makes: nothing
    of it counts until :func:`verify_token` has checked it."""

    head: str
    body: str
    signature: str
    claims: dict[str, Any]

    @property
    def claimed_jti(self) -> str | None:
        """The ``jti`` it claims, if it is one we could have issued."""
        jti = self.claims.get("jti")
        # Every jti we issue is a short string (the column holds 64 characters).
        return jti if isinstance(jti, str) and 0 < len(jti) <= 64 and "\x00" not in jti else None


def read_token(token: str) -> UnverifiedToken | None:
    """``token`` split and its payload parsed, if it has the form of a compact JWS
    with a JSON object for a payload; nothing is verified."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    head, body, signature = parts
    claims = _json_object(_segment(body))
    return None if claims is None else UnverifiedToken(head, body, signature, claims)


def verify_token(session: Session | None, token: UnverifiedToken | None) -> dict[str, Any] | None:
    """The token's claims if this server signed it and it holds now (see :func:`decode_token`)."""
    if token is None:
        return None
    kid = _header_kid(token.head)
    key = keyring().public_key(session, kid) if kid is not None else None
    # Every token a key signed has that key's header, byte for byte: the
    # algorithm is the key's (never the token's choice, RFC 8725 §3.1) and typ is at+jwt.
    if key is None or token.head.encode() != key.header_segment:
        return None
    raw_signature = _segment(token.signature)
    signing_input = f"{token.head}.{token.body}".encode()
    if raw_signature is None or not key.verify(signing_input, raw_signature):
        return None
    return token.claims if _claims_hold(token.claims, time.time()) else None


@functools.lru_cache(maxsize=256)
def _header_kid(head: str) -> str | None:
    """The ``kid`` of a header segment (a string, without NUL), else None.

    Cached: every token of a key has the same header, so a busy server parses
    a handful of distinct headers, not one per request.
    """
    header = _json_object(_segment(head))
    kid = header.get("kid") if header is not None else None
    if not isinstance(kid, str) or "\x00" in kid:  # PostgreSQL refuses NUL in a parameter
        return None
    return kid


def claimed_jti(token: str) -> str | None:
    """The ``jti`` a token's payload claims, unverified (revoke-by-paste looks its
    record up with it; :func:`verify_token` decides whether a token counts)."""
    unverified = read_token(token)
    return unverified.claimed_jti if unverified is not None else None


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _segment(text: str) -> bytes | None:
    """A base64url segment decoded, if written as RFC 7515 §2 says and as we write it:
    no padding, no other characters, and no stray bits (one spelling per value)."""
    if len(text) % 4 == 1 or _BASE64URL.fullmatch(text) is None:
        return None
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=") == text.encode() else None


def _json_object(raw: bytes | None) -> dict[str, Any] | None:
    """``raw`` as a JSON object, or None (not UTF-8, not JSON, nested too deep, not an object)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _claims_hold(claims: dict[str, Any], now: float) -> bool:
    """Our issuer; ``exp``, ``iat`` and ``jti`` present and well typed; valid at ``now``."""
    times = [claims.get("exp"), claims.get("iat"), claims.get("nbf", 0)]
    if not all(type(value) is int for value in times):  # not bool, not float, not str
        return False
    exp, iat, nbf = times
    return (
        claims.get("iss") == settings.issuer()
        and isinstance(claims.get("jti"), str)
        and isinstance(claims.get("sub", ""), str)
        and iat <= now < exp
        and nbf <= now
    )


def find_live_record(
    session: Session, claims: dict[str, Any], *, org_id: int, now: datetime
) -> IssuedToken | None:
    """The token's record if it belongs to ``org_id``, is unrevoked and its client enabled."""
    stmt = (
        select(IssuedToken, Client.enabled)
        .join(Client, Client.id == IssuedToken.client_id)
        .where(IssuedToken.jti == str(claims["jti"]), IssuedToken.org_id == org_id)
    )
    row = session.execute(stmt).first()
    if row is None:
        return None
    record, enabled = row
    if not enabled or not record.is_active(now):
        return None
    return record


def find_record(session: Session, *, org_id: int, jti: str) -> IssuedToken | None:
    """The org's record of the token with this ``jti``, or None."""
    return session.scalar(
        select(IssuedToken).where(IssuedToken.org_id == org_id, IssuedToken.jti == jti)
    )


def get_record(session: Session, *, org_id: int, jti: str) -> IssuedToken:
    record = find_record(session, org_id=org_id, jti=jti)
    if record is None:
        raise NotFound("no such token")
    return record


def revoke(
    session: Session,
    record: IssuedToken,
    *,
    by: str,
    source_ip: str = "",
    audit_change: bool = True,
    now: datetime | None = None,
) -> bool:
    """Revoke one token; returns False when it was already revoked."""
    now = now or utcnow()
    if record.revoked_at is not None:
        return False
    record.revoked_at = now
    record.revoked_by = by[:200]
    if audit_change:
        audit.record(
            session,
            org_id=record.org_id,
            actor=by,
            action="token:revoked",
            target_type="token",
            target_id=record.jti,
            source_ip=source_ip,
            now=now,
        )
    session.flush()
    return True


def revoke_all_for_client(
    session: Session, client: Client, *, by: str, source_ip: str = "", now: datetime | None = None
) -> int:
    """Revoke every unexpired, unrevoked token of a client; returns how many."""
    now = now or utcnow()
    result = session.execute(
        update(IssuedToken)
        .where(
            IssuedToken.client_id == client.id,
            IssuedToken.revoked_at.is_(None),
            IssuedToken.expires_at > now,
        )
        .values(revoked_at=now, revoked_by=by[:200])
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    audit.record(
        session,
        org_id=client.org_id,
        actor=by,
        action="client:tokens:revoked",
        target_type="client",
        target_id=client.client_id,
        details={"count": count},
        source_ip=source_ip,
        now=now,
    )
    return count


def introspection_payload(claims: dict[str, Any]) -> dict[str, Any]:
    """The RFC 7662 response for an active token, from its verified claims."""
    payload: dict[str, Any] = {"active": True, "token_type": "Bearer"}
    for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti",
                 "oid", "uid"):
        if name in claims:
            payload[name] = claims[name]
    return payload


def prune_expired(session: Session, *, now: datetime, keep_for: timedelta) -> int:
    """Delete token records that expired more than ``keep_for`` ago; returns how many."""
    result = session.execute(delete(IssuedToken).where(IssuedToken.expires_at < now - keep_for))
    return int(getattr(result, "rowcount", 0) or 0)


def active_tokens_query(*, client: Client, now: datetime) -> Select[Any]:
    """A client's unrevoked, unexpired token records, newest first (for paging)."""
    return (
        select(IssuedToken)
        .where(
            IssuedToken.client_id == client.id,
            IssuedToken.org_id == client.org_id,
            IssuedToken.revoked_at.is_(None),
            IssuedToken.expires_at > now,
        )
        .order_by(IssuedToken.issued_at.desc(), IssuedToken.id.desc())
    )


# -- revoking by a pasted token or jti (the portal's revoke page) -------------------------


@dataclass(frozen=True)
class Revocation:
    """What :func:`revoke_by_reference` found: no token (``record`` None), or its record."""

    record: IssuedToken | None
    client: Client | None = None
    revoked: bool = False  # False with a record: it was already revoked


def referenced_jti(value: str) -> str | None:
    """The ``jti`` a pasted value names: a JWT's ``jti`` claim, else the value itself.

    The JWT is only decoded, not verified: the lookup that follows is limited
    to the caller's org, so a forged token can only name that org's tokens,
    which its admins may revoke by ``jti`` anyway.
    """
    value = value.strip()
    if not value or len(value) > MAX_TOKEN_LENGTH or "\x00" in value:
        return None
    if value.count(".") == 2:
        return claimed_jti(value)
    return value if len(value) <= 64 else None


def revoke_by_reference(
    session: Session,
    *,
    org_id: int,
    value: str,
    by: str,
    source_ip: str = "",
    now: datetime | None = None,
) -> Revocation:
    """Revoke the org's token named by a pasted access token or ``jti``.

    Another org's token is not found, exactly like an unknown one. A revocation
    is audited and recorded in the usage history.
    """
    jti = referenced_jti(value)
    record = find_record(session, org_id=org_id, jti=jti) if jti else None
    if record is None:
        return Revocation(record=None)
    client = session.get(Client, record.client_id)
    revoked = revoke_from_portal(session, record, by=by, source_ip=source_ip, now=now)
    return Revocation(record=record, client=client, revoked=revoked)


def revoke_from_portal(
    session: Session,
    record: IssuedToken,
    *,
    by: str,
    source_ip: str = "",
    now: datetime | None = None,
) -> bool:
    """Revoke a token for a portal user: audited, and recorded in the usage history.

    Returns False when it was already revoked (nothing is recorded then).
    """
    from portal.core.usage import services as usage  # appended block; usage is a leaf
    from portal.core.usage.models import UsageKind

    now = now or utcnow()
    revoked = revoke(session, record, by=by, source_ip=source_ip, now=now)
    if revoked:
        usage.record_event(
            session, kind=UsageKind.TOKEN_REVOKED, org_id=record.org_id,
            client_id=record.client_id, client_ref=by[:64], jti=record.jti,
            source_ip=source_ip, now=now,
        )
        session.flush()
    return revoked
