"""Forms of the clients pages: create, edit, delete, and the secret-expiry inputs.

The forms check what a browser can get wrong (a missing name, a TTL that is
not a number, claims that are not a JSON object); the rules themselves (TTL
bounds, reserved claims, grants) live in ``portal.core`` and come back
as ``ValidationFailed`` errors that the views attach to the named field. The
APIs and scopes a client is granted are picked with
:class:`portal.forms.apis.GrantPicker`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    Field,
    HiddenField,
    IntegerField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    ValidationError,
    widgets,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length

from portal.core.clients.models import AuthMethod, ClientKind
from portal.core.errors import ValidationFailed
from portal.core.tokens.claims import load_custom_claims

KIND_CHOICES = [
    SelectChoice(ClientKind.ORG.value, "Organisation — acts for the org (token carries oid)"),
    SelectChoice(ClientKind.USER.value, "User — acts for one member (token also carries uid)"),
    SelectChoice(ClientKind.SERVICE.value, "Service — an internal service calling another"),
]
SECRET_METHOD_CHOICES = [
    SelectChoice(AuthMethod.CLIENT_SECRET_BASIC.value, "client_secret_basic (HTTP Basic)"),
    SelectChoice(AuthMethod.CLIENT_SECRET_POST.value,
                 "client_secret_post (credentials in the form body)"),
]
PRIVATE_KEY_JWT_CHOICE = SelectChoice(AuthMethod.PRIVATE_KEY_JWT.value,
                                      "private_key_jwt (signed assertion)")
EXPIRY_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def parse_claims(value: str | None) -> dict[str, Any]:
    """The custom-claims text as a JSON object; empty means none."""
    text = (value or "").strip()
    if not text:
        return {}
    claims = load_custom_claims(text)  # strict JSON: no NaN or Infinity, bounded nesting
    if not isinstance(claims, dict):
        raise ValidationFailed('custom claims must be a JSON object, like {"tier": "gold"}',
                               field="custom_claims")
    return claims


def parse_expiry(value: str | None) -> datetime | None:
    """A date or date-and-time typed in a datetime-local input, read as UTC; empty is None."""
    text = (value or "").strip()
    if not text:
        return None
    for fmt in EXPIRY_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValidationFailed("enter the expiry as a date and time, like 2030-01-31T12:00",
                           field="expires_at")


class MultiCheckboxField(SelectMultipleField):
    """A list of checkboxes (the template renders it in a fieldset)."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class ClientSettingsForm(FlaskForm):
    """The settings a client can change after it is created."""

    name = StringField("Name", validators=[
        InputRequired(message="Give the client a name."), Length(max=200)])
    description = TextAreaField("Description", validators=[Length(max=2000)])
    ttl = IntegerField("Token lifetime (seconds)", default=3600, validators=[
        InputRequired(message="Enter the token lifetime in seconds.")])
    custom_claims = TextAreaField("Custom claims (JSON object)", validators=[Length(max=8000)])
    auth_methods = MultiCheckboxField(
        "Authentication methods", choices=SECRET_METHOD_CHOICES,
        default=[c.value for c in SECRET_METHOD_CHOICES])

    def validate_ttl(self, field: Field) -> None:
        if field.data is None:
            raise ValidationError("The token lifetime must be a whole number of seconds.")

    def validate_custom_claims(self, field: Field) -> None:
        try:
            parse_claims(field.data)
        except ValidationFailed as e:
            raise ValidationError(e.message) from e

    def validate_auth_methods(self, field: Field) -> None:
        if not field.data:
            raise ValidationError("Choose at least one authentication method.")

    def settings(self) -> dict[str, Any]:
        """The keyword arguments of ``create_client`` / ``update_client`` from a valid form
        (the grants come from the view's :class:`portal.forms.apis.GrantPicker`)."""
        return {
            "name": self.name.data or "",
            "description": self.description.data or "",
            "ttl": self.ttl.data,
            "custom_claims": parse_claims(self.custom_claims.data),
            "auth_methods": list(self.auth_methods.data or []),
        }


class NewClientForm(ClientSettingsForm):
    """Creating a client; ``nonce`` makes the response that shows the secret a one-off."""

    kind = RadioField("Kind", choices=KIND_CHOICES, default=ClientKind.ORG.value,
                      validators=[InputRequired(message="Choose what kind of client this is.")])
    user = SelectField("Acts for (user clients only)", choices=[SelectChoice("", "—")], default="")
    nonce = HiddenField()


class DeleteClientForm(FlaskForm):
    """Deleting a client: its name, typed again."""

    confirm_name = StringField("Type the client's name to confirm", validators=[
        InputRequired(message="Type the client's name to confirm.")])


