"""Writing audit entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core.audit.models import AuditEntry
from portal.core.types import utcnow


def record(
    session: Session,
    *,
    org_id: int | None,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any] | None = None,
    source_ip: str = "",
    now: datetime | None = None,
) -> AuditEntry:
    """Add one audit entry (who, what, target, when, from where) to the session."""
    entry = AuditEntry(
        org_id=org_id,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        details=details or {},
        source_ip=source_ip,
        occurred_at=now or utcnow(),
    )
    session.add(entry)
    return entry


def list_entries(session: Session, *, org_id: int, limit: int = 100) -> list[AuditEntry]:
    """The org's most recent audit entries, newest first."""
    stmt = (
        select(AuditEntry)
        .where(AuditEntry.org_id == org_id)
        .order_by(AuditEntry.occurred_at.desc(), AuditEntry.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))
