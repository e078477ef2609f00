"""The protocol endpoints' doors: how an HTTP request reaches :class:`Protocol` and back.

Two doors, one protocol. The Flask views (:mod:`api.oauth.views`) serve every
endpoint. :class:`ProtocolDoor`, a WSGI middleware in front of Flask (on unless
``PROTOCOL_DOOR`` is off), answers ``POST /oauth/token`` and ``POST /oauth/introspect``
itself — every answer, errors included — with the same :class:`Protocol`, so it
saves only Flask's own request machinery (app context, routing, session, login,
CSRF, limiter, after-request hooks). Revocation writes through the portal's
services in an ORM session and always goes to Flask.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from authlib.common.security import is_secure_transport
from werkzeug.wsgi import get_host, get_input_stream

from api.oauth.protocol import (
    INTROSPECT_PATH,
    TOKEN_PATH,
    HttpRequest,
    HttpResponse,
    Protocol,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Where a door leaves what the access log may say of a protocol request.
ENVIRON_CLIENT_ID = "latchkey.client_id"
ENVIRON_ORG = "latchkey.org"


def read_body(environ: WSGIEnvironment, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit``: never cut short.

    A ``Content-Length`` above the limit is refused unread; a body without one
    (chunked) is read one byte past the limit, so an oversized one is refused
    too rather than parsed from a prefix.
    """
    length = environ.get("CONTENT_LENGTH") or ""
    if length.isdigit():
        size = int(length)
        if size > limit:
            return None
        return environ["wsgi.input"].read(size) if size else b""
    stream = get_input_stream(environ, safe_fallback=True, max_content_length=None)
    body = stream.read(limit + 1)
    return None if len(body) > limit else body


@functools.lru_cache(maxsize=256)
def _transport_allowed(scheme: str, host: str, insecure: str | None) -> bool:
    """Authlib's :func:`is_secure_transport` (https, or plain http to loopback), once per
    host and per value of ``AUTHLIB_INSECURE_TRANSPORT``, which that function reads."""
    return is_secure_transport(f"{scheme}://{host}/")


def _secure(environ: WSGIEnvironment) -> bool:
    scheme = environ.get("wsgi.url_scheme", "http")
    if scheme == "https":
        return True
    host = environ.get("HTTP_HOST")
    if host is None or len(host) > 255:  # no Host header: werkzeug's server name and port
        host = get_host(environ)
    return _transport_allowed(scheme, host, os.environ.get("AUTHLIB_INSECURE_TRANSPORT"))


def http_request(environ: WSGIEnvironment, limit: int) -> HttpRequest:
    """The :class:`HttpRequest` of a WSGI environ (inside any proxy fix)."""
    secure = _secure(environ)
    return HttpRequest(
        path=environ.get("PATH_INFO", ""),
        query=environ.get("QUERY_STRING", ""),
        mimetype=(environ.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower(),
        authorization=environ.get("HTTP_AUTHORIZATION", ""),
        body=read_body(environ, limit),
        remote_addr=environ.get("REMOTE_ADDR") or "",
        secure=secure,
    )


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def note(environ: WSGIEnvironment, response: HttpResponse) -> None:
    """Leave the client and org of a protocol request where the access log finds them."""
    if response.client_id:
        environ[ENVIRON_CLIENT_ID] = response.client_id
    if response.org:
        environ[ENVIRON_ORG] = response.org


class ProtocolDoor:
    """Answer ``POST /oauth/token`` and ``POST /oauth/introspect`` before Flask."""

    def __init__(self, wsgi_app: WSGIApplication, protocol: Protocol, *, limit: int,
                 headers: list[tuple[str, str]]) -> None:
        self.wsgi_app = wsgi_app
        self.limit = limit
        self.headers = headers
        self.handlers: dict[str, Callable[[HttpRequest], HttpResponse]] = {
            TOKEN_PATH: protocol.token, INTROSPECT_PATH: protocol.introspect}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        handler = self.handlers.get(environ.get("PATH_INFO", ""))
        if handler is None or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        response = handler(http_request(environ, self.limit))
        note(environ, response)
        start_response(status_line(response.status),
                       [*response.headers, *self.headers,
                        ("Content-Length", str(len(response.body)))])
        return [response.body]


def init_app(app: Any, protocol: Protocol, headers: list[tuple[str, str]]) -> None:
    """Put :class:`ProtocolDoor` in front of Flask (inside any proxy fix)."""
    app.wsgi_app = ProtocolDoor(app.wsgi_app, protocol, limit=protocol.settings.max_body,
                                headers=headers)
