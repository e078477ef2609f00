"""JWKS (RFC 7517) and authorization-server metadata (RFC 8414)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Blueprint, Response, current_app, request

from api.oauth.server import ASSERTION_ALGS, AUTH_METHODS, INTROSPECT_PATH, REVOKE_PATH, TOKEN_PATH
from portal.core import settings
from portal.core.db import get_session
from portal.core.signing_keys.services import SUPPORTED_ALGS, keyring

bp = Blueprint("wellknown", __name__)

JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


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
    body, etag = keyring().jwks(get_session())
    return _cached_json(body, etag, int(current_app.config["JWKS_MAX_AGE"]))


def metadata_document() -> dict[str, Any]:
    """RFC 8414 metadata; lists only what this server really does."""
    issuer = settings.issuer()
    doc: dict[str, Any] = {
        "issuer": issuer,
        "token_endpoint": issuer + TOKEN_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "introspection_endpoint": issuer + INTROSPECT_PATH,
        "revocation_endpoint": issuer + REVOKE_PATH,
        # No authorization endpoint: client credentials only.
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
    scopes = settings.scopes_supported()
    if scopes:
        doc["scopes_supported"] = scopes
    return doc


@bp.get(METADATA_PATHS[0])
@bp.get(METADATA_PATHS[1])
def metadata() -> Response:
    """The same RFC 8414 document at both well-known paths; built once per process."""
    cached = current_app.extensions.get("latchkey.metadata")
    if cached is None:
        body = json.dumps(metadata_document(), separators=(",", ":")).encode()
        cached = (body, hashlib.sha256(body).hexdigest()[:32])
        current_app.extensions["latchkey.metadata"] = cached
    return _cached_json(cached[0], cached[1], 3600)
