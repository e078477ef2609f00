"""Org API keys: the list, creating one (shown once) and revoking one.

A new key is shown on the POST response only (``no_store``), guarded by a
one-time nonce, so reloading that page creates and shows nothing. Another
org's key id answers 404.
"""

from __future__ import annotations

import shlex

from flask import abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_required

from portal.core import settings
from portal.core.api_keys import services as api_keys
from portal.core.api_keys.models import ApiKeyRole
from portal.core.db import get_session
from portal.core.errors import NotFound, ValidationFailed
from portal.core.types import utcnow
from portal.forms import sentence
from portal.forms.keys import ApiKeyForm
from portal.views import (
    bp,
    can_manage,
    consume_nonce,
    current_actor,
    current_org,
    issue_nonce,
    no_store,
)
from portal.views.confirm import Confirmation, confirm_first
from portal.views.snippets import Snippet

NEW_KEY_NONCE = "api_key:new"
ALREADY_CREATED = "That form was already submitted; an API key is only shown once."


def _render(form: ApiKeyForm, status: int = 200) -> ResponseReturnValue:
    if can_manage() and not form.nonce.data:
        form.nonce.data = issue_nonce(NEW_KEY_NONCE)
    keys = api_keys.list_api_keys(get_session(), org_id=current_org().id)
    return render_template("portal/api_keys/index.html", form=form, keys=keys,
                           issuer=settings.issuer()), status


def _introspect_snippet(plaintext: str) -> Snippet:
    url = settings.issuer() + "/oauth/introspect"
    return Snippet("snippet-introspect", "Introspect a token with this key",
                   f"curl -s {shlex.quote(url)} \\\n"
                   f"  -H {shlex.quote('Authorization: Bearer ' + plaintext)} \\\n"
                   '  -d token="$TOKEN"')


def _management_snippet(plaintext: str) -> Snippet:
    url = settings.issuer() + "/api/v1/clients"
    return Snippet("snippet-management", "List your clients with this key",
                   f"curl -s {shlex.quote(url)} \\\n"
                   f"  -H {shlex.quote('Authorization: Bearer ' + plaintext)}")


@bp.get("/api-keys", endpoint="api_keys")
@login_required
def api_keys_index() -> ResponseReturnValue:
    """The org's API keys, and a form to create one."""
    return _render(ApiKeyForm(formdata=None))


@bp.post("/api-keys", endpoint="api_keys_create")
@login_required
def api_keys_create() -> ResponseReturnValue:
    """Create an API key; the response shows it, once."""
    session = get_session()
    form = ApiKeyForm()
    if form.validate_on_submit():
        if not consume_nonce(NEW_KEY_NONCE, form.nonce.data):
            flash(ALREADY_CREATED, "warning")
            return redirect(url_for("portal.api_keys"))
        try:
            plaintext, key = api_keys.create_api_key(
                session, org=current_org(), name=form.name.data or "",
                role=form.role.data or "", actor=current_actor())
        except ValidationFailed as e:
            session.rollback()
            field = form.role if e.field == "role" else form.name
            field.errors = [*field.errors, sentence(e.message)]
            form.nonce.data = ""  # spent: _render issues a new one
        else:
            session.commit()
            return no_store(render_template("portal/api_keys/created.html", key=key,
                                            plaintext=plaintext,
                                            snippet=(_introspect_snippet(plaintext)
                                                     if key.role is ApiKeyRole.INTROSPECT
                                                     else _management_snippet(plaintext))))
    return _render(form, status=400)


def _confirm_revoke(key_id: int) -> Confirmation:
    key = next((k for k in api_keys.list_api_keys(get_session(), org_id=current_org().id)
                if k.id == key_id), None)
    if key is None:
        abort(404)
    return Confirmation(
        title=f"Revoke API key {key.name} (…{key.hint})?",
        consequence="Anything using it is refused from now on. This cannot be undone: "
                    "create a new key to replace it.",
        button="Revoke API key", back=url_for("portal.api_keys"))


@bp.route("/api-keys/<int:key_id>/revoke", methods=["GET", "POST"], endpoint="api_keys_revoke")
@login_required
@confirm_first(_confirm_revoke, allowed=can_manage)
def api_keys_revoke(key_id: int) -> ResponseReturnValue:
    """Revoke an API key: introspection and revocation refuse it from now on."""
    session = get_session()
    now = utcnow()
    try:
        key = api_keys.revoke_api_key(session, org_id=current_org().id, key_id=key_id,
                                      actor=current_actor(), now=now)
    except NotFound:
        abort(404)  # another org's key looks exactly like a missing one
    session.commit()
    if key.revoked_at == now:
        flash(f"API key {key.name} (…{key.hint}) revoked: it is refused from now on.", "success")
    else:
        flash(f"API key {key.name} (…{key.hint}) was already revoked.", "info")
    return redirect(url_for("portal.api_keys"))
