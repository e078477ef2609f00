"""``/oauth/token``, ``/oauth/introspect`` and ``/oauth/revoke``: the Flask door."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, request

from api.oauth.door import http_request, note
from api.oauth.protocol import (
    INTROSPECT_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    Caller,
    HttpRequest,
    HttpResponse,
    Protocol,
)
from portal.core.actor import Actor
from portal.core.db import get_session
from portal.core.tokens import services as tokens
from portal.core.tokens.exchange import TokenRecord

bp = Blueprint("oauth", __name__)
EXTENSION_KEY = "latchkey.protocol"


def protocol() -> Protocol:
    found: Protocol = current_app.extensions[EXTENSION_KEY]
    return found


def respond(response: HttpResponse) -> Response:
    note(request.environ, response)
    return Response(response.body, status=response.status, headers=response.headers)


def _request() -> HttpRequest:
    return http_request(request.environ, protocol().settings.max_body)


@bp.post(TOKEN_PATH)
def token() -> Response:
    """Issue an access token (RFC 6749 §4.4, client credentials)."""
    return respond(protocol().token(_request()))


@bp.post(INTROSPECT_PATH)
def introspect() -> Response:
    """RFC 7662: whether a token is active, for a client or API key of the same org."""
    return respond(protocol().introspect(_request()))


@bp.post(REVOKE_PATH)
def revoke() -> Response:
    """RFC 7009: a client revokes its own token (an org API key, any of the org's)."""
    session = get_session()

    def revoke_record(record: TokenRecord, claims: Mapping[str, Any], caller: Caller,
                      now: datetime) -> bool:
        actor = Actor(caller.label, request.remote_addr or "")
        revoked = tokens.revoke_issued(session, record, claims, actor=actor,
                                       audit_change=caller.api_key is not None, now=now)
        session.commit()
        return revoked

    return respond(protocol().revoke(_request(), revoke_record))
