"""Access-token claims (RFC 9068) and the rules for custom claims."""

from __future__ import annotations

import json
import re
from typing import Any

from portal.core.errors import ReservedClaim, ValidationFailed

#: Claims the server sets itself; custom claims may never override them.
REGISTERED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti"})
PRODUCT_CLAIMS = frozenset({"client_id", "scope", "oid", "uid"})
#: Claims with a meaning that a resource server could act on wrongly if a client set them.
PROTECTED_CLAIMS = frozenset(
    {"azp", "auth_time", "acr", "amr", "cnf", "act", "may_act", "typ", "token_type", "nonce"}
)
RESERVED_CLAIMS = REGISTERED_CLAIMS | PRODUCT_CLAIMS | PROTECTED_CLAIMS

MAX_CUSTOM_CLAIMS_BYTES = 4096
_CLAIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,63}$")

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")


def check_custom_claims(claims: Any) -> dict[str, Any]:
    """Validate custom claims; reserved names are refused, never silently dropped."""
    if claims is None:
        return {}
    if not isinstance(claims, dict):
        raise ValidationFailed("custom claims must be a JSON object", field="custom_claims")
    reserved = sorted(name for name in claims if name in RESERVED_CLAIMS)
    if reserved:
        raise ReservedClaim(
            f"reserved claim{'s' if len(reserved) > 1 else ''} cannot be set: "
            + ", ".join(reserved),
            field="custom_claims",
        )
    for name in claims:
        if not isinstance(name, str) or not _CLAIM_NAME.match(name):
            raise ValidationFailed(
                f"invalid claim name {name!r}: use letters, digits, _ . : / - (max 64)",
                field="custom_claims",
            )
    if len(json.dumps(claims, separators=(",", ":"))) > MAX_CUSTOM_CLAIMS_BYTES:
        raise ValidationFailed(
            f"custom claims are limited to {MAX_CUSTOM_CLAIMS_BYTES} bytes of JSON",
            field="custom_claims",
        )
    return dict(claims)


def parse_scope(value: str | None) -> list[str] | None:
    """Split a space-delimited scope string; None when absent. Order kept, duplicates dropped."""
    if value is None:
        return None
    tokens = value.split(" ")
    seen: dict[str, None] = {}
    for token in tokens:
        if token == "":
            continue
        if not _SCOPE_TOKEN.match(token):
            raise ValidationFailed(f"invalid scope token {token!r}", field="scope")
        seen[token] = None
    return list(seen)


def check_scope_names(scopes: list[str]) -> list[str]:
    """Validate scope names a client may be granted (RFC 6749 §3.3 syntax)."""
    clean: dict[str, None] = {}
    for scope in scopes:
        if not isinstance(scope, str) or not _SCOPE_TOKEN.match(scope):
            raise ValidationFailed(f"invalid scope name {scope!r}", field="scopes")
        clean[scope] = None
    return list(clean)


def audience_claim(audiences: list[str]) -> str | list[str]:
    """``aud`` as a single string when there is one audience, else an array (RFC 7519)."""
    return audiences[0] if len(audiences) == 1 else list(audiences)
