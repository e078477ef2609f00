"""APIs: the list, registering one, its page (scopes, clients granted it, how to validate
its tokens), editing, deleting, and the scope editor.

An org sees its own APIs and the deployment's; another org's API answers 404. A
deployment API is read-only here (403 on every change): its operator manages it
with the ``latchkey`` CLI. Viewers read; their POSTs are refused by the hook in
``portal.views``, and the form pages answer them 403 too.
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_required
from flask_wtf import FlaskForm

from portal.core import settings
from portal.core.apis import services as apis
from portal.core.apis.models import Api
from portal.core.db import get_session
from portal.core.errors import Conflict, NotFound, NotPermitted, ValidationFailed
from portal.forms import attach_error, sentence
from portal.forms.apis import ApiSettingsForm, NewApiForm, ScopeDescriptionForm, ScopeForm
from portal.views import bp, can_manage, current_actor, current_org
from portal.views.snippets import validation_snippets


def _api(api_id: str) -> Api:
    """An API the signed-in org sees (its own or the deployment's), or 404."""
    try:
        return apis.get_api(get_session(), org_id=current_org().id, public_id=api_id)
    except NotFound:
        abort(404)


def _changeable(api_id: str) -> Api:
    """The org's own API, for a change: 403 for a viewer or a deployment API."""
    if not can_manage():
        abort(403, "Your role in this organisation is read-only.")
    api = _api(api_id)
    if api.org_id != current_org().id:
        abort(403, f"{api.name} {apis.SHARED_HELP}.")
    return api


def _detail_url(api: Api) -> str:
    return url_for("portal.apis_detail", api_id=api.public_id)


def _form_error(form: FlaskForm, error: ValidationFailed) -> None:
    attach_error(form, error)


@bp.get("/apis", endpoint="apis")
@login_required
def apis_list() -> ResponseReturnValue:
    """The APIs the org's clients can be granted: its own, then the deployment's."""
    session = get_session()
    org = current_org()
    return render_template("portal/apis/list.html", org=org,
                           apis=apis.list_apis(session, org_id=org.id),
                           counts=apis.grant_counts(session, org_id=org.id))


@bp.route("/apis/new", methods=["GET", "POST"], endpoint="apis_new")
@login_required
def apis_new() -> ResponseReturnValue:
    """Register an API: its identifier (the tokens' ``aud``) and its scopes."""
    if not can_manage():
        abort(403, "Your role in this organisation is read-only.")
    session = get_session()
    form = NewApiForm()
    if form.validate_on_submit():
        try:
            api = apis.create_api(session, org=current_org(), actor=current_actor(),
                                  **form.settings())
        except ValidationFailed as e:
            session.rollback()
            _form_error(form, e)
        else:
            session.commit()
            flash(f"API {api.name} registered: grant it to clients on their settings page.",
                  "success")
            return redirect(_detail_url(api))
    status = 400 if request.method == "POST" else 200
    return render_template("portal/apis/new.html", form=form,
                           ttl_bounds=settings.ttl_bounds()), status


def _render_detail(api: Api, *, scope_form: ScopeForm | None = None,
                   status: int = 200) -> ResponseReturnValue:
    session = get_session()
    org = current_org()
    granted = apis.granted_clients(session, api, org_id=org.id)
    grants = {c.id: next(g for g in c.grants if g.api_id == api.id) for c in granted}
    issuer = settings.issuer()
    return render_template(
        "portal/apis/detail.html",
        api=api,
        org=org,
        clients=granted,
        grants=grants,
        can_change=can_manage() and api.org_id == org.id,
        scope_form=scope_form or ScopeForm(formdata=None),
        describe_form=ScopeDescriptionForm(formdata=None),
        issuer=issuer,
        jwks_url=issuer + url_for("wellknown.jwks"),
        snippets=validation_snippets(api, org_public_id=org.public_id),
    ), status


@bp.get("/apis/<api_id>", endpoint="apis_detail")
@login_required
def api_detail(api_id: str) -> ResponseReturnValue:
    """An API's settings, scopes, the clients granted it and how to validate its tokens."""
    return _render_detail(_api(api_id))


@bp.route("/apis/<api_id>/edit", methods=["GET", "POST"], endpoint="apis_edit")
@login_required
def apis_edit(api_id: str) -> ResponseReturnValue:
    """Change an API's name, description and token lifetimes (not its identifier)."""
    session = get_session()
    api = _changeable(api_id)
    if request.method == "GET":
        form = ApiSettingsForm(data={"name": api.name, "description": api.description,
                                     "default_ttl": api.default_ttl, "max_ttl": api.max_ttl})
    else:
        form = ApiSettingsForm()
    if form.validate_on_submit():
        try:
            changed = apis.update_api(session, api, acting_org_id=current_org().id,
                                      actor=current_actor(), **form.settings())
        except ValidationFailed as e:
            session.rollback()
            _form_error(form, e)
        else:
            session.commit()
            flash(f"Saved {api.name}." if changed else "Nothing changed.",
                  "success" if changed else "info")
            return redirect(_detail_url(api))
    status = 400 if request.method == "POST" else 200
    return render_template("portal/apis/edit.html", form=form, api=api,
                           ttl_bounds=settings.ttl_bounds()), status


@bp.route("/apis/<api_id>/delete", methods=["GET", "POST"], endpoint="apis_delete")
@login_required
def apis_delete(api_id: str) -> ResponseReturnValue:
    """Confirm, then delete an API; refused while any client is granted it."""
    session = get_session()
    api = _changeable(api_id)
    form = FlaskForm()
    holders = apis.granted_clients(session, api, org_id=current_org().id)
    error = None
    if form.validate_on_submit():
        name = api.name
        try:
            apis.delete_api(session, api, acting_org_id=current_org().id, actor=current_actor())
        except Conflict as e:
            session.rollback()
            error = sentence(e.message)
        else:
            session.commit()
            flash(f"API {name} deleted.", "success")
            return redirect(url_for("portal.apis"))
    status = 400 if request.method == "POST" else 200
    return render_template("portal/apis/delete.html", form=form, api=api, holders=holders,
                           error=error), status


# -- the scope editor ---------------------------------------------------------------------


@bp.post("/apis/<api_id>/scopes", endpoint="apis_add_scope")
@login_required
def apis_add_scope(api_id: str) -> ResponseReturnValue:
    """Add a scope to the API (no client has it until granted)."""
    session = get_session()
    api = _changeable(api_id)
    form = ScopeForm()
    if form.validate_on_submit():
        try:
            scope = apis.add_scope(session, api, acting_org_id=current_org().id,
                                   name=form.scope.data or "",
                                   description=form.scope_description.data or "",
                                   actor=current_actor())
        except ValidationFailed as e:
            session.rollback()
            _form_error(form, e)
        else:
            session.commit()
            flash(f"Scope {scope.name} added to {api.name}.", "success")
            return redirect(_detail_url(api) + "#scopes")
    return _render_detail(api, scope_form=form, status=400)


@bp.post("/apis/<api_id>/scopes/<int:scope_id>", endpoint="apis_update_scope")
@login_required
def apis_update_scope(api_id: str, scope_id: int) -> ResponseReturnValue:
    """Change what a scope's description says."""
    session = get_session()
    api = _changeable(api_id)
    form = ScopeDescriptionForm()
    try:
        scope = apis.get_scope(api, scope_id)
    except NotFound:
        abort(404)
    if not form.validate_on_submit():
        flash(" ".join(e for errors in form.errors.values() for e in errors), "error")
        return redirect(_detail_url(api) + "#scopes")
    try:
        changed = apis.update_scope(session, api, acting_org_id=current_org().id,
                                    scope_id=scope.id,
                                    description=form.scope_description.data or "",
                                    actor=current_actor())
    except ValidationFailed as e:
        session.rollback()
        flash(sentence(e.message), "error")
    else:
        session.commit()
        flash(f"Scope {scope.name} described." if changed else "Nothing changed.",
              "success" if changed else "info")
    return redirect(_detail_url(api) + "#scopes")


@bp.route("/apis/<api_id>/scopes/<int:scope_id>/remove", methods=["GET", "POST"],
          endpoint="apis_remove_scope")
@login_required
def apis_remove_scope(api_id: str, scope_id: int) -> ResponseReturnValue:
    """Confirm, then remove a scope from the API and from every client granted it."""
    session = get_session()
    api = _changeable(api_id)
    try:
        scope = apis.get_scope(api, scope_id)
    except NotFound:
        abort(404)
    form = FlaskForm()
    holders = [c for c in apis.granted_clients(session, api, org_id=current_org().id)
               if any(g.api_id == api.id and scope.name in g.scopes for g in c.grants)]
    if form.validate_on_submit():
        name = scope.name
        try:
            affected = apis.remove_scope(session, api, acting_org_id=current_org().id,
                                         scope_id=scope.id, actor=current_actor())
        except NotPermitted:  # pragma: no cover (checked by _changeable)
            abort(403)
        session.commit()
        lost = f" {len(affected)} client{'s' if len(affected) != 1 else ''} lost it." \
            if affected else ""
        flash(f"Scope {name} removed from {api.name}.{lost}", "success")
        return redirect(_detail_url(api) + "#scopes")
    return render_template("portal/apis/remove_scope.html", form=form, api=api, scope=scope,
                           holders=holders)
