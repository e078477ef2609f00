"""The outermost WSGI layer: request id, latency histogram and access log for every request.

It wraps everything else in ``app.wsgi_app`` (the JWKS/metadata replay, the
proxy fix, the protocol fast path, Flask), so it sees the requests the fast
paths answer without Flask as well as Flask's.

**Request id.** ``X-Request-Id`` from the request is used only behind a trusted
proxy (``PROXY_FIX`` > 0) and only if it is 1-128 characters of
``[A-Za-z0-9._:-]``; otherwise one is generated. It is returned on every
response, kept in ``environ["latchkey.request_id"]`` and in
:data:`portal.ops.logs.REQUEST_ID` for every log line of the request.

**Route names.** The histogram's ``route`` label is a Flask endpoint name
(``oauth.token``, ``portal.client_detail``, ``static``...) or, for a request
no route matched, ``unmatched``: a set bounded by the code, never the raw path.
Paths the fast paths answer have fixed names (:data:`FIXED_ROUTES`); Flask's
endpoint is put in ``environ["latchkey.route"]`` when its request ends.

**What the protocol code tells it** (WSGI environ keys, set by whoever knows
them, the fast path or a Flask view): ``latchkey.client_id`` (the client id a
request authenticated as, or presented) and ``latchkey.org`` (the org's public
id, the token's ``oid``). Both appear in the access log when set; neither is
ever a metric label.

**Duration** runs from the moment the request reaches this layer until the
application returns its response iterable: the whole of the work for every
response but a streamed one (a CSV export), whose body is produced later.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from portal.ops import logs, metrics

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

ENV_REQUEST_ID = "latchkey.request_id"
ENV_ROUTE = "latchkey.route"
ENV_CLIENT_ID = "latchkey.client_id"
ENV_ORG = "latchkey.org"

#: Paths answered (sometimes) without Flask, named as Flask names their views.
FIXED_ROUTES = {
    "/oauth/token": "oauth.token",
    "/oauth/introspect": "oauth.introspect",
    "/oauth/revoke": "oauth.revoke",
    "/.well-known/jwks.json": "wellknown.jwks",
    "/.well-known/oauth-authorization-server": "wellknown.metadata",
    "/.well-known/openid-configuration": "wellknown.metadata",
}
UNMATCHED = "unmatched"
MAX_PATH = 512

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}\Z")
access_log = logging.getLogger("latchkey.access")
log = logging.getLogger("latchkey.ops")


def new_request_id() -> str:
    """128 random bits as 32 hex digits."""
    return os.urandom(16).hex()


def forwarded_for(environ: WSGIEnvironment, proxies: int) -> str:
    """The client's address as werkzeug's ``ProxyFix(x_for=proxies)`` finds it."""
    if proxies:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        values = [v.strip() for v in forwarded.split(",")] if forwarded else []
        if len(values) >= proxies:
            return values[-proxies]
    return str(environ.get("REMOTE_ADDR") or "")


def _printable(text: str) -> str:
    """``text`` with anything a log line must not carry (newlines, controls) escaped."""
    if text.isprintable() and len(text) <= MAX_PATH:
        return text
    return text[:MAX_PATH].encode("unicode_escape").decode("ascii")


class RequestMiddleware:
    """Request id, per-route latency and the access log, around the whole application."""

    def __init__(self, wsgi_app: WSGIApplication, *, proxies: int, access: bool) -> None:
        self.wsgi_app = wsgi_app
        self.proxies = proxies
        self.access = access

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = None
        if self.proxies:
            offered = environ.get("HTTP_X_REQUEST_ID")
            if offered and _REQUEST_ID.match(offered):
                request_id = offered
        if request_id is None:
            request_id = new_request_id()
        environ[ENV_REQUEST_ID] = request_id
        token = logs.REQUEST_ID.set(request_id)
        status = [500]
        header = ("X-Request-Id", request_id)

        def start(status_line: str, headers: list[tuple[str, str]],
                  exc_info: Any = None) -> Any:
            status[0] = int(status_line[:3])
            headers = [*headers, header]
            if exc_info is not None:
                return start_response(status_line, headers, exc_info)
            return start_response(status_line, headers)

        try:
            return self.wsgi_app(environ, start)
        finally:
            elapsed = time.perf_counter() - started
            path = environ.get("PATH_INFO", "")
            route = FIXED_ROUTES.get(path) or environ.get(ENV_ROUTE) or UNMATCHED
            try:
                metrics.observe_request(route, status[0], elapsed)
                if self.access:
                    self._log(environ, path, route, status[0], elapsed)
            except Exception:  # counting or logging must never fail the request
                log.exception("could not record the request")
            logs.REQUEST_ID.reset(token)

    def _log(self, environ: WSGIEnvironment, path: str, route: str, status: int,
             elapsed: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        method = _printable(environ.get("REQUEST_METHOD", ""))[:16]
        path = _printable(path)
        duration_ms = round(elapsed * 1000, 3)
        fields: dict[str, Any] = {
            "method": method, "path": path, "status": status, "duration_ms": duration_ms,
            "route": route, "remote": forwarded_for(environ, self.proxies),
        }
        message = f"{method} {path} {status} {duration_ms}ms"
        client_id = environ.get(ENV_CLIENT_ID)
        if client_id:
            client_id = _printable(str(client_id))[:128]  # may be what a caller presented
            fields["client_id"] = client_id
            message += f" client={client_id}"
        org = environ.get(ENV_ORG)
        if org:
            org = _printable(str(org))[:64]
            fields["org"] = org
            message += f" org={org}"
        # A record made directly: Logger.info would also look up the caller's
        # file and line in the stack, which an access line does not need.
        record = logging.LogRecord(access_log.name, logging.INFO, "", 0, message, None, None)
        setattr(record, logs.FIELDS_ATTR, fields)
        access_log.handle(record)
