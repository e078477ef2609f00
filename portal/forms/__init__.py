"""FlaskForm classes, one module per views module, and how domain errors reach a form."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField

from portal.core.errors import ValidationFailed

#: Field names of ``ValidationFailed`` errors -> the form field showing them, when the
#: form has no field of that name itself.
FIELD_ALIASES = {"token_ttl": "ttl", "jwks": "auth_methods", "scope": "scopes",
                 "audiences": "audience"}


def sentence(message: str) -> str:
    """A domain message ("the expiry must be …") as a sentence for the page.

    A message that starts with an email address keeps it as it is.
    """
    if "@" not in message.split(" ", 1)[0]:
        message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


def attach_error(form: FlaskForm, error: ValidationFailed) -> bool:
    """Show a domain error next to the field it names; False when the form has no such field."""
    name = error.field or ""
    field = form._fields.get(name) or form._fields.get(FIELD_ALIASES.get(name, ""))
    if field is None or isinstance(field, HiddenField):
        return False
    field.errors = [*field.errors, sentence(error.message)]
    return True
