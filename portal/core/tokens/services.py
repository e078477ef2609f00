"""Issuing, minting and revoking access tokens (RFC 9068 JWTs).

The rules of an exchange are :mod:`portal.core.tokens.exchange`'s, its reads and
writes :mod:`portal.core.tokens.store`'s; :func:`issue` puts them together for every
door: the token endpoint, the portal's mint and the management API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.core import crypto, settings
from portal.core.actor import Actor
from portal.core.audit import services as audit
from portal.core.clients.models import Client
from portal.core.errors import NoSigningKey, NotFound
from portal.core.signing_keys.services import KeyRing, keyring
from portal.core.tokens import exchange
from portal.core.tokens.exchange import ClientSnapshot, Refused, TokenRequest, TtlBounds
from portal.core.tokens.jws import MAX_TOKEN_LENGTH, UnverifiedToken, claimed_jti
from portal.core.tokens.models import IssuedToken, TokenSource
from portal.core.tokens.store import Connection, TokenStore, session_connection, token_store
from portal.core.types import utcnow
from portal.core.usage.models import UsageKind
from portal.core.usage.services import event_values


@dataclass(frozen=True)
class Issued:
    """A signed and recorded token: the compact JWT, its claims and its record's values."""

    access_token: str
    claims: dict[str, Any]
    values: dict[str, Any]  # its issued_tokens row
    expires_in: int
    kid: str
    alg: str


def issue(
    connection: Connection,
    client: ClientSnapshot,
    wanted: TokenRequest,
    *,
    store: TokenStore,
    keys: KeyRing,
    issuer: str,
    bounds: TtlBounds,
    source: TokenSource,
    source_ip: str,
    now: datetime,
) -> Issued:
    """Grant (:func:`exchange.grant`), sign and record a token for ``client``.

    The token's record and its usage event are written by the store, on
    ``connection``: atomically on its own, or in the caller's session.
    """
    granted = exchange.grant(client, wanted, bounds)
    issued_at = now.replace(microsecond=0)
    try:
        key = keys.active_key(client.org_id)
    except (NoSigningKey, crypto.KeyDecryptionFailed) as e:
        # The operator's to mend (the startup check refuses such a configuration; this
        # is a process whose keys changed under it): said as it is, never a 500.
        raise Refused("temporarily_unavailable", e.message, status=503, detail=e.code,
                      client=client) from e
    claims = exchange.claims_for(client, granted, issuer=issuer, jti=exchange.new_jti(now),
                                 issued_at=int(issued_at.timestamp()))
    access_token = key.sign(claims)
    values = exchange.record_values(client, granted, claims, kid=key.kid, issued_at=issued_at,
                                    source=source)
    event = event_values(kind=UsageKind.TOKEN_ISSUED, org_id=client.org_id, client_id=client.id,
                         client_ref=client.public_id, jti=claims["jti"], source_ip=source_ip,
                         now=now)
    store.record_issued(connection, values, event, client=client, now=now)
    return Issued(access_token=access_token, claims=claims, values=values,
                  expires_in=granted.ttl, kid=key.kid, alg=key.alg)


def mint(
    session: Session,
    *,
    org_id: int,
    client_public_id: str,
    wanted: TokenRequest,
    source: TokenSource,
    actor: Actor,
    now: datetime | None = None,
) -> Issued:
    """An admin's mint (the portal, the management API): a token for one of the org's
    clients, by the same rules as the token endpoint, recorded and audited in ``session``.

    Another org's client is :class:`NotFound`; a refusal is a :class:`Refused`
    naming the field it is about.
    """
    now = now or utcnow()
    store = token_store()
    connection = session_connection(session)
    client = store.client(connection, public_id=client_public_id, org_id=org_id)
    if client is None:
        raise NotFound("no such client")
    issued = issue(connection, client, wanted, store=store, keys=keyring(),
                   issuer=settings.issuer(), bounds=TtlBounds(*settings.ttl_bounds()),
                   source=source, source_ip=actor.source_ip, now=now)
    values = issued.values
    audit.record(
        session, org_id=org_id, actor=actor, action="token:minted",
        target_type="client", target_id=client.public_id,
        details={"jti": values["jti"], "scopes": values["scopes"],
                 "audience": values["audience"], "ttl": issued.expires_in,
                 "source": source.value}, now=values["issued_at"],
    )
    return issued


def check_mint(session: Session, *, org_id: int, client_public_id: str,
                wanted: TokenRequest) -> None:
    """Judge a mint as :func:`mint` would, issuing and writing nothing.

    For a mint form whose own checks failed: the rules' refusals (every one,
    in ``errors``) show in the same round.
    """
    client = token_store().client(session_connection(session), public_id=client_public_id,
                                  org_id=org_id)
    if client is None:
        raise NotFound("no such client")
    exchange.grant(client, wanted, TtlBounds(*settings.ttl_bounds()))


def verified_claims(
    token: UnverifiedToken | None, *, kid: str | None, keys: KeyRing, issuer: str, now: datetime,
) -> tuple[dict[str, Any] | None, int | None]:
    """The claims of ``token`` if the published key ``kid`` (the one its record names)
    signed it with that key's own header and they hold now; and the org of that key.

    ``(None, None)``: not signed by that key (forged, another key, malformed);
    ``(None, org)``: signed by it but expired, not yet valid or of another issuer.
    """
    if token is None or kid is None or token.kid != kid:
        return None, None
    key = keys.signed_by(token, kid)
    if key is None:
        return None, None
    if not exchange.claims_hold(token.claims, issuer=issuer, now=now.timestamp()):
        return None, key.org_id
    return token.claims, key.org_id


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
    actor: Actor,
    audit_change: bool = True,
    now: datetime | None = None,
) -> bool:
    """Revoke one token; returns False when it was already revoked."""
    now = now or utcnow()
    if record.revoked_at is not None:
        return False
    record.revoked_at = now
    record.revoked_by = actor.label[:200]
    if audit_change:
        audit.record(
            session,
            org_id=record.org_id,
            actor=actor,
            action="token:revoked",
            target_type="token",
            target_id=record.jti,
            now=now,
        )
    session.flush()
    return True


def revoke_all_for_client(
    session: Session, client: Client, *, actor: Actor, now: datetime | None = None
) -> int:
    """Revoke every token a client was issued until now; returns how many records that
    changed. Tokens whose record is not written yet (the token endpoint writes them in
    batches) are revoked too: the client's ``tokens_revoked_at`` covers every token
    issued at or before it (:meth:`exchange.TokenRecord.is_live`)."""
    now = now or utcnow()
    client.tokens_revoked_at = now
    result = session.execute(
        update(IssuedToken)
        .where(
            IssuedToken.client_id == client.id,
            IssuedToken.revoked_at.is_(None),
            IssuedToken.expires_at > now,
        )
        .values(revoked_at=now, revoked_by=actor.label[:200])
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    audit.record(
        session,
        org_id=client.org_id,
        actor=actor,
        action="client:tokens:revoked",
        target_type="client",
        target_id=client.public_id,
        details={"count": count},
        now=now,
    )
    return count


def prune_expired(session: Session, *, now: datetime, keep_for: timedelta) -> int:
    """Delete token records that expired more than ``keep_for`` ago; returns how many."""
    result = session.execute(delete(IssuedToken).where(IssuedToken.expires_at < now - keep_for))
    return int(getattr(result, "rowcount", 0) or 0)


def active_tokens_query(*, client: Client, now: datetime) -> Select[Any]:
    """A client's unrevoked, unexpired token records, newest first (for paging)."""
    query = (
        select(IssuedToken)
        .where(
            IssuedToken.client_id == client.id,
            IssuedToken.org_id == client.org_id,
            IssuedToken.revoked_at.is_(None),
            IssuedToken.expires_at > now,
        )
        .order_by(IssuedToken.issued_at.desc(), IssuedToken.id.desc())
    )
    if client.tokens_revoked_at is not None:  # a record written after a "revoke all"
        query = query.where(IssuedToken.issued_at > client.tokens_revoked_at)
    return query


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
    actor: Actor,
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
    revoked = revoke_from_portal(session, record, actor=actor, now=now)
    return Revocation(record=record, client=client, revoked=revoked)


def revoke_from_portal(
    session: Session,
    record: IssuedToken,
    *,
    actor: Actor,
    audit_change: bool = True,
    now: datetime | None = None,
) -> bool:
    """Revoke a token and record it in the usage history; audited unless a client
    revokes its own token (RFC 7009). Returns False when it was already revoked
    (nothing is recorded then)."""
    from portal.core.usage import services as usage

    now = now or utcnow()
    revoked = revoke(session, record, actor=actor, audit_change=audit_change, now=now)
    if revoked:
        usage.record_event(
            session, kind=UsageKind.TOKEN_REVOKED, org_id=record.org_id,
            client_id=record.client_id, client_ref=actor.label[:64], jti=record.jti,
            source_ip=actor.source_ip, now=now,
        )
        session.flush()
    return revoked


def revoke_issued(
    session: Session, record: exchange.TokenRecord, claims: Mapping[str, Any], *,
    actor: Actor, audit_change: bool, now: datetime | None = None,
) -> bool:
    """Revoke the token of ``record`` (the revocation endpoint's write), whose ``claims``
    verified. A record not written yet (the token endpoint's are written in batches) is
    written now, revoked, from those claims: its queued write then finds it and keeps it."""
    found: IssuedToken | None
    if record.id is not None:
        found = session.scalar(select(IssuedToken).where(
            IssuedToken.id == record.id, IssuedToken.org_id == record.org_id))
    else:
        found = IssuedToken(**exchange.unrecorded_values(record, claims))
        try:
            with session.begin_nested():
                session.add(found)
        except IntegrityError:  # its queued record was written meanwhile
            found = find_record(session, org_id=record.org_id, jti=record.jti)
    if found is None:
        return False
    return revoke_from_portal(session, found, actor=actor, audit_change=audit_change, now=now)
