"""The rules of a client-credentials exchange and of an introspection, each written once.

Framework-free: no Flask, no database, no HTTP. Every door that answers a token
request — the token endpoint (its Flask view and its WSGI door), the portal's
mint, the management API — hands these functions a :class:`ClientSnapshot`
(read by :mod:`portal.core.tokens.store` in one statement), what was presented,
and the time, and gets back what to sign, or one :class:`Refused` carrying the
RFC 6749 §5.2 (or RFC 8707 / RFC 7662) error code and description. A rule added
here holds for every door at once.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from portal.core.apis.grants import GrantedApi, check_ttl, resolve
from portal.core.clients.models import AuthMethod, ClientKind, secret_is_active
from portal.core.errors import AudienceNotAllowed, ScopeNotAllowed, ValidationFailed
from portal.core.tokens.claims import audience_claim, check_custom_claims
from portal.core.tokens.jws import read_token
from portal.core.tokens.models import TokenSource, token_is_active

# RFC 6749 §5.2, RFC 8707 §2 and the product's own refusals.
INVALID_REQUEST = "invalid_request"
INVALID_CLIENT = "invalid_client"
INVALID_GRANT = "invalid_grant"
UNAUTHORIZED_CLIENT = "unauthorized_client"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
INVALID_SCOPE = "invalid_scope"
INVALID_TARGET = "invalid_target"

SECRET_METHODS = frozenset({AuthMethod.CLIENT_SECRET_BASIC.value,
                            AuthMethod.CLIENT_SECRET_POST.value})
#: How the portal and the management API present a client: an admin acting for the org.
ADMIN = "admin"


class Refused(ValidationFailed):
    """A refused request: the RFC error code (also its ``code``), its description, the
    form field it is about if any, and what the usage history records about it
    (``detail``: said to the org, never to the caller)."""

    def __init__(self, error: str, description: str, *, status: int = 400, detail: str = "",
                 client: ClientSnapshot | None = None, field: str | None = None) -> None:
        super().__init__(description, field=field)
        self.code = self.error = error
        self.description = description
        self.http_status = self.status = status
        self.detail = detail
        self.client = client

    @property
    def reason(self) -> str:
        """The usage history's line for it: ``error: description (detail)``."""
        return f"{self.error}: {self.description}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True, slots=True)
class SecretMatch:
    """The stored secret whose keyed hash matched the one presented."""

    id: int
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def is_active(self, now: datetime) -> bool:
        return secret_is_active(self.revoked_at, self.expires_at, now)


@dataclass(frozen=True, slots=True)
class ClientSnapshot:
    """A client as every rule of an exchange sees it, read in one statement.

    ``secret`` is the stored secret matching the presented one (None: none
    matched, or none was presented).
    """

    id: int
    public_id: str
    org_id: int
    org_public_id: str
    kind: ClientKind
    enabled: bool
    auth_methods: frozenset[str]
    granted: Mapping[str, GrantedApi]  # API identifier -> what the client may get there
    default_audience: str | None  # the API a request that names none is for
    token_ttl: int
    custom_claims: Mapping[str, Any]
    jwks: Mapping[str, Any] | None
    last_used_at: datetime | None
    user_public_id: str | None
    user_is_member: bool
    secret: SecretMatch | None
    tokens_revoked_at: datetime | None  # "revoke all": tokens issued until then


@dataclass(frozen=True, slots=True)
class Presented:
    """How the caller identified the client: a secret (``client_secret_basic`` or
    ``client_secret_post``), a verified ``private_key_jwt`` assertion, or an admin
    of the org (the portal's mint, the management API), who presents nothing."""

    method: str
    client_id: str = ""

    @property
    def basic(self) -> bool:
        return self.method == AuthMethod.CLIENT_SECRET_BASIC.value


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """What a token request asks for; None means not asked (RFC 6749 §3.1: a
    parameter sent without a value is treated as omitted)."""

    scopes: tuple[str, ...] | None = None
    audiences: tuple[str, ...] | None = None
    ttl: int | None = None
    extra_claims: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """What a request is granted: the token's scopes, audiences, lifetime and custom claims."""

    scopes: tuple[str, ...]
    audiences: tuple[str, ...]
    ttl: int
    custom_claims: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TtlBounds:
    low: int
    default: int
    high: int


def invalid_client(description: str, presented: Presented, *, detail: str = "",
                   client: ClientSnapshot | None = None) -> Refused:
    """``invalid_client``: 401 (with ``WWW-Authenticate``) when Basic was used, else 400."""
    return Refused(INVALID_CLIENT, description, status=401 if presented.basic else 400,
                   detail=detail, client=client)


def authenticate(client: ClientSnapshot | None, presented: Presented,
                 now: datetime) -> ClientSnapshot:
    """The client, if what was presented proves it is this client and may be used so.

    An unknown client and a wrong secret get the same answer; only the usage
    history (the org's) is told which.
    """
    if client is None:
        raise invalid_client("Invalid client credentials.", presented, detail="unknown client")
    if presented.method in SECRET_METHODS:
        secret = client.secret
        if secret is None or not secret.is_active(now):
            detail = ("wrong secret" if secret is None
                      else "secret revoked" if secret.revoked_at is not None
                      else "secret expired")
            raise invalid_client("Invalid client credentials.", presented, detail=detail,
                                 client=client)
    if presented.method != ADMIN and presented.method not in client.auth_methods:
        raise invalid_client(f"This client may not authenticate with {presented.method}.",
                             presented, detail=f"method {presented.method} not allowed for client",
                             client=client)
    return client


def check_may_get_tokens(client: ClientSnapshot) -> None:
    """A client gets tokens while it is enabled and, acting for a user, that user is a member."""
    if not client.enabled:
        raise Refused(UNAUTHORIZED_CLIENT, "This client is disabled.", client=client)
    if client.kind is ClientKind.USER and not (client.user_public_id and client.user_is_member):
        raise Refused(INVALID_GRANT,
                      "The user this client acts for is no longer a member of the org.",
                      client=client)


def grant(client: ClientSnapshot, request: TokenRequest, bounds: TtlBounds) -> Grant:
    """What the client gets for ``request``: the APIs asked for (its default API when
    none is) and the scopes it is granted on them (all of them when none are asked for),
    its lifetime and its claims; the grants' rule is :func:`portal.core.apis.grants.resolve`.

    A request that breaks several rules is refused with the first (what the
    token endpoint answers); its ``errors`` list every one, so the portal's mint
    shows them all at once.
    """
    check_may_get_tokens(client)
    refusals: list[Refused] = []
    ttl_bounds = (bounds.low, bounds.default, bounds.high)
    try:
        resolved = resolve(client.granted, client.default_audience, scopes=request.scopes,
                           audiences=request.audiences, client_ttl=client.token_ttl,
                           ttl=request.ttl, ttl_bounds=ttl_bounds)
    except AudienceNotAllowed as e:
        refusals.append(Refused(INVALID_TARGET, e.message, client=client, field="audience"))
    except ScopeNotAllowed as e:
        refusals.append(Refused(INVALID_SCOPE, e.message, client=client, field="scope"))
    except ValidationFailed as e:
        refusals.append(Refused(INVALID_REQUEST, e.message, client=client, field=e.field))
    if refusals and refusals[0].field != "ttl" and request.ttl is not None:
        try:  # the lifetime asked for, which resolve did not reach
            check_ttl(request.ttl, bounds=ttl_bounds)
        except ValidationFailed as e:
            refusals.append(Refused(INVALID_REQUEST, e.message, client=client, field=e.field))
    extra = request.extra_claims
    try:
        custom = {**client.custom_claims, **check_custom_claims(dict(extra))} if extra \
            else client.custom_claims
    except ValidationFailed as e:
        refusals.append(Refused(INVALID_REQUEST, e.message, client=client,
                                field="custom_claims"))
    if refusals:
        first = refusals[0]
        first.errors = [failure for refusal in refusals for failure in refusal.errors]
        raise first
    return Grant(scopes=tuple(resolved.scopes), audiences=tuple(resolved.audiences),
                 ttl=resolved.lifetime, custom_claims=custom)


def exchange(client: ClientSnapshot | None, presented: Presented, request: TokenRequest,
             now: datetime, bounds: TtlBounds) -> tuple[ClientSnapshot, Grant]:
    """A client-credentials exchange: authentication, then what may be granted."""
    authenticated = authenticate(client, presented, now)
    return authenticated, grant(authenticated, request, bounds)


#: base64url's 64 characters in ASCII order: a jti's text order is its number order.
_ORDERED = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")


def new_jti(now: datetime) -> str:
    """A token's ``jti``: 24 base64url characters, 48 bits of the issue time in
    milliseconds then 96 random bits, written so that text order is issue order.

    Unique as a random one (RFC 7519 §4.1.7: 96 random bits within one millisecond);
    in issue order, each record's entry in the unique index of ``jti`` goes next to the
    last one's, where a random ``jti`` put each on a page of its own: a batch of records
    rewrote as many index pages as it had records (bench/README.md, "Seventh session").
    """
    millis = int(now.timestamp() * 1000) & 0xFFFF_FFFF_FFFF
    raw = millis.to_bytes(6, "big") + secrets.token_bytes(12)
    return base64.urlsafe_b64encode(raw).decode().translate(_ORDERED)


def claims_for(client: ClientSnapshot, granted: Grant, *, issuer: str, jti: str,
               issued_at: int) -> dict[str, Any]:
    """The RFC 9068 claims of a token; custom claims never override a reserved claim
    (they are refused before this, see :func:`check_custom_claims`)."""
    claims: dict[str, Any] = {
        **granted.custom_claims,
        "iss": issuer,
        "sub": client.public_id,
        "aud": audience_claim(list(granted.audiences)),
        "exp": issued_at + granted.ttl,
        "iat": issued_at,
        "nbf": issued_at,
        "jti": jti,
        "client_id": client.public_id,
        "scope": " ".join(granted.scopes),
        "oid": client.org_public_id,
    }
    if client.kind is ClientKind.USER and client.user_public_id is not None:
        claims["sub"] = claims["uid"] = client.user_public_id
    return claims


def record_values(client: ClientSnapshot, granted: Grant, claims: Mapping[str, Any], *,
                  kid: str, issued_at: datetime, source: str) -> dict[str, Any]:
    """The ``issued_tokens`` row of a token."""
    return {
        "jti": claims["jti"],
        "org_id": client.org_id,
        "client_id": client.id,
        "subject": claims["sub"],
        "audience": list(granted.audiences),
        "scopes": list(granted.scopes),
        "kid": kid,
        "issued_at": issued_at,
        "expires_at": issued_at + timedelta(seconds=granted.ttl),
        "source": source,
    }


# -- introspection -------------------------------------------------------------------------


#: How long after it is issued a token may still be waiting for its record: the token
#: endpoint's records are written in batches (``WRITE_DELAY_MS``), and until then
#: introspection and revocation judge the token by its claims and its client
#: (:func:`unrecorded`). A token older than this with no record (a crash lost it) is
#: inactive: the rule fails closed.
UNRECORDED_SECONDS = 60


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An issued token's record, as introspection and revocation judge it. ``id`` None:
    not written yet (:func:`unrecorded`)."""

    id: int | None
    org_id: int
    client_id: int
    jti: str
    scopes: tuple[str, ...]
    kid: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    client_enabled: bool
    client_tokens_revoked_at: datetime | None  # the client's "revoke all"

    def is_live(self, now: datetime) -> bool:
        """Unrevoked (by itself or by its client's "revoke all"), unexpired, and its
        client enabled."""
        every = self.client_tokens_revoked_at
        return (self.client_enabled and (every is None or self.issued_at > every)
                and token_is_active(self.revoked_at, self.expires_at, now))


def issued_lately(claims: Mapping[str, Any], now: datetime) -> bool:
    """Whether a token's ``iat`` says its record may still be on its way: whole seconds,
    at most :data:`UNRECORDED_SECONDS` ago and not ahead of ``now``."""
    iat = claims.get("iat")
    return type(iat) is int and now.timestamp() - UNRECORDED_SECONDS <= iat <= now.timestamp()


def unrecorded(claims: Mapping[str, Any], *, kid: str | None, client: ClientSnapshot | None,
               now: datetime) -> TokenRecord | None:
    """The record a token issued less than :data:`UNRECORDED_SECONDS` ago has until its
    own is written, made of its claims and of its client now (None: it cannot have one).

    The claims are not verified here: the caller verifies the token with the key
    ``kid`` this record names, as for a written record. ``issued_at`` is ``iat``, whole
    seconds at or before the true time, so a "revoke all" in the second the token was
    issued counts it as revoked until its record (with the exact time) is written.
    """
    iat, exp, jti, scope = (claims.get("iat"), claims.get("exp"), claims.get("jti"),
                            claims.get("scope", ""))
    if (client is None or kid is None or not issued_lately(claims, now)
            or type(iat) is not int or type(exp) is not int
            or not isinstance(jti, str) or not isinstance(scope, str)
            or claims.get("client_id") != client.public_id):
        return None
    return TokenRecord(
        id=None, org_id=client.org_id, client_id=client.id, jti=jti,
        scopes=tuple(scope.split()), kid=kid,
        issued_at=datetime.fromtimestamp(iat, tz=now.tzinfo),
        expires_at=datetime.fromtimestamp(exp, tz=now.tzinfo), revoked_at=None,
        client_enabled=client.enabled, client_tokens_revoked_at=client.tokens_revoked_at)


def unrecorded_values(record: TokenRecord, claims: Mapping[str, Any]) -> dict[str, Any]:
    """The ``issued_tokens`` row of a token whose record is not written yet
    (:func:`unrecorded`: the token endpoint's), from its verified claims: the row
    :func:`record_values` made for it, but for ``issued_at`` (``iat``'s whole seconds)."""
    audience = claims.get("aud")
    return {
        "jti": record.jti,
        "org_id": record.org_id,
        "client_id": record.client_id,
        "subject": str(claims.get("sub", "")),
        "audience": list(audience) if isinstance(audience, list) else [str(audience)],
        "scopes": list(record.scopes),
        "kid": record.kid,
        "issued_at": record.issued_at,
        "expires_at": record.expires_at,
        "source": TokenSource.TOKEN_ENDPOINT,
    }


def introspection(record: TokenRecord | None, claims: Mapping[str, Any] | None, *,
                  caller_org_id: int, kid: str | None, key_org_id: int | None,
                  wanted: tuple[str, ...], now: datetime) -> dict[str, Any]:
    """The RFC 7662 answer for a token whose ``claims`` verified (None: they did not)
    against key ``kid`` of org ``key_org_id``, and its ``record`` in the caller's org.

    Active only if all of these hold: the record is the caller's org's; the token
    was signed by the very key its record names, a key of that same org (so one
    org's key can never vouch for another org's token); it is live; it grants every
    scope in ``wanted``. Anything else is ``{"active": false}`` and nothing more.
    """
    if (record is None or claims is None or record.org_id != caller_org_id
            or kid != record.kid or key_org_id != record.org_id
            or claims.get("jti") != record.jti or not record.is_live(now)
            or not set(wanted) <= set(record.scopes)):
        return {"active": False}
    payload: dict[str, Any] = {"active": True, "token_type": "Bearer"}
    for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti",
                 "oid", "uid"):
        if name in claims:
            payload[name] = claims[name]
    return payload


def claims_hold(claims: Mapping[str, Any], *, issuer: str, now: float) -> bool:
    """Our issuer; ``exp``, ``iat`` and ``jti`` present and well typed; valid at ``now``."""
    times = [claims.get("exp"), claims.get("iat"), claims.get("nbf", 0)]
    if not all(type(value) is int for value in times):  # not bool, not float, not str
        return False
    exp, iat, nbf = times
    return (
        claims.get("iss") == issuer
        and isinstance(claims.get("jti"), str)
        and isinstance(claims.get("sub", ""), str)
        and iat <= now < exp
        and nbf <= now
    )


# -- private_key_jwt (RFC 7523 §2.2, §3) ----------------------------------------------------

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Algorithms accepted for client assertions: asymmetric only, never HS*, never none.
ASSERTION_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                  "EdDSA")
#: An assertion may not be valid for longer than this (RFC 7523 §3 lets the server refuse
#: an unreasonable ``exp``); each used one is kept until it expires, to refuse replays.
MAX_ASSERTION_LIFETIME = timedelta(hours=1)
MAX_ASSERTION_JTI = 200


@dataclass(frozen=True, slots=True)
class Assertion:
    """A verified client assertion: its ``jti`` and when it expires (kept until then)."""

    jti: str
    expires_at: datetime


def assertion_subject(assertion: str, presented: Presented) -> str:
    """The client id an assertion names (``sub``), unverified: whose keys to verify it with."""
    unverified = read_token(assertion)
    sub = unverified.claims.get("sub") if unverified is not None else None
    if not isinstance(sub, str) or not sub:
        raise invalid_client("Invalid client assertion.", presented, detail="malformed assertion")
    return sub


def verify_assertion(client: ClientSnapshot, assertion: str, presented: Presented, *,
                     audiences: tuple[str, ...], now: datetime, leeway: int) -> Assertion:
    """Check a client assertion against the client's JWKS and RFC 7523 §3's claims."""
    from joserfc import jwt as jose_jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    def refuse(description: str, detail: str) -> Refused:
        return invalid_client(description, presented, detail=detail, client=client)

    try:
        keys = KeySet.import_key_set(dict(client.jwks or {"keys": []}))  # type: ignore[arg-type]
        token = jose_jwt.decode(assertion, keys, algorithms=list(ASSERTION_ALGS))
    except (JoseError, ValueError, TypeError, KeyError) as e:
        raise refuse("Invalid client assertion signature.", "bad assertion signature") from e
    claims = token.claims
    registry = jose_jwt.JWTClaimsRegistry(
        leeway=leeway, now=int(now.timestamp()),
        iss={"essential": True}, sub={"essential": True}, exp={"essential": True},
        aud={"essential": True, "values": list(audiences)},
    )
    try:
        registry.validate(claims)
    except (JoseError, ValueError, TypeError) as e:
        description = getattr(e, "description", "") or "Invalid client assertion."
        raise refuse(description, "assertion claims") from e
    if claims["sub"] != claims["iss"]:
        raise refuse("Issuer and Subject MUST match.", "assertion iss is not sub")
    exp = claims["exp"]
    latest = now + MAX_ASSERTION_LIFETIME + timedelta(seconds=leeway)
    if isinstance(exp, bool) or not isinstance(exp, int | float) \
            or not exp <= latest.timestamp():
        raise refuse("The assertion is valid for too long (exp at most one hour ahead).",
                     "assertion exp too far")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise refuse("Missing JWT ID.", "assertion without jti")
    if len(jti) > MAX_ASSERTION_JTI or "\x00" in jti:
        raise refuse(f"JWT ID too long (at most {MAX_ASSERTION_JTI} characters).",
                     "assertion jti too long")
    return Assertion(jti=jti, expires_at=datetime.fromtimestamp(float(exp), tz=now.tzinfo))
