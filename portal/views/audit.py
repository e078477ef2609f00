"""The org's audit log: every change, newest first, filtered by actor, action, target and dates."""

from __future__ import annotations

from flask import render_template, request
from flask.typing import ResponseReturnValue
from flask_login import login_required

from portal.core.audit import services as audit
from portal.core.db import get_session
from portal.forms.history import AuditFilterForm
from portal.views import bp, current_org
from portal.views.pagination import paginate


@bp.get("/audit", endpoint="audit")
@login_required
def audit_log() -> ResponseReturnValue:
    """Who changed what, when and from where; a bad filter is a form error (400)."""
    session = get_session()
    org = current_org()
    form = AuditFilterForm(request.args)
    form.set_actions(audit.actions_in_use(session, org_id=org.id))
    if not form.validate():
        return render_template("portal/audit/index.html", form=form, page=None, args={},
                               filtered=True), 400
    start, end = form.dates()
    stmt = audit.entries_query(
        org_id=org.id, actor=(form.actor.data or "").strip() or None,
        action=form.action.data or None, target_id=(form.target.data or "").strip() or None,
        start=start, end=end)
    args = form.query_args()
    return render_template("portal/audit/index.html", form=form, page=paginate(session, stmt),
                           args=args, filtered=bool(args))
