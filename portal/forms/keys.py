"""Forms of the key pages: rotating the org's signing key, creating and revoking API keys."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length

from portal.core.signing_keys.services import SUPPORTED_ALGS

ALG_LABELS = {
    "RS256": "RS256 (RSA 2048, the most widely supported)",
    "ES256": "ES256 (ECDSA P-256, small and fast)",
    "EdDSA": "EdDSA (Ed25519)",
}


class RotateKeyForm(FlaskForm):
    """Rotate now; ``alg`` is the algorithm of the new ``next`` key."""

    alg = SelectField("Algorithm of the new next key",
                      choices=[SelectChoice(a, ALG_LABELS.get(a, a)) for a in SUPPORTED_ALGS])


class ApiKeyForm(FlaskForm):
    """Create an API key; ``nonce`` makes the response that shows it a one-off."""

    name = StringField("Name", validators=[
        InputRequired(message="Give the key a name, e.g. what uses it."), Length(max=200)])
    role = SelectField("Role", default="introspect", choices=[
        SelectChoice("introspect", "introspect: token introspection and revocation only"),
        SelectChoice("viewer", "viewer: also every read of the management API"),
        SelectChoice("admin", "admin: also every change of the management API"),
    ])
    nonce = HiddenField()

