"""``/api/v1/signing-keys``: the org's signing keys, and rotating them."""

from __future__ import annotations

from flask import Response

from api.v1 import auth
from api.v1.common import KEYS, bp, problems, respond, session
from api.v1.schemas import RotateRequest, SigningKeyList, SigningKeyOut
from portal.core.errors import RotationTooSoon
from portal.core.signing_keys import services as signing_keys

TAGS = [KEYS]


@bp.get("/signing-keys", tags=TAGS, responses={200: SigningKeyList})
def list_signing_keys() -> Response:
    """The org's next, active and retired keys with their public JWKs."""
    keys = signing_keys.org_keys(session(), org_id=auth.org_id())
    return respond(SigningKeyList(items=[SigningKeyOut.model_validate(k) for k in keys]))


@bp.post("/signing-keys/rotate", tags=TAGS,
         responses={200: SigningKeyOut,
                    **problems(409, s409="The next key is not published long enough yet")})
def rotate_signing_key(body: RotateRequest) -> Response:
    """Promote the next key to active, retire the active one, publish a new next key."""
    try:
        key = signing_keys.rotate(session(), org_id=auth.org_id(), alg=body.alg,
                                  actor=auth.current_actor())
    except RotationTooSoon:
        session().commit()  # the refusal may have published a next key: keep it
        raise
    session().commit()
    return respond(SigningKeyOut.model_validate(key))
