"""FlaskForm classes, one module per views module, and how domain errors reach a form."""

from __future__ import annotations

from collections.abc import Mapping

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


def attach_error(form: FlaskForm, error: ValidationFailed,
                 elsewhere: Mapping[str, list[str]] | None = None) -> bool:
    """Show each of a domain error's failures next to the field it names.

    ``elsewhere`` maps names that are not fields of ``form`` (a picker's
    ``grants``) to the error list that shows them. A failure with no place goes
    to ``form.form_errors`` (shown in the error summary). A field that already
    shows the same message does not get it twice. True when every failure
    found a field.
    """
    placed_all = True
    for failure in error.errors:
        message = sentence(failure.message)
        name = failure.field or ""
        target: list[str] | None = None
        if elsewhere is not None and name in elsewhere:
            target = elsewhere[name]
        else:
            field = form._fields.get(name) or form._fields.get(FIELD_ALIASES.get(name, ""))
            if field is not None and not isinstance(field, HiddenField):
                if not isinstance(field.errors, list):
                    field.errors = list(field.errors)
                target = field.errors
        if target is None:
            placed_all = False
            target = form.form_errors
        if message not in target:
            target.append(message)
    return placed_all
