"""What a client may get: its grants, and the one rule that turns a token request into
the token's audiences, scopes and lifetime.

Pure functions on plain values (no Flask, no database), so every door that issues
tokens (the token endpoint's fast path, its Flask path, the portal's mint) judges a
request the same way, whether it read the client through the ORM or as one raw row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, case, cast, func, literal_column

from portal.core import settings
from portal.core.errors import AudienceNotAllowed, ScopeNotAllowed, ValidationFailed


@dataclass(frozen=True, slots=True)
class GrantedApi:
    """One API a client may get tokens for, and the scopes it may have there."""

    identifier: str
    scopes: tuple[str, ...]
    default_ttl: int | None = None
    max_ttl: int | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a token request gets: ``aud`` values, scopes and lifetime in seconds."""

    audiences: list[str]
    scopes: list[str]
    lifetime: int


def resolve(
    granted: Mapping[str, GrantedApi],
    default_audience: str | None,
    *,
    scopes: Sequence[str] | None,
    audiences: Sequence[str] | None,
    client_ttl: int,
    ttl: int | None = None,
    ttl_bounds: tuple[int, int, int],
) -> Resolved:
    """Judge a token request against a client's grants.

    - No audience (``audience``/``resource`` absent): the client's default API.
      Each audience asked for must be granted to the client; anything else,
      another org's API included, is :class:`AudienceNotAllowed` (``invalid_target``).
    - The scopes that may be asked for are those granted on every audience of
      the token (with one audience: its grant), so no API ever receives a scope
      it did not grant this client. None asked for: all of them. Any other is
      :class:`ScopeNotAllowed` (``invalid_scope``).
    - Lifetime: ``ttl`` when given (the portal's mint), else the shortest default
      lifetime of the token's APIs, else the client's; never above the shortest
      maximum lifetime of the token's APIs (a ``ttl`` above it is refused, the
      other defaults are cut to it). ``ttl_bounds`` is the server's
      ``(minimum, default, maximum)`` (:func:`portal.core.settings.ttl_bounds`).
    """
    wanted = list(dict.fromkeys(audiences)) if audiences else []
    if not wanted:
        if default_audience is None or default_audience not in granted:
            raise AudienceNotAllowed("this client is not granted any API", field="audience")
        wanted = [default_audience]
    refused = [a for a in wanted if a not in granted]
    if refused:
        raise AudienceNotAllowed(
            "audience not granted to this client: " + " ".join(refused), field="audience"
        )
    apis = [granted[a] for a in wanted]
    allowed = [s for s in apis[0].scopes if all(s in api.scopes for api in apis[1:])]
    if not scopes:
        chosen = allowed
    else:
        chosen = list(dict.fromkeys(scopes))
        refused = [s for s in chosen if s not in allowed]
        if refused:
            where = "this API" if len(apis) == 1 else "every audience of the token"
            raise ScopeNotAllowed(
                f"scope not granted to this client on {where}: " + " ".join(refused),
                field="scope",
            )
    lifetime = _lifetime(apis, client_ttl, ttl, ttl_bounds)
    return Resolved(audiences=wanted, scopes=chosen, lifetime=lifetime)


def _lifetime(apis: Sequence[GrantedApi], client_ttl: int, ttl: int | None,
              bounds: tuple[int, int, int]) -> int:
    maxima = [(api.max_ttl, api.identifier) for api in apis if api.max_ttl is not None]
    cap = min(maxima) if maxima else None
    if ttl is not None:
        check_ttl(ttl, bounds=bounds)
        if cap is not None and ttl > cap[0]:
            raise ValidationFailed(
                f"tokens for {cap[1]} live at most {cap[0]} seconds", field="ttl"
            )
        return ttl
    defaults = [api.default_ttl for api in apis if api.default_ttl is not None]
    lifetime = min(defaults) if defaults else client_ttl
    return min(lifetime, cap[0]) if cap is not None else lifetime


def check_ttl(ttl: object, *, field: str = "ttl",
              bounds: tuple[int, int, int] | None = None) -> int:
    """A token lifetime in seconds within ``bounds`` (default: the configured ones)."""
    low, _default, high = bounds or settings.ttl_bounds()
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise ValidationFailed("token TTL must be a whole number of seconds", field=field)
    if not low <= ttl <= high:
        raise ValidationFailed(f"token TTL must be between {low} and {high} seconds",
                               field=field)
    return ttl


# -- grants read as one column (the token endpoint's single read) ---------------------

#: Separates the grants of one client in :func:`parse_grant_lines`' input. Neither an
#: identifier nor a scope can hold it, and JSON escapes it.
LINE_SEPARATOR = "\n"


def grant_line(apis: Any, grants: Any) -> Any:
    """SQL for one grant as a line of text (Core columns of ``apis`` and ``client_grants``):
    ``<identifier> <1 if default else 0> <default ttl or -> <max ttl or -> <scopes JSON>``.

    Identifiers and scope names hold no spaces, and the JSON array comes last.
    """
    space, dash = sql_text(" "), sql_text("-")
    return (apis.c.identifier
            + space + case((grants.c.is_default, sql_text("1")), else_=sql_text("0"))
            + space + func.coalesce(cast(apis.c.default_ttl, Text), dash)
            + space + func.coalesce(cast(apis.c.max_ttl, Text), dash)
            + space + cast(grants.c.scopes, Text))


def sql_text(value: str) -> Any:
    """A constant string written into the SQL itself: the fast path's compiled
    statements bind only the parameters they name."""
    assert "'" not in value  # noqa: S101 (our own constants)
    return literal_column(f"'{value}'", Text)


def parse_grant_lines(text: str | None) -> tuple[dict[str, GrantedApi], str | None]:
    """Grants aggregated by SQL into one string (see :func:`grant_line`), read back:
    identifier -> grant, and the default API's identifier."""
    granted: dict[str, GrantedApi] = {}
    default = None
    for line in (text or "").split(LINE_SEPARATOR):
        if not line:
            continue
        identifier, is_default, default_ttl, max_ttl, scopes = line.split(" ", 4)
        granted[identifier] = GrantedApi(
            identifier=identifier,
            scopes=tuple(json.loads(scopes) or ()),
            default_ttl=None if default_ttl == "-" else int(default_ttl),
            max_ttl=None if max_ttl == "-" else int(max_ttl),
        )
        if is_default == "1":
            default = identifier
    return granted, default
