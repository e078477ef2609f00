"""``/oauth/token``, ``/oauth/introspect`` and ``/oauth/revoke``."""

from __future__ import annotations

from typing import Any

from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error, UnauthorizedClientError
from flask import Blueprint, Response, json, request

from api.oauth.params import read_params
from api.oauth.server import (
    INTROSPECT_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    LatchkeyRequest,
    authenticate_caller,
    check_failure_rate,
    get_server,
    record_failure,
    source_ip,
)
from portal.core.db import autocommit, get_session
from portal.core.errors import ValidationFailed
from portal.core.tokens import services as tokens
from portal.core.tokens.claims import parse_scope
from portal.core.types import utcnow
from portal.core.usage import services as usage
from portal.core.usage.models import UsageKind

bp = Blueprint("oauth", __name__)


def _prepare(*, hot: bool = False) -> LatchkeyRequest:
    """Rate-limit check and strict parsing shared by the three endpoints.

    ``hot`` (token, introspection): the request's reads run in autocommit
    mode, so they take no SQLite write lock and cost no BEGIN on PostgreSQL;
    the write at the end is one statement, or gets its own short transaction.
    """
    check_failure_rate()  # first: a refused request costs no database connection
    if hot:
        autocommit(get_session())
    req = LatchkeyRequest(read_params(request))
    request.latchkey_oauth = req  # type: ignore[attr-defined]
    return req


def _token_param(req: LatchkeyRequest) -> str:
    """The ``token`` parameter of introspection and revocation (RFC 7662, RFC 7009)."""
    value = req.params.data.get("token")
    if value is None:
        raise InvalidRequestError("Missing token parameter.")
    return value


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=status, headers=default_json_headers)


@bp.post(TOKEN_PATH)
def token() -> Any:
    """Issue an access token (RFC 6749 §4.4, client credentials)."""
    server = get_server()
    try:
        req = _prepare(hot=True)
        if not req.params.data.get("grant_type"):
            raise InvalidRequestError("Missing grant_type parameter.")
    except OAuth2Error as error:
        partial = getattr(request, "latchkey_oauth", None)
        if partial is not None:
            return server.handle_error_response(partial, error)
        record_failure(None, error)
        return server.handle_response(*error())
    return server.create_token_response()


@bp.post(INTROSPECT_PATH)
def introspect() -> Any:
    """RFC 7662: whether a token is active, for a client or API key of the same org."""
    server = get_server()
    try:
        req = _prepare(hot=True)
        caller = authenticate_caller(server, req)
        token_value = _token_param(req)
        try:
            wanted = parse_scope(req.params.data.get("scope")) or []
        except ValidationFailed as e:
            raise InvalidRequestError("The scope parameter is malformed.") from e
    except OAuth2Error as error:
        return server.handle_response(*error())
    session = get_session()
    now = utcnow()
    body: dict[str, Any] = {"active": False}
    record = None
    claims = tokens.decode_token(session, token_value)
    if claims is not None:
        record = tokens.find_live_record(session, claims, org_id=caller.org_id, now=now)
        if record is not None and set(wanted) <= set(record.scopes):
            body = tokens.introspection_payload(claims)
    usage.insert_event(  # one statement: atomic on its own in autocommit mode
        session, kind=UsageKind.TOKEN_INTROSPECTED, org_id=caller.org_id,
        client_id=record.client_id if record is not None else None,
        client_ref=caller.label[:64], reason="active" if body["active"] else "inactive",
        jti=record.jti if record is not None else None, source_ip=source_ip(), now=now,
    )
    session.commit()
    return _json(200, body)


@bp.post(REVOKE_PATH)
def revoke() -> Any:
    """RFC 7009: a client revokes its own token (an org API key, any of the org's).

    Unknown, malformed, expired and other orgs' tokens answer 200 and change nothing.
    """
    server = get_server()
    try:
        req = _prepare()
        caller = authenticate_caller(server, req)
        token_value = _token_param(req)
        session = get_session()
        claims = tokens.decode_token(session, token_value)
        record = (
            tokens.find_record(session, org_id=caller.org_id, jti=str(claims["jti"]))
            if claims is not None
            else None
        )
        own_client = caller.client
        if record is not None and own_client is not None and record.client_id != own_client.id:
            raise UnauthorizedClientError(description="The token was not issued to this client.")
    except OAuth2Error as error:
        return server.handle_response(*error())
    if record is not None:
        now = utcnow()
        if tokens.revoke(session, record, by=caller.label, source_ip=source_ip(),
                         audit_change=caller.api_key is not None, now=now):
            usage.record_event(
                session, kind=UsageKind.TOKEN_REVOKED, org_id=record.org_id,
                client_id=record.client_id, client_ref=caller.label[:64], jti=record.jti,
                source_ip=source_ip(), now=now,
            )
        session.commit()
    return _json(200, {})
