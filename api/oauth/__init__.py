"""The OAuth 2.0 protocol endpoints: one :class:`~api.oauth.protocol.Protocol`, two doors."""

from __future__ import annotations

from typing import Any

from api.oauth import door
from api.oauth.protocol import Protocol
from api.oauth.views import EXTENSION_KEY
from portal.core.db import engine_of
from portal.core.ratelimit import FailureLimit, make_storage, storage_uri
from portal.core.signing_keys.services import EXTENSION_KEY as KEYRING_KEY
from portal.core.tokens import store as token_store


def init_app(app: Any, *, security_headers: list[tuple[str, str]]) -> Protocol:
    """Build the app's :class:`Protocol` (its store, key ring and failure limit) and,
    unless ``PROTOCOL_DOOR`` is off, put the WSGI door in front of Flask."""
    store = token_store.init_app(app, engine_of(app))
    storage = make_storage(storage_uri(app.config), store.connections)
    failures = FailureLimit(str(app.config["TOKEN_FAILURE_RATE_LIMIT"]), storage,
                            enabled=bool(app.config.get("RATELIMIT_ENABLED", True)))
    protocol = Protocol(store=store, keyring=app.extensions[KEYRING_KEY], failures=failures,
                        config=app.config)
    app.extensions[EXTENSION_KEY] = protocol
    if app.config.get("PROTOCOL_DOOR", True):
        door.init_app(app, protocol, security_headers)
    return protocol
