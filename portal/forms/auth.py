"""Sign-in, sign-up, account and invitation forms."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

#: Every password a person chooses in the portal (sign-up, invitation, change) has at
#: least this many characters: a portal password guards an org.
SIGNUP_MIN_PASSWORD = 12


def new_password_validators(what: str = "a password") -> list[Any]:
    """The checks of a newly chosen password, the same on every form."""
    return [
        DataRequired(f"Choose {what}."),
        Length(min=SIGNUP_MIN_PASSWORD, max=1024,
               message=f"Use at least {SIGNUP_MIN_PASSWORD} characters."),
    ]


def confirm_validators(field: str) -> list[Any]:
    return [DataRequired("Type the password again."),
            EqualTo(field, message="The two passwords do not match.")]


class SignInForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class SignUpForm(FlaskForm):
    org_name = StringField(
        "Organisation name",
        validators=[DataRequired("Enter your organisation's name."), Length(max=200)],
    )
    email = EmailField(
        "Your email", validators=[DataRequired("Enter your email address."), Length(max=320)]
    )
    password = PasswordField("Password", validators=new_password_validators())
    confirm = PasswordField("Confirm password", validators=confirm_validators("password"))


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField(
        "Current password",
        validators=[DataRequired("Enter your current password."), Length(max=1024)])
    new_password = PasswordField("New password",
                                 validators=new_password_validators("a new password"))
    confirm = PasswordField("Confirm new password",
                            validators=confirm_validators("new_password"))
    next = HiddenField()


class NewAccountForm(FlaskForm):
    """An invitee without an account chooses their password."""

    token = HiddenField(validators=[DataRequired(), Length(max=200)])
    name = StringField("Your name (optional)", validators=[Length(max=200)])
    password = PasswordField("Password", validators=new_password_validators())
    confirm = PasswordField("Confirm password", validators=confirm_validators("password"))


class AcceptInvitationForm(FlaskForm):
    """The signed-in holder of the invited email accepts."""

    token = HiddenField(validators=[DataRequired(), Length(max=200)])


class SwitchOrgForm(FlaskForm):
    org = SelectField("Organisation", choices=[], validate_choice=False,
                      validators=[DataRequired(), Length(max=40)])
    next = HiddenField()
