"""Org API keys as Bearer credentials for ``/api/v1``, their roles and their rate limit.

Checked before the request is validated, so a caller without the right key
learns nothing about the request's shape: 401 (no or unknown key, with
``WWW-Authenticate: Bearer error="invalid_token"``, RFC 6750 §3), 403 for a
role too weak (``insufficient_scope``), 429 with ``Retry-After`` past the
per-key limit. Reads need ``viewer``, changes ``admin``.
"""

from __future__ import annotations

import time

from flask import current_app, g, request
from flask.typing import ResponseReturnValue

from api.v1.problems import problem
from portal import extensions
from portal.core import crypto, settings
from portal.core.actor import Actor
from portal.core.api_keys import services as api_keys
from portal.core.api_keys.models import ApiKey, ApiKeyRole
from portal.core.db import get_session
from portal.core.orgs.models import Organization
from portal.core.ratelimit import parse_limit
from portal.core.tokens.store import last_used_is_stale, token_store
from portal.core.types import utcnow

#: Endpoints anyone may read: the description of the API and its reference page.
PUBLIC_ENDPOINTS = frozenset({"api_v1.openapi_document", "api_v1.docs", "api_v1.docs_asset"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RATE_LIMIT_NAMESPACE = "api-v1-key"


def _unauthorized(detail: str) -> ResponseReturnValue:
    return problem(401, code="invalid_token", detail=detail, headers={
        "WWW-Authenticate": f'Bearer realm="latchkey", error="invalid_token", '
                            f'error_description="{detail}"'})


def needed_role(method: str) -> ApiKeyRole:
    """Reads need a viewer key, changes an admin key."""
    return ApiKeyRole.VIEWER if method in READ_METHODS else ApiKeyRole.ADMIN


def authenticate() -> ResponseReturnValue | None:
    """``before_request`` of the blueprint: the caller's key in ``g.api_key``, or a refusal."""
    g.pop("api_key", None)  # never a previous request's (an app context can outlive one)
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer " or not header[7:].strip():
        return _unauthorized("send an org API key as Authorization: Bearer lk_apikey_...")
    presented = header[7:].strip()
    # Counted before the session is touched: on SQLite a change's session holds the write
    # lock, which the database's counters would wait for.
    retry_after = _rate_limited(presented)
    if retry_after is not None:
        return problem(429, code="rate_limited",
                       detail=f"too many requests with this API key; retry in {retry_after} s",
                       headers={"Retry-After": str(retry_after)})
    key = api_keys.authenticate_api_key(get_session(), presented)
    if key is None:
        return _unauthorized("the API key is unknown or revoked")
    wanted = needed_role(request.method)
    if not key.role.allows(wanted):
        return problem(403, code="insufficient_scope",
                       detail=f"this API key's role is {key.role.value}; this needs "
                              f"{wanted.value} or more", headers={
                           "WWW-Authenticate": 'Bearer realm="latchkey", '
                                               'error="insufficient_scope"'})
    g.api_key = key
    _note_use(key)
    return None


def _note_use(key: ApiKey) -> None:
    """Write the key's last-used time when stale (once a minute at most, the token store's
    rule) on a connection of the store's own, after ending the lookup's transaction: on
    SQLite a change's transaction holds the write lock, which that write would wait for."""
    now = utcnow()
    if not last_used_is_stale(key.last_used_at, now):
        return
    key_id, last_used = key.id, key.last_used_at
    get_session().commit()
    store = token_store()
    with store.connections.connection() as connection:
        store.touch_api_key(connection, key_id=key_id, last_used_at=last_used, now=now)


def _rate_limited(presented: str) -> int | None:
    """Count one request with the ``presented`` key (by its keyed hash) in Flask-Limiter's
    storage (Redis when configured, else the database: shared by every worker); seconds to
    wait when past the limit."""
    limit = str(current_app.config.get("API_RATE_LIMIT") or "")
    if not limit or not extensions.limiter.enabled:
        return None
    item = parse_limit(limit)
    strategy = extensions.limiter.limiter
    who = crypto.hmac_digest(settings.hmac_key(), presented[:300]).hex()[:32]
    if strategy.hit(item, RATE_LIMIT_NAMESPACE, who):
        return None
    stats = strategy.get_window_stats(item, RATE_LIMIT_NAMESPACE, who)
    return max(1, int(stats.reset_time - time.time()) + 1)


def current_key() -> ApiKey:
    key: ApiKey = g.api_key
    return key


def current_actor() -> Actor:
    """The key as the author of a change: audit entries name it."""
    return Actor(current_key().actor_label, request.remote_addr or "")


def org_id() -> int:
    return current_key().org_id


def current_org() -> Organization:
    org = get_session().get(Organization, org_id())
    assert org is not None  # noqa: S101 (the key's org: the foreign key cascades)
    return org


def empty_body_is_an_empty_object() -> None:
    """``before_request``: a change sent with no body at all (``curl -X PUT …/secret``)
    is read as ``{}``: an operation whose fields are all optional then takes its
    defaults, and one with required fields names them, instead of refusing the body."""
    if request.method in ("POST", "PUT", "PATCH") and not request.get_data(cache=True):
        request._cached_json = ({}, {})  # what get_json() returns, silent or not


def refuse_nul() -> ResponseReturnValue | None:
    """``before_request``: a NUL character anywhere in the path, the query or the body is
    refused (400) before it can reach PostgreSQL, which cannot store one."""
    body = request.get_data(cache=True)
    if "\x00" in request.path or b"\x00" in request.query_string \
            or b"%00" in request.query_string or b"\x00" in body \
            or b"\\u0000" in body.lower():
        return problem(400, code="validation_failed", detail="NUL characters are not allowed",
                       errors=[{"field": "body", "message": "NUL characters are not allowed"}])
    return None
