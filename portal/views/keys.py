"""The org's signing keys (next, active, retired) with its public JWKS, and rotating them now."""

from __future__ import annotations

import json

from flask import flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_required

from portal.core import settings
from portal.core.db import get_session
from portal.core.errors import ValidationFailed
from portal.core.signing_keys import services as signing_keys
from portal.core.signing_keys.models import KeyState, SigningKey
from portal.core.types import utcnow
from portal.forms import sentence
from portal.forms.keys import RotateKeyForm
from portal.views import actor, bp, current_org, source_ip

#: Signing first, then the key that signs next, then the retired ones.
STATE_ORDER = {KeyState.ACTIVE: 0, KeyState.NEXT: 1, KeyState.RETIRED: 2}


def _render(form: RotateKeyForm, keys: list[SigningKey], status: int = 200) -> ResponseReturnValue:
    now = utcnow()
    published = [k.public_jwk for k in sorted(keys, key=lambda k: k.id) if k.is_published(now)]
    return render_template(
        "portal/keys/index.html",
        form=form,
        keys=sorted(keys, key=lambda k: (STATE_ORDER.get(k.state, 9), -k.id)),
        now=now,
        jwks_json=json.dumps({"keys": published}, indent=2),
        jwks_url=settings.issuer() + url_for("wellknown.jwks"),
    ), status


def _active_alg(keys: list[SigningKey]) -> str | None:
    return next((k.alg for k in keys if k.state is KeyState.ACTIVE), None)


@bp.get("/keys", endpoint="keys")
@login_required
def keys_index() -> ResponseReturnValue:
    """The org's signing keys and the JWKS resource servers verify its tokens with."""
    keys = signing_keys.org_keys(get_session(), org_id=current_org().id)
    form = RotateKeyForm(data={"alg": _active_alg(keys)})
    return _render(form, keys)


@bp.post("/keys/rotate", endpoint="keys_rotate")
@login_required
def keys_rotate() -> ResponseReturnValue:
    """Rotate now: ``next`` starts signing, ``active`` retires, a new ``next`` is published."""
    session = get_session()
    org_id = current_org().id
    form = RotateKeyForm()
    if form.validate_on_submit():
        before = signing_keys.org_keys(session, org_id=org_id)
        old = next((k for k in before if k.state is KeyState.ACTIVE), None)
        try:
            new = signing_keys.rotate(session, org_id=org_id, alg=form.alg.data, actor=actor(),
                                      source_ip=source_ip())
        except ValidationFailed as e:
            session.rollback()
            form.alg.errors = [*form.alg.errors, sentence(e.message)]
        else:
            session.commit()
            signing_keys.keyring().forget_org(org_id)  # rotate does too; cheap to be sure
            message = f"Rotated: key {new.kid} ({new.alg}) now signs new tokens."
            if old is not None and old.is_published(utcnow()):
                message += (f" The old key {old.kid} stays in the JWKS until "
                            f"{old.publish_until:%Y-%m-%d %H:%M} UTC, when its last token "
                            "expires.")
            elif old is not None:
                message += f" The old key {old.kid} signed no live token, so it left the JWKS."
            flash(message, "success")
            return redirect(url_for("portal.keys"))
    return _render(form, signing_keys.org_keys(session, org_id=org_id), status=400)
