"""Access-token claims (RFC 9068) and the rules for custom claims."""

from __future__ import annotations

import json
import math
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
#: Objects and arrays nested deeper than this (the claims object itself is level 1) are refused.
MAX_CLAIM_DEPTH = 10
_FIELD = "custom_claims"
_NOT_A_NUMBER = ("custom claims must be JSON (RFC 8259): NaN, Infinity and numbers too large "
                 "to represent are not allowed")
_TOO_DEEP = f"custom claims may nest objects and arrays at most {MAX_CLAIM_DEPTH} levels deep"
_CLAIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,63}$")

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")


def _refuse_constant(name: str) -> Any:
    raise ValidationFailed(f"{_NOT_A_NUMBER} (found {name})", field=_FIELD)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValidationFailed(f"{_NOT_A_NUMBER} (found {text[:40]})", field=_FIELD)
    return value


def load_custom_claims(text: str) -> Any:
    """Parse custom claims typed as JSON, strictly: RFC 8259 JSON only (no ``NaN``,
    ``Infinity`` or numbers that overflow to infinity), nesting bounded."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as e:
        raise ValidationFailed(_TOO_DEEP, field=_FIELD) from e
    except ValueError as e:  # json.JSONDecodeError, and integers over Python's digit limit
        raise ValidationFailed(f"custom claims are not valid JSON: {e}", field=_FIELD) from e


def _check_values(claims: dict[str, Any]) -> None:
    """Every value is plain JSON: finite numbers, valid Unicode, bounded nesting.

    Walked with a stack, not recursion, so no depth can raise RecursionError.
    """
    stack: list[tuple[Any, int]] = [(claims, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_CLAIM_DEPTH:
                raise ValidationFailed(_TOO_DEEP, field=_FIELD)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(value, dict):
                    if not isinstance(key, str):
                        raise ValidationFailed("custom claim names must be strings",
                                               field=_FIELD)
                    _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, str):
            _check_text(value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationFailed(_NOT_A_NUMBER, field=_FIELD)
        elif value is not None and not isinstance(value, int | bool):
            raise ValidationFailed(
                f"custom claim values must be JSON values, not {type(value).__name__}",
                field=_FIELD)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValidationFailed("custom claims must be valid Unicode text (found a lone "
                               "surrogate such as \\ud800)", field=_FIELD) from e


def check_custom_claims(claims: Any) -> dict[str, Any]:
    """Validate custom claims; reserved names are refused, never silently dropped.

    Values must be plain JSON (RFC 8259: finite numbers, valid Unicode) nested at
    most :data:`MAX_CLAIM_DEPTH` levels, within :data:`MAX_CUSTOM_CLAIMS_BYTES`.
    """
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
    _check_values(claims)
    if len(json.dumps(claims, separators=(",", ":"), allow_nan=False)) > MAX_CUSTOM_CLAIMS_BYTES:
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
