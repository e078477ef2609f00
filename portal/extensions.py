"""Extensions, created unbound and attached to the app in ``create_app``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf import CSRFProtect

from portal.core.ratelimit import storage_options, storage_uri

if TYPE_CHECKING:
    from flask import Flask

    from portal.core.rawdb import RawConnections

login_manager = LoginManager()
csrf = CSRFProtect()
# No default limits: limits are applied where they protect something (failed
# client authentication, sign-in), so successful traffic costs no storage hit.
limiter = Limiter(key_func=get_remote_address, default_limits=[])

#: On every response: set by an ``after_request`` hook (``portal.views.auth``)
#: and by the protocol fast path (``api.oauth.fast``), which answers before Flask.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def init_app(app: Flask, connections: RawConnections) -> None:
    """Bind the extensions; rate-limit counters go where the failure limit's do (one
    deployment-wide count: the database, or Redis when configured)."""
    uri = storage_uri(app.config)
    app.config["RATELIMIT_STORAGE_URI"] = uri
    app.config["RATELIMIT_STORAGE_OPTIONS"] = storage_options(uri, connections)
    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
