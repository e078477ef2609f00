"""Members of the org: everyone reads the list; owners add people, set roles and remove them."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_required

from portal.core.db import get_session
from portal.core.errors import Conflict, NotFound, ValidationFailed
from portal.core.users import services as users
from portal.core.users.models import Membership
from portal.forms import sentence
from portal.forms.members import ROLES, AddMemberForm, MemberRoleForm
from portal.views import (
    actor,
    bp,
    consume_nonce,
    current_membership,
    current_org,
    is_owner,
    issue_nonce,
    no_store,
    owner_required,
    source_ip,
)

NONCE = "member:new"


def _member_or_404(member_id: int) -> Membership:
    try:
        return users.get_membership(get_session(), org_id=current_org().id,
                                    membership_id=member_id)
    except NotFound:
        abort(404)


def _render(add_form: AddMemberForm | None = None, status: int = 200) -> ResponseReturnValue:
    """The members page; owners also get the add form, with a fresh one-time nonce."""
    if add_form is None and is_owner():
        add_form = AddMemberForm(formdata=None)
    if add_form is not None:
        add_form.nonce.data = issue_nonce(NONCE)
    members = users.list_members(get_session(), org_id=current_org().id)
    return render_template(
        "portal/members/index.html",
        members=members,
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
    """Add a person by email; a new account's temporary password is shown on this response only."""
    form = AddMemberForm()
    if not form.validate_on_submit():
        return _render(form, 400)
    if not consume_nonce(NONCE, form.nonce.data):
        flash("This form was already submitted. A temporary password is only shown once: "
              "if it was lost, remove the member and add them again.", "warning")
        return redirect(url_for("portal.members"))
    session = get_session()
    org = current_org()
    try:
        temporary, membership = users.add_member(
            session, org=org, email=form.email.data or "", role=form.role.data or "",
            actor=actor(), source_ip=source_ip())
    except (ValidationFailed, Conflict) as e:
        session.rollback()
        field = form.role if getattr(e, "field", None) == "role" else form.email
        field.errors.append(sentence(e.message))
        return _render(form, 400)
    session.commit()
    email, role = membership.user.email, membership.role.value
    if temporary is None:
        flash(f"{email} already had an account and can now sign in to {org.name} as {role}.",
              "success")
        return redirect(url_for("portal.members"))
    return no_store(render_template(
        "portal/members/added.html", email=email, role=role, org=org, temporary=temporary))


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
    session = get_session()
    try:
        users.set_role(session, membership=membership, role=form.role.data or "",
                       actor=actor(), source_ip=source_ip())
    except ValidationFailed as e:
        session.rollback()
        flash(sentence(e.message), "error")
        return _render(status=400)
    session.commit()
    flash(f"{membership.user.email} is now {membership.role.value}.", "success")
    return redirect(url_for("portal.members"))


@bp.post("/members/<int:member_id>/remove")
@login_required
@owner_required
def members_remove(member_id: int) -> ResponseReturnValue:
    """Take a member out of the org; their account and other memberships stay."""
    membership = _member_or_404(member_id)
    session = get_session()
    if membership.id == current_membership().id and not users.is_last_owner(session, membership):
        flash("You cannot remove yourself; another owner can.", "error")
        return _render(status=400)
    email = membership.user.email
    try:
        users.remove_membership(session, membership=membership, actor=actor(),
                                source_ip=source_ip())
    except ValidationFailed as e:
        session.rollback()
        flash(sentence(e.message), "error")
        return _render(status=400)
    session.commit()
    flash(f"{email} was removed from {current_org().name}.", "success")
    return redirect(url_for("portal.members"))
