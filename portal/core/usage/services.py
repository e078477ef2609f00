"""Recording usage events, summarising them per hour and pruning old history."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from portal.core.types import utcnow
from portal.core.usage.models import UsageEvent, UsageHourly, UsageKind

MAX_REASON = 300


def record_event(
    session: Session,
    *,
    kind: UsageKind,
    org_id: int | None,
    client_id: int | None = None,
    client_ref: str = "",
    reason: str = "",
    jti: str | None = None,
    source_ip: str = "",
    now: datetime | None = None,
) -> UsageEvent:
    """Add one usage event to the session.

    ``client_ref`` and ``reason`` can carry what a caller sent; NUL bytes are
    dropped because PostgreSQL refuses them in text.
    """
    event = UsageEvent(
        kind=kind,
        org_id=org_id,
        client_id=client_id,
        client_ref=client_ref.replace("\x00", "")[:64],
        reason=reason.replace("\x00", "")[:MAX_REASON],
        jti=jti,
        source_ip=source_ip[:45],
        occurred_at=now or utcnow(),
    )
    session.add(event)
    return event


def list_events(
    session: Session, *, org_id: int, client_id: int | None = None, limit: int = 100
) -> list[UsageEvent]:
    """The org's most recent events, newest first."""
    stmt = select(UsageEvent).where(UsageEvent.org_id == org_id)
    if client_id is not None:
        stmt = stmt.where(UsageEvent.client_id == client_id)
    stmt = stmt.order_by(UsageEvent.occurred_at.desc(), UsageEvent.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def prune_events(session: Session, *, now: datetime | None = None, retention_days: int) -> int:
    """Fold events older than the retention period into hourly counts, then delete them.

    Only whole hours are folded, so an hour is never split between the raw
    table and the summary. Returns how many events were deleted.
    """
    now = now or utcnow()
    cutoff = _hour(now - timedelta(days=retention_days))
    rows = session.execute(
        select(UsageEvent.org_id, UsageEvent.client_id, UsageEvent.kind, UsageEvent.occurred_at)
        .where(UsageEvent.occurred_at < cutoff)
    )
    counts: Counter[tuple[int | None, int | None, UsageKind, datetime]] = Counter()
    for org_id, client_id, kind, occurred_at in rows:
        counts[(org_id, client_id, kind, _hour(occurred_at))] += 1
    for (org_id, client_id, kind, hour), count in counts.items():
        existing = session.scalar(
            select(UsageHourly).where(
                UsageHourly.org_id.is_(None) if org_id is None else UsageHourly.org_id == org_id,
                UsageHourly.client_id.is_(None)
                if client_id is None
                else UsageHourly.client_id == client_id,
                UsageHourly.kind == kind,
                UsageHourly.hour == hour,
            )
        )
        if existing is None:
            session.add(UsageHourly(org_id=org_id, client_id=client_id, kind=kind, hour=hour,
                                    count=count))
        else:
            existing.count += count
    result = session.execute(delete(UsageEvent).where(UsageEvent.occurred_at < cutoff))
    session.flush()
    return int(getattr(result, "rowcount", 0) or 0)
