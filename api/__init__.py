"""The protocol endpoints (``/oauth/*``, ``/.well-known/*``) and the management API
(``/api/v1``); creates no app."""

from api.oauth.views import bp as oauth_bp
from api.v1 import bp as v1_bp
from api.wellknown import bp as wellknown_bp

__all__ = ["oauth_bp", "v1_bp", "wellknown_bp"]
