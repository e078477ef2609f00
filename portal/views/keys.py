"""The org's signing keys (next, active, retired) with its public JWKS, and rotating them now."""

from __future__ import annotations

import json

from flask import flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_required

from portal.core import settings
from portal.core.db import get_session
from portal.core.errors import RotationTooSoon, ValidationFailed
from portal.core.signing_keys import services as signing_keys
from portal.core.signing_keys.models import KeyState, SigningKey
from portal.core.types import utcnow
from portal.forms import sentence
from portal.forms.keys import RotateKeyForm
from portal.views import bp, can_manage, current_actor, current_org
from portal.views.confirm import Confirmation, confirm_first

#: Signing first, then the key that signs next, then the retired ones.
STATE_ORDER = {KeyState.ACTIVE: 0, KeyState.NEXT: 1, KeyState.RETIRED: 2}


def _render(form: RotateKeyForm, keys: list[SigningKey], status: int = 200) -> ResponseReturnValue:
    now = utcnow()
    published = [k.public_jwk for k in sorted(keys, key=lambda k: k.id) if k.is_published(now)]
    upcoming = next((k for k in keys if k.state is KeyState.NEXT), None)
    ready = signing_keys.ready_at(upcoming) if upcoming is not None else None
    return render_template(
        "portal/keys/index.html",
        form=form,
        keys=sorted(keys, key=lambda k: (STATE_ORDER.get(k.state, 9), -k.id)),
        now=now,
        next_ready_at=ready if ready is not None and ready >= now else None,
        publication_delay=int(signing_keys.publication_delay().total_seconds()),
        jwks_json=json.dumps({"keys": published}, indent=2),
        jwks_url=settings.issuer() + url_for("wellknown.jwks"),
    ), status


@bp.get("/keys", endpoint="keys")
@login_required
def keys_index() -> ResponseReturnValue:
    """The org's signing keys and the JWKS resource servers verify its tokens with."""
    keys = signing_keys.org_keys(get_session(), org_id=current_org().id)
    form = RotateKeyForm(data={"alg": signing_keys.default_next_alg(keys)})
    return _render(form, keys)


def _confirm_rotate() -> Confirmation:
    return Confirmation(
        title="Rotate the signing key now?",
        consequence="The next key starts signing new tokens at once and the active key "
                    "retires; tokens it signed stay valid until they expire. Resource servers "
                    "that cache the JWKS must know the next key (it has been published).",
        button="Rotate signing key", back=url_for("portal.keys"),
        carry={"alg": tuple(signing_keys.SUPPORTED_ALGS)})


@bp.route("/keys/rotate", methods=["GET", "POST"], endpoint="keys_rotate")
@login_required
@confirm_first(_confirm_rotate, allowed=can_manage)
def keys_rotate() -> ResponseReturnValue:
    """Rotate now: ``next`` starts signing, ``active`` retires, a new ``next`` is published."""
    session = get_session()
    org_id = current_org().id
    form = RotateKeyForm()
    if form.validate_on_submit():
        before = signing_keys.org_keys(session, org_id=org_id)
        old = next((k for k in before if k.state is KeyState.ACTIVE), None)
        try:
            new = signing_keys.rotate(session, org_id=org_id, alg=form.alg.data,
                                      actor=current_actor())
        except ValidationFailed as e:
            session.rollback()
            form.alg.errors = [*form.alg.errors, sentence(e.message)]
        except RotationTooSoon as e:
            session.commit()  # keeps a next key the refusal may have published
            form.form_errors.append(e.message)
            return _render(form, signing_keys.org_keys(session, org_id=org_id), status=409)
        else:
            session.commit()
            signing_keys.keyring().forget_org(org_id)  # rotate does too; cheap to be sure
            message = f"Rotated: key {new.kid} ({new.alg}) now signs new tokens."
            if old is not None and old.publish_until is not None:
                message += (f" The old key {old.kid} stays in the JWKS until its last token "
                            f"expires, {old.publish_until:%Y-%m-%d %H:%M} UTC at the latest.")
            flash(message, "success")
            return redirect(url_for("portal.keys"))
    return _render(form, signing_keys.org_keys(session, org_id=org_id), status=400)
