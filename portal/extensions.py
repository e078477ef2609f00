"""Extensions, created unbound and attached to the app in ``create_app``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf import CSRFProtect

from portal.core.ratelimit import storage_options, storage_uri

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Flask

    from portal.core.rawdb import RawConnections

login_manager = LoginManager()
csrf = CSRFProtect()
# No default limits: limits are applied where they protect something (failed
# client authentication, sign-in), so successful traffic costs no storage hit.
limiter = Limiter(key_func=get_remote_address, default_limits=[])

#: On every response: set by an ``after_request`` hook (``portal.views.auth``)
#: and by the protocol door (``api.oauth.door``), which answers before Flask.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

#: RFC 6797, sent on every response when the issuer is https (and never otherwise:
#: §7.2 forbids it over plain http). A year; subdomains are the operator's to decide.
STRICT_TRANSPORT_SECURITY = ("Strict-Transport-Security", "max-age=31536000")


class StrictTransportSecurity:
    """WSGI middleware adding ``Strict-Transport-Security`` to every response.

    Outermost (``create_app`` installs it last), so it reaches what Flask's
    after-request hooks never see: the protocol door (``api.oauth.door``)
    and the well-known replays (``api.wellknown``) as well as the portal, the
    API and every error page.
    """

    def __init__(self, wsgi_app: WSGIApplication) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def with_hsts(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not any(name.lower() == "strict-transport-security" for name, _ in headers):
                headers = [*headers, STRICT_TRANSPORT_SECURITY]
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, with_hsts)


def init_hsts(app: Flask) -> None:
    """Wrap the whole app in :class:`StrictTransportSecurity` when the issuer is https."""
    if str(app.config["ISSUER"]).startswith("https://"):
        app.wsgi_app = StrictTransportSecurity(app.wsgi_app)  # type: ignore[method-assign]


def init_app(app: Flask, connections: RawConnections) -> None:
    """Bind the extensions; rate-limit counters go where the failure limit's do (one
    deployment-wide count: the database, or Redis when configured)."""
    uri = storage_uri(app.config)
    app.config["RATELIMIT_STORAGE_URI"] = uri
    app.config["RATELIMIT_STORAGE_OPTIONS"] = storage_options(uri, connections)
    login_manager.init_app(app)
    csrf.init_app(app)
    # Flask-Limiter merges each app's RATELIMIT_STORAGE_OPTIONS into what an earlier
    # app left (``dict.update``): a Redis storage after a database one would be handed
    # the database's ``connections``. Each app starts from its own options.
    limiter._storage_options = {}
    limiter.init_app(app)
