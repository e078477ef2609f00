"""Forms of the token pages: minting a test token and revoking one.

The forms check shape (a number, a JSON object); the rules (granted APIs and
scopes, TTL bounds, reserved claims) are the token service's, and the views
put its ``ValidationFailed`` errors back on the field they name.
"""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import (
    Field,
    HiddenField,
    IntegerField,
    TextAreaField,
    ValidationError,
)
from wtforms.validators import DataRequired, InputRequired, Length

from portal.core.errors import ValidationFailed
from portal.core.tokens.jws import MAX_TOKEN_LENGTH
from portal.forms import sentence
from portal.forms.clients import parse_claims


class MintForm(FlaskForm):
    """Mint a token for the client chosen with the picker (``client``)."""

    client = HiddenField()
    # The APIs and scopes come from the view's portal.forms.apis.AudiencePicker.
    ttl = IntegerField("Lifetime (seconds)", validators=[
        InputRequired(message="Enter the token lifetime in seconds.")])
    custom_claims = TextAreaField("Custom claims (JSON object)", validators=[Length(max=8000)])
    nonce = HiddenField()

    def validate_ttl(self, field: Field) -> None:
        if field.data is None and not field.errors:  # "abc" already has its parse error
            raise ValidationError("The lifetime must be a whole number of seconds.")

    def validate_custom_claims(self, field: Field) -> None:
        try:
            parse_claims(field.data)
        except ValidationFailed as e:
            raise ValidationError(sentence(e.message)) from e

    def claims(self) -> dict[str, Any]:
        """The custom claims of a valid form (empty when none)."""
        return parse_claims(self.custom_claims.data)


def _strip(value: str | None) -> str | None:
    return value.strip() if value else value


class RevokeForm(FlaskForm):
    """Revoke one token, named by the token itself or its ``jti``."""

    token = TextAreaField("Access token or jti", filters=[_strip], validators=[
        DataRequired(message="Paste an access token or its jti."),
        Length(max=MAX_TOKEN_LENGTH, message="That is longer than any token this server issues."),
    ])


