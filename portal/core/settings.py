"""Typed access to the configuration values the domain needs."""

from __future__ import annotations

from flask import current_app

from portal.config import key_list


def hmac_key() -> bytes:
    """The server-side key of the HMAC-SHA256 that stores client secrets and API keys."""
    return str(current_app.config["CLIENT_SECRET_HMAC_KEY"]).encode("utf-8")


def key_encryption_keys() -> tuple[str, ...]:
    """Fernet keys for private signing keys at rest; the first one encrypts."""
    return tuple(key_list(current_app.config["KEY_ENCRYPTION_KEYS"]))


def issuer() -> str:
    return str(current_app.config["ISSUER"]).rstrip("/")


def ttl_bounds() -> tuple[int, int, int]:
    """(minimum, default, maximum) token lifetime in seconds."""
    cfg = current_app.config
    return int(cfg["MIN_TOKEN_TTL"]), int(cfg["DEFAULT_TOKEN_TTL"]), int(cfg["MAX_TOKEN_TTL"])


def max_active_secrets() -> int:
    return int(current_app.config["MAX_ACTIVE_SECRETS"])


def scopes_supported() -> list[str]:
    """The deployment-wide scope vocabulary (``SCOPES_SUPPORTED``); empty: any scope name.

    When set, APIs (the org's and the deployment's) can only define these scopes.
    The metadata's ``scopes_supported`` lists the deployment APIs' scopes, never
    an org's: that would show one tenant's names to everyone.
    """
    value = current_app.config.get("SCOPES_SUPPORTED")
    return key_list(value) if value else []
