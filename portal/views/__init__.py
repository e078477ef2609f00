"""The portal blueprint (server-rendered pages)."""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("portal", __name__)

# Routes register on the blueprint as their modules are imported.
from portal.views import auth, home  # noqa: E402,F401


def init_app(app: Flask) -> None:
    """Hooks the portal needs on the app (user loader, security headers)."""
    auth.init_app(app)
