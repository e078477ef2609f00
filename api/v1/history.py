"""``/api/v1/usage``, ``/api/v1/usage/events`` (JSON or the portal's CSV) and ``/api/v1/audit``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Response, request

from api.v1 import auth
from api.v1.common import HISTORY, bp, problems, respond, session
from api.v1.pagination import page
from api.v1.schemas import (
    AuditOut,
    AuditPage,
    AuditQuery,
    EventOut,
    EventPage,
    EventQuery,
    UsageBucket,
    UsageQuery,
    UsageSeries,
)
from portal.core.audit import services as audit
from portal.core.audit.models import AuditEntry
from portal.core.clients import services as clients
from portal.core.errors import NotFound, ValidationFailed
from portal.core.types import utcnow
from portal.core.usage import services as usage
from portal.core.usage.export import CSV_CHUNK, CSV_MAX_ROWS, csv_lines
from portal.core.usage.models import UsageEvent, UsageKind

TAGS = [HISTORY]
DEFAULT_SPAN = {"hour": timedelta(hours=24), "day": timedelta(days=30)}
CSV = "text/csv"


def _client_pk(public_id: str | None) -> int | None:
    """The row id of the org's client named by public id; unknown: on ``client_id``."""
    if public_id is None:
        return None
    try:
        return clients.get_client(session(), org_id=auth.org_id(), public_id=public_id).id
    except NotFound as e:
        raise ValidationFailed("no client of this organisation has that id",
                               field="client_id") from e


@bp.get("/usage", tags=TAGS, responses={200: UsageSeries})
def usage_series(query: UsageQuery) -> Response:
    """Tokens issued and failed per hour or day (default: the last 24 hours by hour)."""
    end = query.end or utcnow()
    start = query.start or end - DEFAULT_SPAN[query.bucket]
    usage.check_window(start, end, query.bucket)
    buckets = usage.series(session(), org_id=auth.org_id(), start=start, end=end,
                           bucket=query.bucket, client_id=_client_pk(query.client_id))
    return respond(UsageSeries(
        bucket=query.bucket, start=start, end=end,
        items=[UsageBucket(start=b.start, issued=b.issued, failed=b.failed) for b in buckets]))


_EVENTS_200 = {
    "description": "The events, newest first: JSON pages, or the portal's CSV export "
                   "(Accept: text/csv; limit and cursor do not apply).",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/EventPage"}},
        CSV: {"schema": {"type": "string"}},
    },
}


@bp.get("/usage/events", tags=TAGS, responses={200: _EVENTS_200, **problems(406)})
def usage_events(query: EventQuery) -> Response:
    """The org's token events, filtered; ``Accept: text/csv`` gives the CSV export."""
    scope: dict[str, Any] = {
        "org_id": auth.org_id(), "client_id": _client_pk(query.client_id),
        "kinds": (UsageKind(query.kind),) if query.kind else None, "outcome": query.outcome,
        "start": query.start, "end": query.end,
    }
    best = request.accept_mimetypes.best_match(["application/json", CSV])
    if best == CSV:
        rows = usage.export_rows(session(), **scope, limit=CSV_MAX_ROWS + 1, chunk=CSV_CHUNK)
        text = "".join(csv_lines(rows, max_rows=CSV_MAX_ROWS))
        return Response(text, mimetype=CSV, headers={"Cache-Control": "no-store"})
    events, cursor = page(session(), usage.events_query(**scope), UsageEvent.id,
                          limit=query.limit, cursor=query.cursor)
    # Named as the portal names them: the token's client and who asked (usage.describe).
    items = [EventOut(id=row.event.id, occurred_at=row.event.occurred_at,
                      kind=row.event.kind.value,
                      client_id=row.owner.ref if row.owner is not None else None,
                      caller=row.caller.ref if row.caller is not None else None,
                      caller_name=row.caller.name if row.caller is not None else "",
                      scope=row.scope, audience=row.audience,
                      reason=row.event.reason or "", source_ip=row.event.source_ip or "",
                      jti=row.event.jti)
             for row in usage.describe(session(), org_id=auth.org_id(), events=events)]
    return respond(EventPage(items=items, next_cursor=cursor))


@bp.get("/audit", tags=TAGS, responses={200: AuditPage})
def list_audit(query: AuditQuery) -> Response:
    """The org's audit log, newest first, filtered by actor, action, target and time."""
    stmt = audit.entries_query(org_id=auth.org_id(), target_type=query.target_type,
                               target_id=query.target_id, actor=query.actor,
                               action=query.action, start=query.start, end=query.end)
    rows, cursor = page(session(), stmt, AuditEntry.id, limit=query.limit, cursor=query.cursor)
    return respond(AuditPage(items=[AuditOut.model_validate(r) for r in rows],
                             next_cursor=cursor))
