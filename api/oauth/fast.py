"""The token endpoint's and introspection's fast path: the common success, without Flask.

Most requests to ``/oauth/token`` are a client with a valid secret asking
for a token it may have; most to ``/oauth/introspect`` are such a client
asking about a token. :class:`ProtocolFastPath`, a WSGI middleware in front
of Flask, answers exactly those requests itself: the same strict body
parsing (:func:`api.oauth.params.parse_body`), the same failure rate limit,
the same rules (:func:`portal.core.tokens.services.sign_token`), one read
and one write on a bare driver connection (:mod:`portal.core.hotpath`), and
the same response body and headers (Authlib's JSON headers and the portal's
security headers; not Flask's ``Vary: Cookie``, as no cookie is read).

Anything else, and anything it is not sure of, goes to the Flask views
untouched, with the body it read put back, before it has written anything:
every error, ``private_key_jwt``, API keys, unknown parameters, large or
chunked bodies, plain http off loopback. Those views then give the RFC's answer and record the
failure, as if the fast path were not there.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from authlib.common.security import is_secure_transport
from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Flask, current_app
from werkzeug.wsgi import get_host

from api.oauth.params import Params, parse_body
from api.oauth.server import (
    INTROSPECT_PATH,
    TOKEN_PATH,
    check_failure_rate,
    client_label,
    detect_auth_method,
    presented_secret,
    requested_audiences,
)
from portal.core.clients.models import AuthMethod
from portal.core.errors import LatchkeyError
from portal.core.hotpath import (
    authenticate_secret,
    authenticate_with_record,
    hot_path,
    insert_event,
    record_token,
)
from portal.core.tokens import services as tokens
from portal.core.tokens.claims import parse_scope
from portal.core.tokens.models import TokenSource
from portal.core.types import utcnow
from portal.core.usage import services as usage
from portal.core.usage.models import UsageKind
from portal.extensions import SECURITY_HEADERS

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("latchkey.oauth")

#: Bodies larger than this (or than MAX_CONTENT_LENGTH) go to Flask.
MAX_BODY = 16 * 1024
#: The only parameters the fast path understands; any other sends the request to Flask.
TOKEN_PARAMS = frozenset({"grant_type", "scope", "audience", "resource", "client_id",
                          "client_secret"})
INTROSPECT_PARAMS = frozenset({"token", "token_type_hint", "scope", "client_id",
                               "client_secret"})
BASIC = AuthMethod.CLIENT_SECRET_BASIC.value
POST = AuthMethod.CLIENT_SECRET_POST.value


def read_body(environ: WSGIEnvironment, limit: int) -> bytes | None:
    """The request body if it has a Content-Length of at most ``limit``; else None, unread."""
    length = environ.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > limit or environ.get("HTTP_TRANSFER_ENCODING"):
        return None
    size = int(length)
    return environ["wsgi.input"].read(size) if size else b""


def body_params(environ: WSGIEnvironment, body: bytes, allowed: frozenset[str]) -> Params | None:
    """The body's parameters if they are well formed and all in ``allowed``."""
    mimetype = (environ.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower()
    try:
        params = parse_body(mimetype, body)
    except OAuth2Error:
        return None
    if not allowed.issuperset(params.lists):
        return None
    return params


def secret_credentials(environ: WSGIEnvironment, params: Params) -> tuple[str, str, str] | None:
    """``(method, client_id, secret)`` for well-formed Basic or body credentials, else None.

    An Authorization header other than Basic (an API key, say) is Flask's to judge.
    """
    header = environ.get("HTTP_AUTHORIZATION", "")
    try:
        method = detect_auth_method(header, params)
        if method not in (BASIC, POST) or (header and method != BASIC):
            return None
        client_id, secret = presented_secret(header, params, method)
    except OAuth2Error:
        return None
    return method, client_id, secret


@functools.lru_cache(maxsize=256)
def transport_allowed(scheme: str, host: str, insecure: str | None) -> bool:
    """Authlib's :func:`is_secure_transport` for a request to ``host``, once per host
    (and per value of ``AUTHLIB_INSECURE_TRANSPORT``, which that function reads)."""
    return is_secure_transport(f"{scheme}://{host}/")


def json_body(document: dict[str, Any]) -> bytes:
    """``document`` as the app's JSON provider writes it (``flask.json.dumps``: its
    key order and escaping), without the provider's layers in between."""
    provider = current_app.json
    return json.dumps(document, ensure_ascii=getattr(provider, "ensure_ascii", True),
                      sort_keys=getattr(provider, "sort_keys", True)).encode()


def not_refused(ip: str) -> bool:
    """Whether this address may still try (the failure rate limit); Flask answers the 429."""
    try:
        check_failure_rate(ip)
    except OAuth2Error:
        return False
    return True


def issue(environ: WSGIEnvironment, params: Params) -> bytes | None:
    """A token response body, the token recorded; None when Flask must answer."""
    if params.data.get("grant_type") != "client_credentials":
        return None
    credentials = secret_credentials(environ, params)
    ip = environ.get("REMOTE_ADDR") or ""
    if credentials is None or not not_refused(ip):
        return None
    method, client_id, secret = credentials
    try:
        scopes = parse_scope(params.data.get("scope"))
        audiences = requested_audiences(params)
    except (LatchkeyError, OAuth2Error):
        return None
    if scopes == []:
        return None
    hot = hot_path()
    now = utcnow()
    with hot.connections.connection() as connection:
        client = authenticate_secret(hot, connection, client_id, secret)
        if client is None or method not in client.auth_methods or not client.may_get_tokens(now):
            return None
        try:
            signed = tokens.sign_token(
                None, client=client, org_public_id=client.org_public_id,
                scopes=scopes, audiences=audiences, source=TokenSource.TOKEN_ENDPOINT, now=now,
            )
        except LatchkeyError:
            return None
        event = usage.event_values(
            kind=UsageKind.TOKEN_ISSUED, org_id=client.org_id, client_id=client.id,
            client_ref=client.client_id, jti=signed.values["jti"], source_ip=ip, now=now,
        )
        answer = json_body({  # as Authlib's Flask handle_response writes it
            "access_token": signed.access_token,
            "token_type": "Bearer",
            "expires_in": signed.expires_in,
            "scope": signed.claims["scope"],
        })
        record_token(hot, connection, client, signed, event, now=now)
    return answer


def introspect(environ: WSGIEnvironment, params: Params) -> bytes | None:
    """An RFC 7662 response body, the usage event recorded; None when Flask must answer."""
    token = params.data.get("token")
    credentials = secret_credentials(environ, params)
    ip = environ.get("REMOTE_ADDR") or ""
    if token is None or credentials is None or not not_refused(ip):
        return None
    method, client_id, secret = credentials
    try:
        wanted = parse_scope(params.data.get("scope")) or []
    except LatchkeyError:
        return None
    hot = hot_path()
    now = utcnow()
    with hot.connections.connection() as connection:
        # One read: the caller and its org's record of the jti the token claims;
        # the claim counts only once verify_token has verified the token.
        unverified = tokens.read_token(token)
        found = authenticate_with_record(
            hot, connection, client_id, secret,
            unverified.claimed_jti if unverified is not None else None,
        )
        if found is None:
            return None
        caller, record = found
        if method not in caller.auth_methods or not caller.enabled \
                or not caller.secret_is_active(now):
            return None
        body: dict[str, Any] = {"active": False}
        # The record was found by the jti of these very claims: it is theirs once they verify.
        claims = tokens.verify_token(None, unverified) if record is not None else None
        if claims is None or record is None or not record.is_active(now):
            record = None
        elif set(wanted) <= set(record.scopes):
            body = tokens.introspection_payload(claims)
        event = usage.event_values(
            kind=UsageKind.TOKEN_INTROSPECTED, org_id=caller.org_id,
            client_id=record.client_id if record is not None else None,
            client_ref=client_label(caller.client_id),
            reason="active" if body["active"] else "inactive",
            jti=record.jti if record is not None else None, source_ip=ip, now=now,
        )
        answer = json_body(body)  # as the Flask view writes it
        insert_event(hot, connection, event)
    return answer


class ProtocolFastPath:
    """Answer the token endpoint's and introspection's common successes before Flask."""

    handlers = {TOKEN_PATH: (issue, TOKEN_PARAMS), INTROSPECT_PATH: (introspect, INTROSPECT_PARAMS)}
    headers = [*default_json_headers, *SECURITY_HEADERS.items()]

    def __init__(self, app: Flask, wsgi_app: WSGIApplication) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        limit = app.config.get("MAX_CONTENT_LENGTH")
        self.max_body = min(MAX_BODY, int(limit)) if limit else MAX_BODY

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        found = self.handlers.get(environ.get("PATH_INFO", ""))
        if found is None or environ.get("REQUEST_METHOD") != "POST" \
                or environ.get("QUERY_STRING"):
            return self.wsgi_app(environ, start_response)
        body = read_body(environ, self.max_body)
        if body is None:
            return self.wsgi_app(environ, start_response)
        answer = self._answer(environ, body, *found)
        if answer is not None:
            start_response("200 OK", [*self.headers, ("Content-Length", str(len(answer)))])
            return [answer]
        environ["wsgi.input"] = io.BytesIO(body)  # Flask reads it as if nobody had
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.wsgi_app(environ, start_response)

    def _answer(self, environ: WSGIEnvironment, body: bytes, handler: Any,
                allowed: frozenset[str]) -> bytes | None:
        # As Authlib's OAuth2Request: plain http only on loopback.
        scheme = environ.get("wsgi.url_scheme", "http")
        if scheme != "https" and not transport_allowed(
            scheme, get_host(environ), os.environ.get("AUTHLIB_INSECURE_TRANSPORT")
        ):
            return None
        params = body_params(environ, body, allowed)
        if params is None:
            return None
        try:
            with self.app.app_context():
                answer: bytes | None = handler(environ, params)
                return answer
        except Exception:
            # Nothing was written (the write is the last step, and atomic):
            # Flask's view handles the request from the start.
            log.warning("fast path gave the request to Flask after an error", exc_info=True)
            return None


def init_app(app: Flask) -> None:
    """Put :class:`ProtocolFastPath` in front of Flask (inside any proxy fix)."""
    app.wsgi_app = ProtocolFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
