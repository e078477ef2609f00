"""Forms of the members page."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, SelectChoice, SelectField
from wtforms.validators import DataRequired, Length

#: The roles, least powerful first (the add form's default is the first).
ROLES = ("viewer", "admin", "owner")
ROLE_DESCRIPTIONS = {
    "viewer": "Viewer — reads everything, changes nothing",
    "admin": "Admin — manages clients, secrets, tokens and keys",
    "owner": "Owner — also manages members",
}


class AddMemberForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired("Enter an email address."),
                                            Length(max=320)])
    role = SelectField("Role", choices=[SelectChoice(r, ROLE_DESCRIPTIONS[r]) for r in ROLES],
                       default="viewer")
    # One-time value: a reload of the response showing the invitation link invites no one.
    nonce = HiddenField()


class MemberRoleForm(FlaskForm):
    role = SelectField("Role", choices=[SelectChoice(r, r.capitalize()) for r in ROLES])


class ResetPasswordForm(FlaskForm):
    # One-time value: a reload of the page showing the temporary password resets nothing.
    nonce = HiddenField(validators=[Length(max=64)])
