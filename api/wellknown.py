"""JWKS (RFC 7517) and authorization-server metadata (RFC 8414).

Both documents change only at a key rotation (the JWKS) or never while the
process runs (the metadata), and resource servers fetch them often. The Flask
views below build them; :class:`WellKnownFastPath`, a WSGI middleware in front
of the whole app, then replays the very response Flask produced (status,
headers, body) for as long as the cached document is current, without running
Flask's request machinery (context, routing, session, login, CSRF, limiter,
after-request hooks) and without touching the database.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.http import parse_etags

from api.oauth.protocol import (
    ASSERTION_ALGS,
    AUTH_METHODS,
    INTROSPECT_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
)
from portal.core import settings
from portal.core.apis.services import deployment_scopes
from portal.core.db import get_session
from portal.core.signing_keys.services import EXTENSION_KEY as EXTENSION_KEYRING
from portal.core.signing_keys.services import SUPPORTED_ALGS, KeyRing, keyring

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

bp = Blueprint("wellknown", __name__)

JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
METADATA_KEY = "latchkey.metadata"


def _cached_json(body: bytes, etag: str, max_age: int) -> Response:
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        response = Response(body, mimetype="application/json")
    response.set_etag(etag)
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    return response


@bp.get(JWKS_PATH)
def jwks() -> Response:
    """Every published public key of every org: next, active, and retired until unused."""
    body, etag = keyring().jwks()
    return _cached_json(body, etag, int(current_app.config["JWKS_MAX_AGE"]))


def metadata_document() -> dict[str, Any]:
    """RFC 8414 metadata; lists only what this server really does.

    §3.2: "Zero-element arrays MUST be omitted from the response", so a list
    that would be empty is left out: ``response_types_supported`` (no
    authorization endpoint while the server does client credentials only), and
    ``scopes_supported`` unless ``SCOPES_SUPPORTED`` is set.
    """
    issuer = settings.issuer()
    doc: dict[str, Any] = {
        "issuer": issuer,
        "token_endpoint": issuer + TOKEN_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "introspection_endpoint": issuer + INTROSPECT_PATH,
        "revocation_endpoint": issuer + REVOKE_PATH,
        # No authorization endpoint (client credentials only), so no response types.
        "response_types_supported": [],
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "access_token_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "resource_indicators_supported": True,
    }
    # The deployment APIs' scopes only: an org's API scopes are its own business.
    doc["scopes_supported"] = deployment_scopes(get_session())
    # RFC 8414 §3.2: no member is an empty array (an absent one says the same).
    return {name: value for name, value in doc.items() if value != []}


def _fresh_metadata(app: Flask) -> tuple[bytes, str, float] | None:
    """The cached metadata while younger than ``KEY_CACHE_SECONDS`` (the operator may
    add a deployment API's scopes from another process at any time)."""
    cached: tuple[bytes, str, float] | None = app.extensions.get(METADATA_KEY)
    max_age = float(app.config["KEY_CACHE_SECONDS"])
    return cached if cached is not None and time.monotonic() - cached[2] < max_age else None


@bp.get(METADATA_PATHS[0])
@bp.get(METADATA_PATHS[1])
def metadata() -> Response:
    """The same RFC 8414 document at both well-known paths; rebuilt every few seconds."""
    cached = _fresh_metadata(current_app)
    if cached is None:
        body = json.dumps(metadata_document(), separators=(",", ":")).encode()
        cached = (body, hashlib.sha256(body).hexdigest()[:32], time.monotonic())
        current_app.extensions[METADATA_KEY] = cached
    return _cached_json(cached[0], cached[1], 3600)


# -- the fast path -----------------------------------------------------------------------

#: Response headers that belong to one response, never replayed.
_PER_RESPONSE = frozenset({"date", "server"})


class WellKnownFastPath:
    """Replay Flask's own JWKS and metadata responses while their documents are current.

    The first GET (or HEAD) of a path, and any request after the document
    changed or its cache expired, goes through Flask; a 200 or 304 that Flask
    produced is captured with the ETag it carries. Later requests with the same
    outcome (200, or 304 for a matching ``If-None-Match``) get the captured
    status, headers and body directly, as long as that ETag is still the one
    the app would send: for the JWKS, while the process's key ring holds a
    fresh document with that ETag (``KEY_CACHE_SECONDS``; a rotation in this
    process clears it at once); for the metadata, while the document built
    from configuration and the deployment APIs' scopes is younger than
    ``KEY_CACHE_SECONDS``. Anything else (other methods, query strings, a
    response that sets a cookie) passes through untouched.
    """

    def __init__(self, app: Flask, wsgi_app: WSGIApplication) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self._lock = threading.Lock()
        # (path, status) -> (etag, status line, headers, body)
        self._captured: dict[tuple[str, int], tuple[str, str, list[tuple[str, str]], bytes]] = {}

    def _current_etag(self, path: str) -> str | None:
        if path == JWKS_PATH:
            ring: KeyRing = self.app.extensions[EXTENSION_KEYRING]
            return ring.fresh_jwks_etag()
        cached = _fresh_metadata(self.app)
        return cached[1] if cached is not None else None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        if (path != JWKS_PATH and path not in METADATA_PATHS) or method not in ("GET", "HEAD") \
                or environ.get("QUERY_STRING"):
            return self.wsgi_app(environ, start_response)
        etag = self._current_etag(path)
        if etag is not None:
            conditional = environ.get("HTTP_IF_NONE_MATCH")
            status = 304 if conditional and parse_etags(conditional).contains(etag) else 200
            hit = self._captured.get((path, status))
            if hit is not None and hit[0] == etag:
                start_response(hit[1], list(hit[2]))
                return [b""] if method == "HEAD" else [hit[3]]
        return self._capture(path, method, environ, start_response)

    def _capture(self, path: str, method: str, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        seen: dict[str, Any] = {}

        def capturing_start_response(status: str, headers: list[tuple[str, str]],
                                     exc_info: Any = None) -> Callable[[bytes], object]:
            seen["status"], seen["headers"] = status, headers
            return start_response(status, headers, exc_info)  # type: ignore[call-arg]

        chunks = self.wsgi_app(environ, capturing_start_response)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status_line: str = seen.get("status", "")
        code = int(status_line[:3]) if status_line[:3].isdigit() else 0
        headers: list[tuple[str, str]] = seen.get("headers", [])
        etag = next((v.strip('"') for k, v in headers if k.lower() == "etag"), None)
        names = {k.lower() for k, _v in headers}
        if code in (200, 304) and etag and method == "GET" and "set-cookie" not in names:
            kept = [(k, v) for k, v in headers if k.lower() not in _PER_RESPONSE]
            with self._lock:
                self._captured[(path, code)] = (etag, status_line, kept, body)
        return [body]


def init_app(app: Flask) -> None:
    """Put :class:`WellKnownFastPath` in front of the app's whole WSGI stack."""
    app.wsgi_app = WellKnownFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
