"""Recording usage events, summarising them per hour and pruning old history."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, String, and_, delete, func, insert, literal, not_, or_, select
from sqlalchemy.orm import Session

from portal.core.api_keys.models import ApiKey
from portal.core.clients.models import Client
from portal.core.db import table_of
from portal.core.errors import ValidationFailed
from portal.core.tokens.models import IssuedToken
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


def has_issued_tokens(session: Session, *, org_id: int) -> bool:
    """Whether the org has ever been issued a token (raw events or the pruned summary)."""
    for model in (UsageEvent, UsageHourly):
        found = session.scalar(select(model.id).where(
            model.org_id == org_id, model.kind == UsageKind.TOKEN_ISSUED).limit(1))
        if found is not None:
            return True
    return False


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
#: The CSV's columns. ``client_id``/``client_name`` are the token's client (for a
#: token request, the client that asked); ``caller``/``caller_name`` who made the
#: request: a client, an API key (``api_key:<hint>``) or a portal user (``user:<email>``).
EXPORT_COLUMNS = ("occurred_at", "client_id", "client_name", "kind", "reason", "source_ip", "jti",
                  "scope", "audience", "caller", "caller_name")
#: What introspection and revocation events keep in ``client_ref``: who called.
CLIENT_CALLER = "client:"
API_KEY_CALLER = "api_key:"
USER_CALLER = "user:"
#: Kinds whose ``client_ref`` names the caller rather than the token's client.
CALLER_KINDS = (UsageKind.TOKEN_INTROSPECTED, UsageKind.TOKEN_REVOKED)


@dataclass(frozen=True)
class Party:
    """Someone an event names: a client of the org, an API key, a portal user, or an id
    that matched nothing (a token request with an unknown client id)."""

    kind: str  # "client", "api_key", "user", "other"
    ref: str  # the client's public id, "api_key:<hint>", "user:<email>" or what was sent
    name: str = ""  # the client's or API key's name, when known

    @property
    def label(self) -> str:
        return self.name or self.ref


@dataclass(frozen=True)
class EventRow:
    """One event with the parties it names, read for people (the table and the CSV).

    ``owner`` is the client the token belongs to (None when no token of the org
    was recognised); ``caller`` who made the request. For a token request they are
    the same client. ``scope`` and ``audience`` are the token's, space-separated.
    """

    event: UsageEvent
    owner: Party | None
    caller: Party | None
    scope: str = ""
    audience: str = ""


def _involving(client_id: int) -> Any:
    """Events of client ``client_id``: its token requests, any event about one of its
    tokens, and the introspections and revocations it made itself (of any token)."""
    public_id = select(Client.public_id).where(Client.id == client_id).scalar_subquery()
    return or_(
        UsageEvent.client_id == client_id,
        and_(UsageEvent.kind.in_(CALLER_KINDS),
             UsageEvent.client_ref == literal(CLIENT_CALLER, String) + public_id),
    )


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
        stmt = stmt.where(_involving(client_id))
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

    ``client_id`` keeps the events that involve that client, as the token's client
    or as the caller (see :func:`_involving`). ``outcome`` is ``"ok"`` or
    ``"failed"`` (see :data:`OUTCOMES`); None means both.
    """
    return _filtered(select(UsageEvent), org_id=org_id, client_id=client_id, kinds=kinds,
                     outcome=outcome, start=start, end=end)


def totals(
    session: Session,
    *,
    org_id: int,
    start: datetime,
    end: datetime,
    client_id: int | None = None,
) -> dict[UsageKind, int]:
    """How many events of each kind from ``start`` to ``end``, for the org or for the
    events involving one client (as :func:`events_query` selects them).

    Counts the hourly summary of pruned events too, as :func:`series` does, so the
    issued and failed totals are the sums of a chart that starts at ``start``.
    """
    found: Counter[UsageKind] = Counter()
    raw = _filtered(select(UsageEvent.kind, func.count()), org_id=org_id, client_id=client_id,
                    start=start, end=end).order_by(None).group_by(UsageEvent.kind)
    summary = (select(UsageHourly.kind, func.sum(UsageHourly.count))
               .where(UsageHourly.org_id == org_id, UsageHourly.hour >= start,
                      UsageHourly.hour < end)
               .group_by(UsageHourly.kind))
    if client_id is not None:
        summary = summary.where(UsageHourly.client_id == client_id)
    for stmt in (raw, summary):
        for kind, count in session.execute(stmt):
            found[UsageKind(kind)] += int(count or 0)
    return {kind: found[kind] for kind in UsageKind}


def describe(session: Session, *, org_id: int, events: Sequence[UsageEvent]) -> list[EventRow]:
    """Name the parties of ``events`` (all of org ``org_id``): a handful of queries for
    the whole list, whatever its length, and nothing of another org."""
    client_ids = {e.client_id for e in events if e.client_id is not None}
    caller_ids = {e.client_ref[len(CLIENT_CALLER):] for e in events
                  if e.kind in CALLER_KINDS and e.client_ref.startswith(CLIENT_CALLER)}
    hints = {e.client_ref[len(API_KEY_CALLER):] for e in events
             if e.kind in CALLER_KINDS and e.client_ref.startswith(API_KEY_CALLER)}
    jtis = {e.jti for e in events if e.jti}
    by_id: dict[int, Client] = {}
    by_public: dict[str, Client] = {}
    if client_ids or caller_ids:
        for client in session.scalars(select(Client).where(
                Client.org_id == org_id,
                or_(Client.id.in_(client_ids), Client.public_id.in_(caller_ids)))):
            by_id[client.id] = client
            by_public[client.public_id] = client
    key_names: dict[str, list[str]] = {}
    if hints:
        for hint, name in session.execute(select(ApiKey.hint, ApiKey.name).where(
                ApiKey.org_id == org_id, ApiKey.hint.in_(hints))):
            key_names.setdefault(hint, []).append(name)
    tokens: dict[str, tuple[list[str], list[str]]] = {}
    if jtis:
        for jti, scopes, audience in session.execute(
                select(IssuedToken.jti, IssuedToken.scopes, IssuedToken.audience).where(
                    IssuedToken.org_id == org_id, IssuedToken.jti.in_(jtis))):
            tokens[jti] = (list(scopes or []), list(audience or []))

    def client_party(client: Client | None, ref: str) -> Party | None:
        if client is not None:
            return Party("client", client.public_id, client.name)
        return Party("other", ref) if ref else None

    rows: list[EventRow] = []
    for e in events:
        owner = by_id.get(e.client_id) if e.client_id is not None else None
        ref = e.client_ref or ""
        if e.kind not in CALLER_KINDS:
            caller = client_party(owner, ref)  # a token request: the client asked for itself
        elif ref.startswith(CLIENT_CALLER):
            caller = client_party(by_public.get(ref[len(CLIENT_CALLER):]), ref[len(CLIENT_CALLER):])
        elif ref.startswith(API_KEY_CALLER):
            names = key_names.get(ref[len(API_KEY_CALLER):], [])
            caller = Party("api_key", ref, names[0] if len(names) == 1 else "")
        elif ref.startswith(USER_CALLER):
            caller = Party("user", ref, ref[len(USER_CALLER):])
        else:
            caller = Party("other", ref) if ref else None
        scopes, audience = tokens.get(e.jti or "", ([], []))
        rows.append(EventRow(event=e, owner=client_party(owner, "") if owner else None,
                             caller=caller, scope=" ".join(scopes), audience=" ".join(audience)))
    return rows


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
) -> Iterator[tuple[datetime, *tuple[str, ...]]]:
    """The filtered events as :data:`EXPORT_COLUMNS` values, newest first, fetched in chunks.

    ``client_id`` is the token's client's public id; for a token request whose
    client id matched no client, what the caller presented. Rows are read ``chunk``
    at a time (``yield_per``) and named a chunk at a time (:func:`describe`); the
    session's identity map holds its objects weakly, so a large export never holds
    the whole history in memory.
    """
    stmt = _filtered(select(UsageEvent), org_id=org_id, client_id=client_id, kinds=kinds,
                     outcome=outcome, start=start, end=end)
    if limit is not None:
        stmt = stmt.limit(limit)
    result = session.scalars(stmt.execution_options(yield_per=chunk))
    for part in result.partitions(chunk):
        for row in describe(session, org_id=org_id, events=part):
            e = row.event
            owner_ref = row.owner.ref if row.owner else (
                "" if e.kind in CALLER_KINDS else e.client_ref or "")
            yield (e.occurred_at, owner_ref, row.owner.name if row.owner else "", str(e.kind),
                   e.reason or "", e.source_ip or "", e.jti or "", row.scope, row.audience,
                   row.caller.ref if row.caller else "", row.caller.name if row.caller else "")
