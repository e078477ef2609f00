"""Org API keys: created shown once, stored as a keyed hash, revocable."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core import crypto, settings
from portal.core.actor import Actor
from portal.core.api_keys.models import ApiKey, ApiKeyRole
from portal.core.audit import services as audit
from portal.core.errors import NotFound, ValidationFailed
from portal.core.orgs.models import Organization
from portal.core.types import utcnow


def create_api_key(
    session: Session,
    *,
    org: Organization,
    name: str,
    role: str = ApiKeyRole.INTROSPECT.value,
    actor: Actor,
    now: datetime | None = None,
) -> tuple[str, ApiKey]:
    """Create an API key for the org; returns it in plaintext (shown once) with its row.

    ``role``: ``introspect`` (introspection and revocation), ``viewer`` (also every
    read of the management API) or ``admin`` (also its changes).
    """
    now = now or utcnow()
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationFailed("name is required (at most 200 characters)", field="name")
    key_role = check_role(role)
    plaintext = crypto.new_secret(crypto.API_KEY_PREFIX)
    key = ApiKey(
        org_id=org.id,
        name=name,
        key_hash=crypto.hmac_digest(settings.hmac_key(), plaintext),
        hint=crypto.secret_hint(plaintext),
        role=key_role,
        created_by=actor.label,
        created_at=now,
    )
    session.add(key)
    session.flush()
    audit.record(session, org_id=org.id, actor=actor, action="api_key:created",
                 target_type="api_key", target_id=str(key.id),
                 details={"name": name, "hint": key.hint, "role": key_role.value}, now=now)
    return plaintext, key


def check_role(role: str | None) -> ApiKeyRole:
    """An API key role by name (``ValidationFailed`` on ``role`` otherwise)."""
    try:
        return ApiKeyRole(role or "")
    except ValueError as e:
        raise ValidationFailed(
            "role must be one of " + ", ".join(r.value for r in ApiKeyRole), field="role") from e


def authenticate_api_key(session: Session, presented: str) -> ApiKey | None:
    """The active API key for a presented value, or None. Lookup is by keyed hash."""
    if not presented.startswith(crypto.API_KEY_PREFIX) or len(presented) > 200:
        return None
    digest = crypto.hmac_digest(settings.hmac_key(), presented)
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if key is None or not key.is_active or not crypto.digests_equal(key.key_hash, digest):
        return None
    return key


def revoke_api_key(
    session: Session, *, org_id: int, key_id: int, actor: Actor,
    now: datetime | None = None,
) -> ApiKey:
    now = now or utcnow()
    key = session.scalar(select(ApiKey).where(ApiKey.org_id == org_id, ApiKey.id == key_id))
    if key is None:
        raise NotFound("no such API key")
    if key.revoked_at is None:
        key.revoked_at = now
        audit.record(session, org_id=org_id, actor=actor, action="api_key:revoked",
                     target_type="api_key", target_id=str(key.id),
                     now=now)
    session.flush()
    return key


def list_api_keys(session: Session, *, org_id: int) -> list[ApiKey]:
    """The org's API keys, active and revoked, newest first."""
    stmt = select(ApiKey).where(ApiKey.org_id == org_id).order_by(ApiKey.id.desc())
    return list(session.scalars(stmt))
