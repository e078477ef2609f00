"""Strict parsing of protocol request bodies.

What a well-formed request is: one of two content types, UTF-8 (a JSON body's
escapes included: no lone surrogate), no repeated parameters (RFC 6749 §3.2),
credentials never in the URL (RFC 6749 §2.3.1). Every malformed body is an
``invalid_request`` :class:`~portal.core.tokens.exchange.Refused` saying what is wrong.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, parse_qsl

from portal.core.tokens.exchange import INVALID_REQUEST, Refused

#: Parameters that RFC 8707 lets a client repeat.
REPEATABLE = frozenset({"resource", "audience"})
#: Parameters that must never travel in the request URI.
BODY_ONLY = frozenset({"client_secret", "client_assertion", "token"})
MAX_PARAMS = 50
MAX_VALUE_LENGTH = 8192


class Params:
    """Parsed body parameters: ``data`` has the first value, ``lists`` all of them."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.lists: dict[str, list[str]] = {}
        for key, value in pairs:
            self.lists.setdefault(key, []).append(value)
        self.data: dict[str, str] = {k: v[0] for k, v in self.lists.items()}


class InvalidRequestError(Refused):
    """A malformed request: ``invalid_request`` (RFC 6749 §5.2)."""

    def __init__(self, description: str) -> None:
        super().__init__(INVALID_REQUEST, description)


def check_query(query: str) -> None:
    """Refuse credentials and tokens sent in the request URI."""
    if not query:
        return
    leaked = BODY_ONLY.intersection(parse_qs(query, keep_blank_values=True))
    if leaked:
        raise InvalidRequestError(
            f"Parameter '{sorted(leaked)[0]}' must be sent in the request body, not the URL."
        )


def parse_body(mimetype: str, raw: bytes) -> Params:
    """Parse a body of this media type or raise ``invalid_request`` saying what is wrong."""
    if mimetype == "application/json":
        pairs = _json_pairs(raw)
    elif mimetype == "application/x-www-form-urlencoded" or (not mimetype and not raw):
        pairs = _form_pairs(raw)
    else:
        raise InvalidRequestError(
            "Content-Type must be application/x-www-form-urlencoded or application/json."
        )
    if len(pairs) > MAX_PARAMS:
        raise InvalidRequestError("Too many parameters.")
    params = Params(pairs)
    for key, values in params.lists.items():
        if len(values) > 1 and key not in REPEATABLE:
            raise InvalidRequestError(f"Parameter '{_printable(key)}' is repeated.")
        for value in values:
            if len(value) > MAX_VALUE_LENGTH:
                raise InvalidRequestError(f"Parameter '{_printable(key)}' is too long.")
            if "\x00" in value:
                raise InvalidRequestError(f"Parameter '{_printable(key)}' contains a NUL byte.")
    return params


def _form_pairs(raw: bytes) -> list[tuple[str, str]]:
    try:
        text = raw.decode("utf-8")
        return parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="strict",
            max_num_fields=MAX_PARAMS,
        )
    except UnicodeDecodeError as e:
        raise InvalidRequestError("The request body is not valid UTF-8.") from e
    except ValueError as e:  # max_num_fields exceeded
        raise InvalidRequestError("Too many parameters.") from e


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise InvalidRequestError(f"Parameter '{_printable(key)}' is repeated.")
        seen[key] = value
    return seen


def _json_pairs(raw: bytes) -> list[tuple[str, str]]:
    try:
        body = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except UnicodeDecodeError as e:
        raise InvalidRequestError("The request body is not valid UTF-8.") from e
    except (ValueError, RecursionError) as e:
        raise InvalidRequestError("The request body is not valid JSON.") from e
    if not isinstance(body, dict):
        raise InvalidRequestError("The JSON body must be an object.")
    pairs: list[tuple[str, str]] = []
    for key, value in body.items():
        if key in REPEATABLE and isinstance(value, list):
            values = value
        else:
            values = [value]
        for item in values:
            if not isinstance(item, str):
                raise InvalidRequestError(
                    f"Parameter '{_printable(key)}' must be a string."
                )
            if not _utf8(key) or not _utf8(item):  # a lone surrogate from a \ud800 escape
                raise InvalidRequestError(f"Parameter '{_printable(key)}' is not valid UTF-8.")
            pairs.append((key, item))
    return pairs


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    return "".join(c for c in text[:40] if 0x20 <= ord(c) <= 0x7E and c not in "\"\\'")
