"""Creating, authenticating and managing clients and their secrets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jwt import PyJWKSet
from jwt.exceptions import PyJWKSetError
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from portal.core import crypto, settings
from portal.core.audit import services as audit
from portal.core.clients.models import AuthMethod, Client, ClientKind, ClientSecret
from portal.core.errors import NotFound, SecretLimitReached, ValidationFailed
from portal.core.orgs.models import Organization
from portal.core.tokens.claims import check_custom_claims, check_scope_names
from portal.core.types import utcnow
from portal.core.users.models import Membership, User

DEFAULT_AUTH_METHODS = [AuthMethod.CLIENT_SECRET_BASIC.value, AuthMethod.CLIENT_SECRET_POST.value]
SECRET_METHODS = {AuthMethod.CLIENT_SECRET_BASIC.value, AuthMethod.CLIENT_SECRET_POST.value}
MAX_AUDIENCES = 20


def check_ttl(ttl: Any) -> int:
    """A token lifetime in seconds within the configured bounds."""
    low, _default, high = settings.ttl_bounds()
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise ValidationFailed("token TTL must be a whole number of seconds", field="ttl")
    if not low <= ttl <= high:
        raise ValidationFailed(
            f"token TTL must be between {low} and {high} seconds", field="ttl"
        )
    return ttl


def check_audiences(audiences: list[str]) -> list[str]:
    """Audience identifiers: at least one, no whitespace, at most 255 characters each."""
    clean: dict[str, None] = {}
    for aud in audiences:
        if not isinstance(aud, str) or not aud or len(aud) > 255 or any(c.isspace() for c in aud):
            raise ValidationFailed(f"invalid audience {aud!r}", field="audiences")
        clean[aud] = None
    if not clean:
        raise ValidationFailed("a client needs at least one allowed audience", field="audiences")
    if len(clean) > MAX_AUDIENCES:
        raise ValidationFailed(f"at most {MAX_AUDIENCES} audiences", field="audiences")
    return list(clean)


def check_jwks(jwks: Any) -> dict[str, Any] | None:
    """A client's public JWKS for ``private_key_jwt``; private members are refused."""
    if jwks is None:
        return None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ValidationFailed('JWKS must be an object with a non-empty "keys" array', field="jwks")
    for key in jwks["keys"]:
        if not isinstance(key, dict):
            raise ValidationFailed("every JWKS entry must be an object", field="jwks")
        if any(member in key for member in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise ValidationFailed("the JWKS must hold public keys only", field="jwks")
    try:
        PyJWKSet.from_dict(jwks)
    except (PyJWKSetError, ValueError, KeyError, TypeError) as e:
        raise ValidationFailed(f"unusable JWKS: {e}", field="jwks") from e
    return jwks


def _check_supported(scopes: list[str]) -> list[str]:
    supported = settings.scopes_supported()
    unknown = [s for s in scopes if supported and s not in supported]
    if unknown:
        raise ValidationFailed(
            "scopes not offered by this server (SCOPES_SUPPORTED): " + " ".join(unknown),
            field="scopes",
        )
    return scopes


def check_auth_methods(methods: list[str], *, jwks: dict[str, Any] | None) -> list[str]:
    """Token-endpoint authentication methods; ``private_key_jwt`` needs a JWKS."""
    allowed = {m.value for m in AuthMethod}
    clean = list(dict.fromkeys(methods))
    unknown = [m for m in clean if m not in allowed]
    if unknown or not clean:
        raise ValidationFailed(
            "authentication methods must be some of " + ", ".join(sorted(allowed)),
            field="auth_methods",
        )
    if AuthMethod.PRIVATE_KEY_JWT.value in clean and jwks is None:
        raise ValidationFailed("private_key_jwt needs the client's public JWKS", field="jwks")
    return clean


def create_client(
    session: Session,
    *,
    org: Organization,
    name: str,
    scopes: list[str],
    audiences: list[str],
    kind: str = ClientKind.ORG.value,
    description: str = "",
    ttl: int | None = None,
    auth_methods: list[str] | None = None,
    custom_claims: dict[str, Any] | None = None,
    jwks: dict[str, Any] | None = None,
    user: User | None = None,
    actor: str,
    source_ip: str = "",
    now: datetime | None = None,
) -> tuple[Client, str | None]:
    """Create a client; returns it with its first secret in plaintext (shown once).

    A client that authenticates only with ``private_key_jwt`` gets no secret.
    """
    now = now or utcnow()
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationFailed("name is required (at most 200 characters)", field="name")
    try:
        client_kind = ClientKind(kind)
    except ValueError as e:
        raise ValidationFailed("kind must be one of org, user, service", field="kind") from e
    if client_kind is ClientKind.USER:
        if user is None:
            raise ValidationFailed("a user client needs the user it acts for", field="user")
        member = session.scalar(
            select(Membership).where(Membership.org_id == org.id, Membership.user_id == user.id)
        )
        if member is None:
            raise ValidationFailed("that user is not a member of this organisation", field="user")
    elif user is not None:
        raise ValidationFailed("only user clients act for a user", field="user")
    _low, default_ttl, _high = settings.ttl_bounds()
    jwks = check_jwks(jwks)
    methods = check_auth_methods(
        auth_methods if auth_methods is not None else list(DEFAULT_AUTH_METHODS), jwks=jwks
    )
    client = Client(
        org_id=org.id,
        client_id=crypto.new_public_id(crypto.CLIENT_ID_PREFIX, 16),
        name=name,
        description=(description or "").strip(),
        kind=client_kind,
        user_id=user.id if user is not None else None,
        scopes=_check_supported(check_scope_names(scopes)),
        audiences=check_audiences(audiences),
        auth_methods=methods,
        token_ttl=check_ttl(ttl if ttl is not None else default_ttl),
        custom_claims=check_custom_claims(custom_claims),
        jwks=jwks,
        enabled=True,
        created_at=now,
        updated_at=now,
    )
    session.add(client)
    session.flush()
    plaintext = None
    if SECRET_METHODS.intersection(methods):
        plaintext, _secret = _new_secret(session, client, expires_at=None, now=now)
    audit.record(
        session,
        org_id=org.id,
        actor=actor,
        action="client:created",
        target_type="client",
        target_id=client.client_id,
        details={"name": client.name, "kind": client.kind.value, "scopes": client.scopes,
                 "audiences": client.audiences, "ttl": client.token_ttl},
        source_ip=source_ip,
        now=now,
    )
    return client, plaintext


def _new_secret(
    session: Session, client: Client, *, expires_at: datetime | None, now: datetime
) -> tuple[str, ClientSecret]:
    plaintext = crypto.new_secret(crypto.CLIENT_SECRET_PREFIX)
    secret = ClientSecret(
        client_id=client.id,
        secret_hash=crypto.hmac_digest(settings.hmac_key(), plaintext),
        hint=crypto.secret_hint(plaintext),
        created_at=now,
        expires_at=expires_at,
    )
    client.secrets.append(secret)
    session.flush()
    return plaintext, secret


def add_secret(
    session: Session,
    client: Client,
    *,
    expires_at: datetime | None = None,
    actor: str,
    source_ip: str = "",
    now: datetime | None = None,
) -> tuple[str, ClientSecret]:
    """Add a secret (at most five active at once); returns it in plaintext, shown once."""
    now = now or utcnow()
    limit = settings.max_active_secrets()
    if len(client.active_secrets(now)) >= limit:
        raise SecretLimitReached(
            f"a client can have at most {limit} active secrets; revoke or expire one first"
        )
    if expires_at is not None and expires_at <= now:
        raise ValidationFailed("the expiry must be in the future", field="expires_at")
    plaintext, secret = _new_secret(session, client, expires_at=expires_at, now=now)
    audit.record(
        session,
        org_id=client.org_id,
        actor=actor,
        action="client:secret:added",
        target_type="client",
        target_id=client.client_id,
        details={"secret_id": secret.id, "hint": secret.hint,
                 "expires_at": expires_at.isoformat() if expires_at else None},
        source_ip=source_ip,
        now=now,
    )
    return plaintext, secret


def revoke_secret(
    session: Session,
    client: Client,
    *,
    secret_id: int,
    actor: str,
    source_ip: str = "",
    now: datetime | None = None,
) -> ClientSecret:
    """Revoke one of the client's secrets; it is ``invalid_client`` from then on."""
    now = now or utcnow()
    secret = next((s for s in client.secrets if s.id == secret_id), None)
    if secret is None:
        raise NotFound("no such secret on this client")
    if secret.revoked_at is None:
        secret.revoked_at = now
        audit.record(
            session,
            org_id=client.org_id,
            actor=actor,
            action="client:secret:revoked",
            target_type="client",
            target_id=client.client_id,
            details={"secret_id": secret.id, "hint": secret.hint},
            source_ip=source_ip,
            now=now,
        )
    session.flush()
    return secret


def get_client(session: Session, *, org_id: int, client_id: str) -> Client:
    """The org's client with this client id; another org's client is NotFound."""
    client = session.scalar(
        select(Client).where(Client.org_id == org_id, Client.client_id == client_id)
    )
    if client is None:
        raise NotFound("no such client")
    return client


def list_clients(session: Session, *, org_id: int) -> list[Client]:
    """The org's clients, newest first."""
    stmt = select(Client).where(Client.org_id == org_id).order_by(Client.id.desc())
    return list(session.scalars(stmt))


def find_client_for_auth(session: Session, client_id: str) -> Client | None:
    """Look up a client by its public id for authentication, secrets loaded in one go."""
    if not client_id or len(client_id) > 64 or "\x00" in client_id:  # PostgreSQL refuses NUL
        return None
    # One round trip: the client, its org (for the `oid` claim) and its secrets.
    stmt = (
        select(Client)
        .where(Client.client_id == client_id)
        .options(joinedload(Client.secrets), joinedload(Client.org))
    )
    return session.scalars(stmt).unique().first()


def find_secret(client: Client, presented: str) -> ClientSecret | None:
    """The stored secret matching ``presented`` (active or not), compared in constant time.

    Callers check ``is_active``; a match that is revoked or expired tells the
    usage history why authentication failed.
    """
    digest = crypto.hmac_digest(settings.hmac_key(), presented)
    found = None
    for secret in client.secrets:
        # Compare against every secret so timing does not tell which one matched.
        if crypto.digests_equal(secret.secret_hash, digest):
            found = secret
    return found


def set_enabled(
    session: Session,
    client: Client,
    *,
    enabled: bool,
    actor: str,
    source_ip: str = "",
    now: datetime | None = None,
) -> Client:
    """Enable or disable a client; a disabled client gets no tokens and its tokens are inactive."""
    now = now or utcnow()
    if client.enabled != enabled:
        client.enabled = enabled
        client.updated_at = now
        audit.record(
            session,
            org_id=client.org_id,
            actor=actor,
            action="client:enabled" if enabled else "client:disabled",
            target_type="client",
            target_id=client.client_id,
            source_ip=source_ip,
            now=now,
        )
    session.flush()
    return client


def delete_client(
    session: Session, client: Client, *, actor: str, source_ip: str = "",
    now: datetime | None = None,
) -> None:
    """Delete a client with its secrets and tokens (its tokens introspect inactive)."""
    audit.record(
        session,
        org_id=client.org_id,
        actor=actor,
        action="client:deleted",
        target_type="client",
        target_id=client.client_id,
        details={"name": client.name},
        source_ip=source_ip,
        now=now,
    )
    session.delete(client)
    session.flush()
