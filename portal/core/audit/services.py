"""Writing audit entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from portal.core.actor import Actor
from portal.core.audit.models import AuditEntry
from portal.core.types import utcnow


def record(
    session: Session,
    *,
    org_id: int | None,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditEntry:
    """Add one audit entry (who, what, target, when, from where) to the session."""
    entry = AuditEntry(
        org_id=org_id,
        actor=actor.label,
        action=action,
        target_type=target_type,
        target_id=target_id,
        details=details or {},
        source_ip=actor.source_ip,
        occurred_at=now or utcnow(),
    )
    session.add(entry)
    return entry


def entries_query(
    *, org_id: int, target_type: str | None = None, target_id: str | None = None,
    actor: str | None = None, action: str | None = None, start: datetime | None = None,
    end: datetime | None = None,
) -> Select[Any]:
    """The org's audit entries, newest first, optionally about one target.

    ``actor`` matches part of the actor, ignoring case; ``action`` is an exact
    action, or a prefix when it ends with ``:`` (``"client:"`` is every client
    change); ``start`` <= time < ``end``.
    """
    stmt = select(AuditEntry).where(AuditEntry.org_id == org_id)
    if target_type is not None:
        stmt = stmt.where(AuditEntry.target_type == target_type)
    if target_id is not None:
        stmt = stmt.where(AuditEntry.target_id == target_id)
    if actor:
        stmt = stmt.where(func.lower(AuditEntry.actor).contains(actor.lower(), autoescape=True))
    if action and action.endswith(":"):
        stmt = stmt.where(AuditEntry.action.startswith(action, autoescape=True))
    elif action:
        stmt = stmt.where(AuditEntry.action == action)
    if start is not None:
        stmt = stmt.where(AuditEntry.occurred_at >= start)
    if end is not None:
        stmt = stmt.where(AuditEntry.occurred_at < end)
    return stmt.order_by(AuditEntry.occurred_at.desc(), AuditEntry.id.desc())


def actions_in_use(session: Session, *, org_id: int) -> list[str]:
    """The distinct actions recorded for the org, sorted (for the audit log's filter)."""
    stmt = select(AuditEntry.action).where(AuditEntry.org_id == org_id).distinct()
    return sorted(session.scalars(stmt))


def list_entries(
    session: Session, *, org_id: int, target_type: str | None = None,
    target_id: str | None = None, limit: int = 100,
) -> list[AuditEntry]:
    """The org's most recent audit entries, newest first."""
    stmt = entries_query(org_id=org_id, target_type=target_type, target_id=target_id)
    return list(session.scalars(stmt.limit(limit)))
