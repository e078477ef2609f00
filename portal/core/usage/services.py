"""Recording usage events, summarising them per hour and pruning old history."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, func, insert, not_, or_, select
from sqlalchemy.orm import Session

from portal.core.clients.models import Client
from portal.core.db import table_of
from portal.core.errors import ValidationFailed
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
    event = UsageEvent(**event_values(
        kind=kind, org_id=org_id, client_id=client_id, client_ref=client_ref, reason=reason,
        jti=jti, source_ip=source_ip, now=now,
    ))
    session.add(event)
    return event


def event_values(
    *,
    kind: UsageKind,
    org_id: int | None,
    client_id: int | None = None,
    client_ref: str = "",
    reason: str = "",
    jti: str | None = None,
    source_ip: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The column values of one usage event, for an ORM object or a Core ``INSERT``."""
    return {
        "kind": kind,
        "org_id": org_id,
        "client_id": client_id,
        "client_ref": client_ref.replace("\x00", "")[:64],
        "reason": reason.replace("\x00", "")[:MAX_REASON],
        "jti": jti,
        "source_ip": source_ip[:45],
        "occurred_at": now or utcnow(),
    }


def insert_event(session: Session, **values: Any) -> None:
    """Write one usage event with a Core ``INSERT`` (no ORM object; the hot path's way).

    Takes the keyword arguments of :func:`record_event`.
    """
    session.execute(insert(table_of(UsageEvent)), event_values(**values))


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


# --- reading history back: counts per hour or day, for charts --------------------

BUCKETS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
CHARTED = (UsageKind.TOKEN_ISSUED, UsageKind.TOKEN_FAILED)


@dataclass(frozen=True)
class Bucket:
    """Counts for one hour or day of history."""

    start: datetime
    counts: dict[UsageKind, int]

    @property
    def issued(self) -> int:
        return self.counts.get(UsageKind.TOKEN_ISSUED, 0)

    @property
    def failed(self) -> int:
        return self.counts.get(UsageKind.TOKEN_FAILED, 0)


MAX_RANGE_DAYS = 400
MAX_HOURLY_DAYS = 31  # beyond this an hourly chart has too many bars to read


def check_window(start: datetime, end: datetime, bucket: str) -> None:
    """A history window the portal and the API accept: at most :data:`MAX_RANGE_DAYS`,
    and hourly buckets over at most :data:`MAX_HOURLY_DAYS`."""
    days = (end - start) / timedelta(days=1)
    if days > MAX_RANGE_DAYS:
        raise ValidationFailed(f"Choose at most {MAX_RANGE_DAYS} days at a time.", field="end")
    if bucket == "hour" and days > MAX_HOURLY_DAYS:
        raise ValidationFailed(f"Hourly charts cover at most {MAX_HOURLY_DAYS} days; "
                               "choose Day for a longer range.", field="bucket")


def bucket_start(moment: datetime, bucket: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if bucket == "day" else moment


def _bucket_key(session: Session, column: Any, bucket: str) -> Any:
    """A SQL expression naming the UTC hour ("YYYY-MM-DD HH") or day of ``column``."""
    if session.get_bind().dialect.name == "postgresql":
        fmt = "YYYY-MM-DD HH24" if bucket == "hour" else "YYYY-MM-DD"
        return func.to_char(func.timezone("UTC", column), fmt)
    # SQLite stores UTC timestamps as "YYYY-MM-DD HH:MM:SS.ffffff".
    return func.substr(column, 1, 13 if bucket == "hour" else 10)


def _parse_key(key: str) -> datetime:
    return datetime.strptime(key + (":00" if len(key) == 13 else " 00:00"),
                             "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def series(
    session: Session,
    *,
    org_id: int,
    start: datetime,
    end: datetime,
    bucket: str = "hour",
    client_id: int | None = None,
    kinds: tuple[UsageKind, ...] = CHARTED,
) -> list[Bucket]:
    """Counts per ``bucket`` ("hour" or "day") from ``start`` to ``end``, empty buckets included.

    Reads the raw events and the hourly summary that pruning leaves behind, so
    the history stays whole after old events are folded away.
    """
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}")
    first, step = bucket_start(start, bucket), BUCKETS[bucket]
    totals: dict[datetime, Counter[UsageKind]] = {}
    sources: list[tuple[Any, Any, Any]] = [
        (UsageEvent, UsageEvent.occurred_at, func.count()),
        (UsageHourly, UsageHourly.hour, func.sum(UsageHourly.count)),
    ]
    for model, column, amount in sources:
        key = _bucket_key(session, column, bucket)
        stmt = (
            select(key, model.kind, amount)
            .where(model.org_id == org_id, model.kind.in_(kinds), column >= first, column < end)
            .group_by(key, model.kind)
        )
        if client_id is not None:
            stmt = stmt.where(model.client_id == client_id)
        for name, kind, count in session.execute(stmt):
            totals.setdefault(_parse_key(name), Counter())[kind] += int(count or 0)
    buckets: list[Bucket] = []
    moment = first
    while moment < end:
        buckets.append(Bucket(start=moment, counts=dict(totals.get(moment, {}))))
        moment += step
    return buckets


# --- reading events back: the filtered history table and its CSV export ----------

#: Outcomes the history can be filtered by. A failed outcome is a refused token
#: request, or an introspection that found the token inactive.
OUTCOMES = ("ok", "failed")
EXPORT_COLUMNS = ("occurred_at", "client_id", "client_name", "kind", "reason", "source_ip", "jti")


def _failed_outcome() -> Any:
    return or_(
        UsageEvent.kind == UsageKind.TOKEN_FAILED,
        and_(UsageEvent.kind == UsageKind.TOKEN_INTROSPECTED, UsageEvent.reason == "inactive"),
    )


def _filtered(
    stmt: Select[*tuple[Any, ...]],
    *,
    org_id: int,
    client_id: int | None = None,
    kinds: tuple[UsageKind, ...] | None = None,
    outcome: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Select[*tuple[Any, ...]]:
    stmt = stmt.where(UsageEvent.org_id == org_id)
    if client_id is not None:
        stmt = stmt.where(UsageEvent.client_id == client_id)
    if kinds:
        stmt = stmt.where(UsageEvent.kind.in_(kinds))
    if outcome == "failed":
        stmt = stmt.where(_failed_outcome())
    elif outcome == "ok":
        stmt = stmt.where(not_(_failed_outcome()))
    if start is not None:
        stmt = stmt.where(UsageEvent.occurred_at >= start)
    if end is not None:
        stmt = stmt.where(UsageEvent.occurred_at < end)
    return stmt.order_by(UsageEvent.occurred_at.desc(), UsageEvent.id.desc())


def events_query(
    *,
    org_id: int,
    client_id: int | None = None,
    kinds: tuple[UsageKind, ...] | None = None,
    outcome: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Select[Any]:
    """The org's events matching the filters, newest first (``start`` <= time < ``end``).

    ``outcome`` is ``"ok"`` or ``"failed"`` (see :data:`OUTCOMES`); None means both.
    """
    return _filtered(select(UsageEvent), org_id=org_id, client_id=client_id, kinds=kinds,
                     outcome=outcome, start=start, end=end)


def export_rows(
    session: Session,
    *,
    org_id: int,
    client_id: int | None = None,
    kinds: tuple[UsageKind, ...] | None = None,
    outcome: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
    chunk: int = 1000,
) -> Iterator[tuple[datetime, str, str, str, str, str, str]]:
    """The filtered events as :data:`EXPORT_COLUMNS` values, newest first, fetched in chunks.

    ``client_id`` is the client's public id, or what the caller presented when
    no client matched. Rows are read ``chunk`` at a time (``yield_per``), so a
    large export never holds the whole history in memory.
    """
    columns = select(UsageEvent.occurred_at, Client.client_id, Client.name, UsageEvent.client_ref,
                     UsageEvent.kind, UsageEvent.reason, UsageEvent.source_ip, UsageEvent.jti)
    stmt = _filtered(columns.outerjoin(Client, Client.id == UsageEvent.client_id),
                     org_id=org_id, client_id=client_id, kinds=kinds, outcome=outcome,
                     start=start, end=end)
    if limit is not None:
        stmt = stmt.limit(limit)
    result = session.execute(stmt.execution_options(yield_per=chunk))
    for occurred_at, public_id, name, ref, kind, reason, source_ip, jti in result:
        yield (occurred_at, public_id or ref or "", name or "", str(kind), reason or "",
               source_ip or "", jti or "")
