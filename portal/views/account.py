"""One's own account: memberships, password, sessions, and which org to act in."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required

from portal.core.db import get_session
from portal.core.errors import Conflict, ValidationFailed
from portal.core.users import services as users
from portal.extensions import limiter
from portal.forms import attach_error, sentence
from portal.forms.auth import ChangePasswordForm, SwitchOrgForm
from portal.views import bp, current_actor, end_read
from portal.views.auth import SESSION_GENERATION, SESSION_ORG, safe_next

CHANGE_LIMIT = "10/minute"
CHANGE_LIMITED = "Too many attempts to change the password. Wait a minute, then try again."


def _user_key() -> str:
    return f"password-change:{current_user.get_id()}"


def _render_password(form: ChangePasswordForm, status: int = 200) -> ResponseReturnValue:
    """The change-password page (with the form's errors, if any)."""
    return render_template("portal/account/password.html", form=form,
                           forced=current_user.user.must_change_password), status


def _render_account(form: ChangePasswordForm | None = None,
                    status: int = 200) -> ResponseReturnValue:
    return render_template(
        "portal/account/index.html",
        form=form or ChangePasswordForm(formdata=None),
        memberships=current_user.memberships,
        current=current_user.membership,
    ), status


@bp.get("/account")
@login_required
def account() -> ResponseReturnValue:
    """Who I am, the orgs I am a member of (with my role), my password and sessions."""
    return _render_account()


@bp.get("/account/password")
@login_required
def account_password_form() -> ResponseReturnValue:
    """The change-password page (the only page after an owner reset the password)."""
    form = ChangePasswordForm(formdata=None)
    form.next.data = request.args.get("next", "")
    return _render_password(form)


@bp.post("/account/password")
@login_required
@limiter.limit(CHANGE_LIMIT, key_func=_user_key, error_message=CHANGE_LIMITED)
def account_password() -> ResponseReturnValue:
    """Change my password: the current one is required; my other sessions end, this one stays.

    Both argon2 steps (checking the current password, hashing the new one) run
    with no transaction open; the write then replaces only the hash that was
    checked.
    """
    form = ChangePasswordForm()
    if not form.validate_on_submit():
        return _render_password(form, 400)
    user = current_user.user
    replaced = user.password_hash
    forced = user.must_change_password
    end_read()
    try:
        new = users.prepare_password_change(
            replaced, current_password=form.current_password.data or "",
            new_password=form.new_password.data or "")
    except ValidationFailed as e:
        attach_error(form, e)
        return _render_password(form, 400)
    db = get_session()
    try:
        generation = users.change_password(db, user_id=user.id, replaced_hash=replaced,
                                           new=new, actor=current_actor())
    except Conflict as e:
        db.rollback()
        flash(sentence(e.message), "error")
        return redirect(url_for("portal.signin"))
    db.commit()
    session[SESSION_GENERATION] = generation  # this session stays; every other one is over
    flash("Password changed. Any other session of your account was signed out.", "success")
    if forced:
        return redirect(safe_next(form.next.data))
    return redirect(url_for("portal.account"))


@bp.post("/account/sessions/end-others")
@login_required
def account_end_sessions() -> ResponseReturnValue:
    """Sign out every other session of my account (other browsers, a leaked cookie)."""
    db = get_session()
    generation = users.end_sessions(db, user_id=current_user.user.id)
    db.commit()
    session[SESSION_GENERATION] = generation
    flash("Every other session of your account was signed out.", "success")
    return redirect(url_for("portal.account"))


# -- choosing the org --------------------------------------------------------------------


@bp.get("/orgs")
@login_required
def choose_org() -> ResponseReturnValue:
    """Pick the organisation to work in (a user in several orgs, after sign-in)."""
    if not current_user.memberships:
        abort(403, "Your account is not a member of any organisation.")
    return render_template("portal/account/choose_org.html",
                           memberships=current_user.memberships,
                           current=current_user.membership,
                           next=safe_next(request.args.get("next")))


@bp.post("/orgs/switch")
@login_required
def switch_org() -> ResponseReturnValue:
    """Act in another of my orgs from now on (kept in the session, checked on every request).

    An org the user is not a member of is not found. The CSRF token changes, so
    a form still open in another tab for the previous org cannot act on this one.
    """
    form = SwitchOrgForm()
    if not form.validate_on_submit():
        abort(400, "Choose an organisation.")
    membership = next(
        (m for m in current_user.memberships if m.org.public_id == form.org.data), None)
    if membership is None:
        abort(404)
    session[SESSION_ORG] = membership.org.public_id
    session.pop("csrf_token", None)
    flash(f"You are working in {membership.org.name} as {membership.role.value}.", "success")
    return redirect(safe_next(form.next.data))
