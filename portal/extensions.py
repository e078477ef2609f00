"""Extensions, created unbound and attached to the app in ``create_app``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf import CSRFProtect

if TYPE_CHECKING:
    from flask import Flask

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


def init_app(app: Flask) -> None:
    redis_url = app.config.get("REDIS_URL")
    app.config.setdefault("RATELIMIT_STORAGE_URI", redis_url or "memory://")
    if redis_url and app.config["RATELIMIT_STORAGE_URI"] == "memory://":
        app.config["RATELIMIT_STORAGE_URI"] = redis_url
    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
