"""The org's usage history: a chart, totals and a filtered, paged table of events; CSV export.

Both pages read the same GET filters (``UsageFilterForm``); a bad filter is a
message on the form and a 400, never an error page. The CSV is streamed in
chunks so a long history does not sit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Response, render_template, request
from flask.typing import ResponseReturnValue
from flask_login import login_required
from wtforms.fields.choices import SelectChoice

from portal.core.clients.models import Client
from portal.core.clients.services import list_clients
from portal.core.db import autocommit, get_session, new_session
from portal.core.types import utcnow
from portal.core.usage import services as usage
from portal.core.usage.export import CSV_CHUNK, CSV_MAX_ROWS, csv_lines
from portal.forms.history import UsageFilterForm, Window
from portal.views import bp, current_org
from portal.views.pagination import paginate


def _filters() -> tuple[UsageFilterForm, dict[str, Client]]:
    clients = {c.public_id: c for c in list_clients(get_session(), org_id=current_org().id)}
    form = UsageFilterForm(request.args)
    form.client.choices = [SelectChoice("", "All clients")] + [
        SelectChoice(c.public_id, c.name) for c in sorted(clients.values(), key=lambda c: c.name)]
    return form, clients


def _scope(form: UsageFilterForm, clients: dict[str, Client], window: Window) -> dict[str, Any]:
    """The keyword arguments of the usage queries for a valid form."""
    chosen = clients.get(form.client.data or "")
    return {
        "org_id": current_org().id,
        "client_id": chosen.id if chosen else None,
        "kinds": form.kinds(),
        "outcome": form.outcome.data or None,
        "start": window.start,
        "end": window.end,
    }


@bp.get("/usage", endpoint="usage")
@login_required
def usage_history() -> ResponseReturnValue:
    """Tokens issued and failed over time, and every event, for the org or one client."""
    session = get_session()
    form, clients = _filters()
    if not form.validate():
        return render_template("portal/usage/index.html", form=form, window=None, page=None,
                               buckets=[], rows=[], totals={}, args={}), 400
    window = form.window(utcnow())
    scope = _scope(form, clients, window)
    buckets = usage.series(session, org_id=current_org().id, start=window.start, end=window.end,
                           bucket=window.bucket, client_id=scope["client_id"])
    page = paginate(session, usage.events_query(**scope))
    rows = usage.describe(session, org_id=current_org().id, events=page.items)
    # From the chart's first bucket, so the issued and failed totals are the chart's sums.
    counted = usage.totals(session, org_id=current_org().id,
                           start=usage.bucket_start(window.start, window.bucket), end=window.end,
                           client_id=scope["client_id"])
    totals = {kind.value: count for kind, count in counted.items()}
    return render_template("portal/usage/index.html", form=form, window=window, page=page,
                           rows=rows, buckets=buckets, totals=totals,
                           args=form.query_args(), chosen=clients.get(form.client.data or ""))


@bp.get("/usage.csv", endpoint="usage_csv")
@login_required
def usage_csv() -> ResponseReturnValue:
    """The filtered events as CSV (newest first, at most ``CSV_MAX_ROWS``), streamed."""
    form, clients = _filters()
    if not form.validate():
        return render_template("portal/usage/index.html", form=form, window=None, page=None,
                               buckets=[], rows=[], totals={}, args={}), 400
    window = form.window(utcnow())
    scope = _scope(form, clients, window)
    filename = (f"latchkey-usage-{current_org().slug}-{window.start:%Y%m%d}"
                f"-{window.end:%Y%m%d}.csv")
    # The request's session is closed before the body streams, so the rows come
    # through a session of their own (holding no connection until the body
    # starts), reading outside any transaction: on SQLite, without the write
    # lock that a request's transaction takes.
    session = new_session()

    def body() -> Iterator[str]:
        try:
            autocommit(session)
            yield from csv_lines(usage.export_rows(session, **scope, limit=CSV_MAX_ROWS + 1,
                                                   chunk=CSV_CHUNK), max_rows=CSV_MAX_ROWS)
        finally:
            session.close()

    return Response(
        body(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                 "Cache-Control": "no-store"},
    )
