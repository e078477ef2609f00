"""The schemas of ``/api/v1``: pydantic models that validate requests, shape responses
and, through flask-openapi3, are the OpenAPI 3.1 document's components (pydantic's
JSON Schema is draft 2020-12, OpenAPI 3.1's dialect).

Every request model refuses unknown fields (``extra="forbid"``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

MAX_LIMIT = 200
Name = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=2000)]
Ttl = Annotated[int, Field(ge=1, le=10_000_000)]
Claims = dict[str, Any]


ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}")


def _iso_text(value: Any) -> Any:
    """Times are RFC 3339 text only: pydantic would also read a number as Unix time."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not ISO_DATE_TIME.match(value):
        raise ValueError("expected an RFC 3339 date-time with a time zone, e.g. "
                         "2027-01-31T12:00:00Z")
    return value


#: An RFC 3339 date-time with its offset (``Z`` or ``+hh:mm``).
Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_text)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# -- errors -------------------------------------------------------------------------------


class FieldError(Out):
    field: str = Field(description="The invalid input: a dotted path into the body or query.")
    message: str


class Problem(Out):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable error code, e.g. validation_failed, not_found.")
    errors: list[FieldError] | None = None


# -- paging -------------------------------------------------------------------------------


class PageQuery(Request):
    limit: int = Field(50, ge=1, le=MAX_LIMIT, description="Items per page.")
    cursor: str | None = Field(None, max_length=100,
                               description="The next_cursor of the previous page.")


class IfMatch(BaseModel):
    """``If-Match``: the ETag a GET returned; a PATCH of a changed object is refused (412)."""

    model_config = ConfigDict(extra="allow")  # every other header is welcome
    if_match: str | None = Field(None, alias="If-Match", max_length=200)


# -- APIs ---------------------------------------------------------------------------------


class ScopeIn(Request):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=500)


class ScopeOut(Out):
    name: str
    description: str


class ApiCreate(Request):
    identifier: str = Field(min_length=1, max_length=255,
                            description="The tokens' aud, e.g. https://api.example.com.")
    name: Name
    description: Description = ""
    scopes: list[ScopeIn] = Field(default_factory=list, max_length=100)
    default_ttl: Ttl | None = None
    max_ttl: Ttl | None = None


class ApiPatch(Request):
    name: Name | None = None
    description: Description | None = None
    default_ttl: Ttl | None = None
    max_ttl: Ttl | None = None
    scopes: list[ScopeIn] | None = Field(
        None, max_length=100, description="The API's whole set of scopes: missing ones are "
                                          "removed (and ungranted), new ones added.")


class ApiOut(Out):
    id: str
    identifier: str
    name: str
    description: str
    owner: Literal["org", "deployment"]
    scopes: list[ScopeOut]
    default_ttl: int | None
    max_ttl: int | None
    created_at: datetime
    updated_at: datetime


class ApiPage(Out):
    items: list[ApiOut]
    next_cursor: str | None


class ApiPath(Request):
    api_id: str = Field(max_length=40)


# -- clients ------------------------------------------------------------------------------


class GrantIn(Request):
    api: str = Field(min_length=1, max_length=255, description="The API's identifier.")
    scopes: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=100)


class GrantOut(Out):
    api: str
    scopes: list[str]


AuthMethodName = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]


class ClientCreate(Request):
    name: Name
    description: Description = ""
    kind: Literal["org", "user", "service"] = "org"
    user: str | None = Field(None, max_length=64,
                             description="Public id of the member a user client acts for.")
    grants: list[GrantIn] = Field(min_length=1, max_length=50)
    default_api: str | None = Field(None, max_length=255,
                                    description="Identifier of the API a token request "
                                                "without audience gets (default: the first).")
    ttl: Ttl | None = Field(None, description="Token lifetime in seconds.")
    auth_methods: list[AuthMethodName] | None = Field(None, min_length=1, max_length=3)
    jwks: dict[str, Any] | None = Field(None, description="Public keys for private_key_jwt.")
    custom_claims: Claims | None = None


class ClientPatch(Request):
    name: Name | None = None
    description: Description | None = None
    grants: list[GrantIn] | None = Field(None, min_length=1, max_length=50)
    default_api: str | None = Field(None, max_length=255)
    ttl: Ttl | None = None
    auth_methods: list[AuthMethodName] | None = Field(None, min_length=1, max_length=3)
    custom_claims: Claims | None = None


class ClientOut(Out):
    client_id: str
    name: str
    description: str
    kind: Literal["org", "user", "service"]
    user: str | None
    enabled: bool
    grants: list[GrantOut]
    default_api: str | None
    ttl: int
    auth_methods: list[str]
    custom_claims: Claims
    jwks: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None


class ClientCreated(ClientOut):
    client_secret: str | None = Field(
        description="Shown in this response only (none for a private_key_jwt-only client).")


class ClientPage(Out):
    items: list[ClientOut]
    next_cursor: str | None


class ClientQuery(PageQuery):
    kind: Literal["org", "user", "service"] | None = None
    enabled: bool | None = None
    name: str | None = Field(None, max_length=200, description="Part of the name.")


class ClientPath(Request):
    client_id: str = Field(max_length=64)


# -- secrets ------------------------------------------------------------------------------


class SecretOut(Out):
    id: int
    hint: str = Field(description="The secret's last four characters.")
    status: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class SecretCreated(SecretOut):
    client_secret: str = Field(description="Shown in this response only.")


class SecretList(Out):
    items: list[SecretOut]


class SecretCreate(Request):
    expires_at: Timestamp | None = None


class SecretPatch(Request):
    expires_at: Timestamp


class SecretPath(Request):
    client_id: str = Field(max_length=64)
    secret_id: int = Field(ge=1, le=2**62)


# -- tokens -------------------------------------------------------------------------------


class MintRequest(Request):
    scopes: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None, max_length=100)
    audience: list[Annotated[str, Field(min_length=1, max_length=255)]] | None = Field(
        None, min_length=1, max_length=20, description="API identifiers (default: the "
                                                       "client's default API).")
    ttl: Ttl | None = None
    claims: Claims | None = Field(None, description="Custom claims; reserved ones are "
                                                    "refused by name.")


class Minted(Out):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a token type)
    expires_in: int
    jti: str
    scope: str
    audience: list[str]


class TokenOut(Out):
    jti: str
    scopes: list[str]
    audience: list[str]
    source: str
    issued_at: datetime
    expires_at: datetime


class TokenPage(Out):
    items: list[TokenOut]
    next_cursor: str | None


class RevokedCount(Out):
    revoked: int


class TokenPath(Request):
    jti: str = Field(max_length=64)


# -- usage, audit, signing keys -----------------------------------------------------------


class UsageQuery(Request):
    start: Timestamp | None = Field(None, description="Default: 24 hours (hour) or 30 "
                                                          "days (day) before end.")
    end: Timestamp | None = Field(None, description="Default: now.")
    bucket: Literal["hour", "day"] = "hour"
    client_id: str | None = Field(None, max_length=64)


class UsageBucket(Out):
    start: datetime
    issued: int
    failed: int


class UsageSeries(Out):
    bucket: Literal["hour", "day"]
    start: datetime
    end: datetime
    items: list[UsageBucket]


class EventQuery(PageQuery):
    start: Timestamp | None = None
    end: Timestamp | None = None
    client_id: str | None = Field(None, max_length=64)
    kind: Literal["token_issued", "token_failed", "token_introspected",
                  "token_revoked"] | None = None
    outcome: Literal["ok", "failed"] | None = None


class EventOut(Out):
    id: int
    occurred_at: datetime
    kind: str
    client_id: str | None = Field(description="the client whose token the event is about")
    caller: str | None = Field(description="who made the request: a client id, "
                               "api_key:<hint>, user:<email>, or what an unknown caller sent")
    caller_name: str
    scope: str
    audience: str
    reason: str
    source_ip: str
    jti: str | None


class EventPage(Out):
    items: list[EventOut]
    next_cursor: str | None


class AuditQuery(PageQuery):
    actor: str | None = Field(None, max_length=200)
    action: str | None = Field(None, max_length=64,
                               description="An action, or a prefix ending in ':'.")
    target_type: str | None = Field(None, max_length=32)
    target_id: str | None = Field(None, max_length=200)
    start: Timestamp | None = None
    end: Timestamp | None = None


class AuditOut(Out):
    id: int
    occurred_at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]
    source_ip: str


class AuditPage(Out):
    items: list[AuditOut]
    next_cursor: str | None


class SigningKeyOut(Out):
    kid: str
    alg: str
    state: Literal["next", "active", "retired"]
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    public_jwk: dict[str, Any]


class SigningKeyList(Out):
    items: list[SigningKeyOut]


class RotateRequest(Request):
    alg: Literal["RS256", "ES256", "EdDSA"] | None = Field(
        None, description="Algorithm of the new next key (default: the org's).")
