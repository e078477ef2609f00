"""Opening and accepting an invitation link (the invitee's side; owners invite on Members).

The link carries its secret in the query string, which the access log leaves
out, and every page showing it is sent ``no-store``.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from portal.core.db import get_session
from portal.core.errors import ValidationFailed
from portal.core.users import invitations
from portal.core.users import services as users
from portal.core.users.models import Invitation
from portal.extensions import limiter
from portal.forms import attach_error, sentence
from portal.forms.auth import AcceptInvitationForm, NewAccountForm
from portal.views import bp, end_read, no_store, source_ip
from portal.views.auth import SESSION_ORG, SIGNIN_LIMITED, _limit, start_session


def _page(invitation: Invitation, form: Any, status: int = 200,
          error: str | None = None) -> ResponseReturnValue:
    token = form.token.data or ""
    return no_store((render_template(
        "portal/invitations/open.html", invitation=invitation, form=form, error=error,
        signin_url=url_for("portal.signin", next=url_for("portal.invitation", token=token)),
    ), status))


def _not_valid() -> ResponseReturnValue:
    return no_store((render_template("portal/invitations/invalid.html",
                                     message=sentence(invitations.NOT_VALID)), 404))


@bp.get("/invitation")
def invitation() -> ResponseReturnValue:
    """The invitation a link opens: join with a new password, or sign in and accept.

    The page offers both to a signed-out visitor, whatever the email, so
    opening a link tells nobody whether the email already has an account.
    """
    token = request.args.get("token", "")
    found = invitations.find_pending(get_session(), token)
    if found is None:
        return _not_valid()
    form: Any = AcceptInvitationForm(formdata=None) if current_user.is_authenticated \
        else NewAccountForm(formdata=None)
    form.token.data = token
    return _page(found, form)


@bp.post("/invitation/accept")
@limiter.limit(_limit("SIGNIN_RATE_LIMIT_PER_ADDRESS"), error_message=SIGNIN_LIMITED)
def invitation_accept() -> ResponseReturnValue:
    """Accept: the signed-in account of the invited email joins, or a new account is made."""
    if current_user.is_authenticated:
        return _accept_signed_in()
    return _accept_new_account()


def _accept_signed_in() -> ResponseReturnValue:
    form = AcceptInvitationForm()
    db = get_session()
    if not form.validate_on_submit():
        return _not_valid()
    try:
        membership = invitations.accept_as_user(
            db, token=form.token.data or "", user_id=current_user.user.id,
            source_ip=source_ip())
    except invitations.InvitationNotValid:
        db.rollback()
        return _not_valid()
    except invitations.WrongAccount as e:
        db.rollback()
        found = invitations.find_pending(db, form.token.data or "")
        return _page(found, form, 400, sentence(e.message)) if found else _not_valid()
    db.commit()
    _work_in(membership.org.public_id)
    flash(f"You joined {membership.org.name} as {membership.role.value}.", "success")
    return redirect(url_for("portal.home"))


def _accept_new_account() -> ResponseReturnValue:
    form = NewAccountForm()
    db = get_session()
    found = invitations.find_pending(db, form.token.data or "")
    if found is None:
        return _not_valid()
    if not form.validate_on_submit():
        return _page(found, form, 400)
    end_read()
    try:
        password = users.hash_new_password(form.password.data or "")  # no transaction open
        membership = invitations.accept_with_new_account(
            db, token=form.token.data or "", password=password, name=form.name.data or "",
            source_ip=source_ip())
    except invitations.InvitationNotValid:
        db.rollback()
        return _not_valid()
    except invitations.AccountExists as e:
        db.rollback()
        return _page(found, form, 409, sentence(e.message))
    except ValidationFailed as e:
        db.rollback()
        attach_error(form, e)
        return _page(found, form, 400)
    db.commit()
    start_session(membership.user, org=membership.org)
    flash(f"Welcome to Latchkey. You joined {membership.org.name} as "
          f"{membership.role.value}.", "success")
    return redirect(url_for("portal.home"))


def _work_in(org_public_id: str) -> None:
    """Act in the org just joined; forms opened for another org stop working."""
    session[SESSION_ORG] = org_public_id
    session.pop("csrf_token", None)
