"""The protocol endpoints (``/oauth/*``, ``/.well-known/*``); creates no app."""

from api.oauth.views import bp as oauth_bp
from api.wellknown import bp as wellknown_bp

__all__ = ["oauth_bp", "wellknown_bp"]
