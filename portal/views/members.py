"""Members of the org: everyone reads the list; owners invite people, set roles, reset
passwords and remove members."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required

from portal.core.db import get_session
from portal.core.errors import Conflict, NotFound, ValidationFailed
from portal.core.users import invitations
from portal.core.users import services as users
from portal.core.users.models import Membership
from portal.forms import sentence
from portal.forms.members import ROLES, AddMemberForm, MemberRoleForm, ResetPasswordForm
from portal.views import (
    bp,
    consume_nonce,
    current_actor,
    current_membership,
    current_org,
    end_read,
    is_owner,
    issue_nonce,
    no_store,
    owner_required,
)
from portal.views.confirm import Confirmation, confirm_first

NONCE = "member:new"
RESET_NONCE = "member:reset"


def _member_or_404(member_id: int) -> Membership:
    try:
        return users.get_membership(get_session(), org_id=current_org().id,
                                    membership_id=member_id)
    except NotFound:
        abort(404)


def _render(add_form: AddMemberForm | None = None, status: int = 200) -> ResponseReturnValue:
    """The members page; owners also get the invite form (with a fresh one-time nonce)
    and the pending invitations."""
    if add_form is None and is_owner():
        add_form = AddMemberForm(formdata=None)
    if add_form is not None:
        add_form.nonce.data = issue_nonce(NONCE)
    db = get_session()
    org_id = current_org().id
    return render_template(
        "portal/members/index.html",
        members=users.list_members(db, org_id=org_id),
        pending=invitations.list_pending(db, org_id=org_id) if is_owner() else [],
        me=current_membership(),
        add_form=add_form,
        roles=ROLES,
    ), status


@bp.get("/members")
@login_required
def members() -> ResponseReturnValue:
    """Everyone in the org with their role, when they joined and last signed in."""
    return _render()


@bp.post("/members/add")
@login_required
@owner_required
def members_add() -> ResponseReturnValue:
    """Invite a person by email; the single-use link is shown on this response only.

    The answer is the same whether or not the email already has an account,
    and no account is created or attached here: the invitee does that by
    opening the link.
    """
    form = AddMemberForm()
    if not form.validate_on_submit():
        return _render(form, 400)
    if not consume_nonce(NONCE, form.nonce.data):
        flash("This form was already submitted. An invitation link is only shown once: "
              "if it was lost, invite the same email again (the old link stops working).",
              "warning")
        return redirect(url_for("portal.members"))
    db = get_session()
    org = current_org()
    try:
        token, invitation = invitations.invite(
            db, org=org, email=form.email.data or "", role=form.role.data or "",
            actor=current_actor())
    except (ValidationFailed, Conflict) as e:
        db.rollback()
        field = form.role if getattr(e, "field", None) == "role" else form.email
        field.errors.append(sentence(e.message))
        return _render(form, 400)
    db.commit()
    return no_store(render_template(
        "portal/members/invited.html", invitation=invitation, org=org,
        link=url_for("portal.invitation", token=token, _external=True)))


def _confirm_invitation_revoke(invitation_id: int) -> Confirmation:
    found = next((i for i in invitations.list_pending(get_session(), org_id=current_org().id)
                  if i.id == invitation_id), None)
    if found is None:
        abort(404)
    return Confirmation(
        title=f"Revoke the invitation for {found.email}?",
        consequence="Its link stops working. You can invite the same email again.",
        button="Revoke invitation", back=url_for("portal.members") + "#pending-invitations")


@bp.route("/members/invitations/<int:invitation_id>/revoke", methods=["GET", "POST"])
@login_required
@owner_required
@confirm_first(_confirm_invitation_revoke)
def invitation_revoke(invitation_id: int) -> ResponseReturnValue:
    """Make a pending invitation's link stop working."""
    db = get_session()
    try:
        invitation = invitations.revoke_invitation(
            db, org_id=current_org().id, invitation_id=invitation_id, actor=current_actor())
    except NotFound:
        abort(404)
    db.commit()
    flash(f"The invitation for {invitation.email} was revoked; its link no longer works.",
          "success")
    return redirect(url_for("portal.members") + "#pending-invitations")


@bp.post("/members/<int:member_id>/role")
@login_required
@owner_required
def members_role(member_id: int) -> ResponseReturnValue:
    """Change a member's role; the last owner keeps theirs."""
    membership = _member_or_404(member_id)
    form = MemberRoleForm()
    if not form.validate_on_submit():
        flash("Choose a role: owner, admin or viewer.", "error")
        return _render(status=400)
    db = get_session()
    try:
        users.set_role(db, membership=membership, role=form.role.data or "",
                       actor=current_actor())
    except NotFound:
        db.rollback()
        abort(404)
    except ValidationFailed as e:
        db.rollback()
        flash(sentence(e.message), "error")
        return _render(status=400)
    db.commit()
    flash(f"{membership.user.email} is now {membership.role.value}.", "success")
    return redirect(url_for("portal.members"))


def _confirm_remove(member_id: int) -> Confirmation:
    membership = _member_or_404(member_id)
    return Confirmation(
        title=f"Remove {membership.user.email} from {current_org().name}?",
        consequence="They can no longer sign in to this organisation, and the tokens of "
                    "user clients acting for them are revoked. Their account and any other "
                    "organisation they belong to stay.",
        button="Remove member", back=url_for("portal.members"))


@bp.route("/members/<int:member_id>/remove", methods=["GET", "POST"])
@login_required
@owner_required
@confirm_first(_confirm_remove)
def members_remove(member_id: int) -> ResponseReturnValue:
    """Take a member out of the org; their account and other memberships stay.

    The tokens of user clients acting for them are revoked at the same time.
    """
    membership = _member_or_404(member_id)
    db = get_session()
    if membership.id == current_membership().id and not users.is_last_owner(db, membership):
        flash("You cannot remove yourself; another owner can.", "error")
        return _render(status=400)
    email = membership.user.email
    try:
        revoked = users.remove_membership(db, membership=membership, actor=current_actor())
    except NotFound:
        db.rollback()
        abort(404)
    except ValidationFailed as e:
        db.rollback()
        flash(sentence(e.message), "error")
        return _render(status=400)
    db.commit()
    tokens = (f" {revoked} active token{'s' if revoked != 1 else ''} of clients acting for "
              f"them {'were' if revoked != 1 else 'was'} revoked." if revoked else "")
    flash(f"{email} was removed from {current_org().name}.{tokens}", "success")
    return redirect(url_for("portal.members"))


# -- password reset ----------------------------------------------------------------------


def _refusal(membership: Membership) -> str | None:
    """Why this owner may not reset this member's password, or None."""
    try:
        users.check_reset_allowed(get_session(), membership=membership,
                                  actor_user_id=current_user.user.id)
    except (ValidationFailed, Conflict) as e:
        return sentence(e.message)
    return None


@bp.get("/members/<int:member_id>/reset-password")
@login_required
@owner_required
def members_reset_form(member_id: int) -> ResponseReturnValue:
    """Confirm a password reset (a page, so it needs no JavaScript to be asked)."""
    membership = _member_or_404(member_id)
    refusal = _refusal(membership)
    form = ResetPasswordForm(formdata=None)
    form.nonce.data = issue_nonce(RESET_NONCE)
    return render_template("portal/members/reset.html", membership=membership, form=form,
                           refusal=refusal), 409 if refusal else 200


@bp.post("/members/<int:member_id>/reset-password")
@login_required
@owner_required
def members_reset(member_id: int) -> ResponseReturnValue:
    """Reset a member's password: a temporary one, shown once, to change at next sign-in.

    Only for an account whose only membership is this org (otherwise this
    org's owner could sign in to another org); the member's sessions end.
    """
    membership = _member_or_404(member_id)
    refusal = _refusal(membership)
    if refusal:
        flash(refusal, "error")
        return redirect(url_for("portal.members"))
    form = ResetPasswordForm()
    if not form.validate_on_submit() or not consume_nonce(RESET_NONCE, form.nonce.data):
        flash("This form was already submitted. A temporary password is only shown once: "
              "if it was lost, reset the password again.", "warning")
        return redirect(url_for("portal.members"))
    actor, owner_id = current_actor(), current_user.user.id
    end_read()
    temporary = users.new_temporary_password()
    hashed = users.hash_new_password(temporary)  # argon2 with no transaction open
    db = get_session()
    try:
        user = users.reset_password(db, membership=membership, temporary=hashed,
                                    actor_user_id=owner_id, actor=actor)
    except NotFound:
        db.rollback()
        abort(404)
    except (ValidationFailed, Conflict) as e:  # became a member elsewhere meanwhile
        db.rollback()
        flash(sentence(e.message), "error")
        return redirect(url_for("portal.members"))
    db.commit()
    return no_store(render_template("portal/members/reset_done.html", email=user.email,
                                    temporary=temporary, org=current_org()))
