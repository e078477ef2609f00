"""Compact JWS as this server writes it: split, parse and check, without a JWT library.

Only our own tokens are ever verified, so they are checked against exactly what
we sign (RFC 7515 compact form, unpadded base64url, the RFC 9068 header of the
signing key) rather than through ``jwt.decode``, whose per-character segment
checks in Python cost more than verifying an ES256 signature.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from dataclasses import dataclass
from typing import Any

#: Largest token we try to parse; anything longer is not ours.
MAX_TOKEN_LENGTH = 8192
#: Every jti we issue is a short string (the column holds 64 characters).
MAX_JTI_LENGTH = 64

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """A token split into its segments, with the claims its payload makes: nothing
    of it counts until it has been verified."""

    head: str
    body: str
    signature: str
    claims: dict[str, Any]

    @property
    def claimed_jti(self) -> str | None:
        """The ``jti`` it claims, if it is one we could have issued."""
        jti = self.claims.get("jti")
        ok = isinstance(jti, str) and 0 < len(jti) <= MAX_JTI_LENGTH and "\x00" not in jti
        return jti if ok else None

    @property
    def kid(self) -> str | None:
        """The ``kid`` its header names (a string without NUL), else None."""
        return header_kid(self.head)

    @property
    def signing_input(self) -> bytes:
        return f"{self.head}.{self.body}".encode()

    @property
    def raw_signature(self) -> bytes | None:
        return segment(self.signature)


def read_token(token: str) -> UnverifiedToken | None:
    """``token`` split and its payload parsed, if it has the form of a compact JWS
    with a JSON object for a payload; nothing is verified."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    head, body, signature = parts
    claims = json_object(segment(body))
    return None if claims is None else UnverifiedToken(head, body, signature, claims)


def claimed_jti(token: str) -> str | None:
    """The ``jti`` a token's payload claims, unverified (revoke-by-paste looks its
    record up with it, in the caller's org only)."""
    unverified = read_token(token)
    return unverified.claimed_jti if unverified is not None else None


@functools.lru_cache(maxsize=256)
def header_kid(head: str) -> str | None:
    """The ``kid`` of a header segment (a string, without NUL), else None.

    Cached: every token of a key has the same header, so a busy server parses
    a handful of distinct headers, not one per request.
    """
    header = json_object(segment(head))
    kid = header.get("kid") if header is not None else None
    if not isinstance(kid, str) or "\x00" in kid or len(kid) > 64:
        return None
    return kid


def segment(text: str) -> bytes | None:
    """A base64url segment decoded, if written as RFC 7515 §2 says and as we write it:
    no padding, no other characters, and no stray bits (one spelling per value)."""
    if len(text) % 4 == 1 or _BASE64URL.fullmatch(text) is None:
        return None
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=") == text.encode() else None


def json_object(raw: bytes | None) -> dict[str, Any] | None:
    """``raw`` as a JSON object, or None (not UTF-8, not JSON, nested too deep, not an object)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
