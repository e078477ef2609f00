"""Sign-in and sign-up forms."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

#: Sign-up asks for more than the service minimum: a new owner's password guards an org.
SIGNUP_MIN_PASSWORD = 12


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
    password = PasswordField(
        "Password",
        validators=[
            DataRequired("Choose a password."),
            Length(min=SIGNUP_MIN_PASSWORD, max=1024,
                   message=f"Use at least {SIGNUP_MIN_PASSWORD} characters."),
        ],
    )
    confirm = PasswordField(
        "Confirm password",
        validators=[DataRequired("Type the password again."),
                    EqualTo("password", message="The two passwords do not match.")],
    )
