"""Authlib glue: the authorization server, client authentication and the grant.

Authlib dispatches grants and endpoints and shapes RFC 6749 §5.2 errors; every
rule and every database access is delegated to ``portal.core``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

from authlib.integrations.flask_oauth2 import AuthorizationServer as FlaskAuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.requests import OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from flask import Flask, current_app, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from limits import parse as parse_limit
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import InvalidTargetError, TooManyFailures, invalid_client, safe_description
from api.oauth.params import Params
from portal.core import settings
from portal.core.api_keys.models import ApiKey
from portal.core.api_keys.services import authenticate_api_key
from portal.core.apis.services import is_absolute_uri
from portal.core.clients import services as clients
from portal.core.clients.models import AuthMethod, Client, ClientKind, ClientSecret
from portal.core.db import end_autocommit, get_session, table_of
from portal.core.errors import LatchkeyError, ValidationFailed
from portal.core.hotpath import last_used_is_stale, touch_statement
from portal.core.tokens import services as tokens
from portal.core.tokens.claims import parse_scope
from portal.core.tokens.models import TokenSource, UsedAssertion
from portal.core.types import utcnow
from portal.core.usage import services as usage
from portal.core.usage.models import UsageKind
from portal.core.users.models import Membership
from portal.extensions import limiter

log = logging.getLogger("latchkey.oauth")

TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path)
INTROSPECT_PATH = "/oauth/introspect"
REVOKE_PATH = "/oauth/revoke"
AUTH_METHODS = [m.value for m in AuthMethod]
#: Algorithms accepted for private_key_jwt assertions (asymmetric only: never HS*, never none).
ASSERTION_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


class LatchkeyPayload(OAuth2Payload):
    def __init__(self, params: Params) -> None:
        self._params = params

    @property
    def data(self) -> dict[str, str]:
        return self._params.data

    @property
    def datalist(self) -> dict[str, list[str]]:  # type: ignore[override]
        return self._params.lists


class LatchkeyRequest(OAuth2Request):
    """An OAuth2Request whose parameters come from our strict body parser."""

    def __init__(self, params: Params) -> None:
        super().__init__(request.method, request.url, headers=request.headers)
        self.payload = LatchkeyPayload(params)
        self.params = params
        self.presented_client: Client | None = None
        self.presented_client_id = ""
        self.failure_detail = ""
        self.used_basic = False

    @property
    def args(self) -> Any:
        return request.args

    @property
    def form(self) -> dict[str, str]:
        return self.params.data


def source_ip() -> str:
    return request.remote_addr or ""


# -- client authentication -------------------------------------------------------------


def parse_basic(header: str) -> tuple[str, str]:
    """Client id and secret from a Basic header, form-decoded (RFC 6749 §2.3.1)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        raise invalid_client("Malformed Basic credentials.", basic=True)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise ValueError("no colon")
        client_id = unquote_plus(raw_id, errors="strict")
        secret = unquote_plus(raw_secret, errors="strict")
    except (binascii.Error, ValueError, UnicodeDecodeError) as e:
        raise invalid_client("Malformed Basic credentials.", basic=True) from e
    if not client_id or not secret:
        raise invalid_client("Malformed Basic credentials.", basic=True)
    return client_id, secret


def detect_auth_method(header: str, params: Params) -> str | None:
    """Which client authentication method a request with this Authorization header and
    these body parameters uses; more than one is an error."""
    used = []
    if header.lower().startswith("basic"):
        used.append(AuthMethod.CLIENT_SECRET_BASIC.value)
    if "client_secret" in params.data:
        used.append(AuthMethod.CLIENT_SECRET_POST.value)
    if "client_assertion" in params.data or "client_assertion_type" in params.data:
        used.append(AuthMethod.PRIVATE_KEY_JWT.value)
    if len(used) > 1:
        raise InvalidRequestError("Use exactly one client authentication method per request.")
    return used[0] if used else None


def presented_secret(header: str, params: Params, method: str) -> tuple[str, str]:
    """Client id and secret sent by ``client_secret_basic`` or ``client_secret_post``."""
    if method == AuthMethod.CLIENT_SECRET_BASIC.value:
        client_id, secret = parse_basic(header)
        body_id = params.data.get("client_id")
        if body_id is not None and body_id != client_id:
            raise InvalidRequestError(
                "client_id in the body does not match the Basic credentials."
            )
        return client_id, secret
    client_id = params.data.get("client_id", "")
    if not client_id:
        raise invalid_client("Missing client_id.", basic=False)
    return client_id, params.data.get("client_secret", "")


def client_label(client_id: str) -> str:
    """How a client calling introspection or revocation appears in the usage history."""
    return f"client:{client_id}"[:64]


class PrivateKeyJWT(JWTBearerClientAssertion):
    """``private_key_jwt`` (RFC 7523 §2.2) against the JWKS stored on the client."""

    CLIENT_AUTH_METHOD = AuthMethod.PRIVATE_KEY_JWT.value

    def __init__(self, server: LatchkeyAuthorizationServer) -> None:
        leeway = int(current_app.config["CLIENT_ASSERTION_LEEWAY"])
        super().__init__(validate_jti=True, leeway=leeway)
        self.server = server

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGS)
        except JoseError as e:
            raise InvalidClientError(description="Invalid client assertion signature.") from e
        self.verify_claims(token.claims)
        return token.claims

    def get_audiences(self) -> list[str]:
        issuer = settings.issuer()
        return [issuer, issuer + "/", issuer + TOKEN_PATH, issuer + request.path]

    def resolve_client_public_key(self, client: Client) -> KeySet:
        return KeySet.import_key_set(client.jwks or {"keys": []})  # type: ignore[arg-type]

    def validate_jti(self, claims: Any, jti: Any) -> bool:
        """Refuse a replayed assertion: each ``jti`` is stored until the assertion expires."""
        if not isinstance(jti, str) or not jti or len(jti) > 200:
            return False
        session = get_session()
        expires = claims.get("exp")
        expires_at = utcnow() + timedelta(minutes=10)
        if isinstance(expires, int | float):
            expires_at = datetime.fromtimestamp(float(expires), tz=expires_at.tzinfo)
        # Committed at once: a request that fails later (a bad scope, say) rolls
        # its session back, and the assertion must stay used all the same.
        session.add(UsedAssertion(client_ref=str(claims.get("sub"))[:64], jti=jti,
                                  expires_at=expires_at))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return False
        return True

    def authenticate_client(self, client: Client) -> Client:
        return client  # method and enabled checks happen in one place, below

    def __call__(self, query_client: Any, req: Any) -> Client | None:
        if req.params.data.get("client_assertion_type") != self.CLIENT_ASSERTION_TYPE:
            raise InvalidClientError(
                description="client_assertion_type must be "
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer."
            )
        try:
            result: Client | None = super().__call__(query_client, req)
        except OAuth2Error:
            raise
        except (JoseError, ValueError, TypeError, KeyError) as e:
            raise InvalidClientError(description="Invalid client assertion.") from e
        return result


@dataclass
class Caller:
    """Who called introspection or revocation: a client, or an org API key."""

    org_id: int
    label: str
    client: Client | None = None
    api_key: ApiKey | None = None


class LatchkeyAuthorizationServer(FlaskAuthorizationServer):
    """The Flask authorization server with Latchkey's client authentication."""

    def __init__(self) -> None:
        super().__init__()
        self._assertion: PrivateKeyJWT | None = None

    # Authlib hooks ------------------------------------------------------------------

    def query_client(self, client_id: str) -> Client | None:
        found = clients.find_client_for_auth(get_session(), client_id)
        req = getattr(request, "latchkey_oauth", None)
        if req is not None and found is not None:
            req.presented_client = found
        return found

    def save_token(self, token: dict[str, Any], req: Any) -> None:
        """Tokens are recorded by ``ClientCredentialsGrant.create_token_response`` itself."""

    def create_oauth2_request(self, req: Any) -> LatchkeyRequest:
        return request.latchkey_oauth  # type: ignore[attr-defined,no-any-return]

    def handle_error_response(self, req: Any, error: OAuth2Error) -> Any:
        if isinstance(req, LatchkeyRequest) and request.path == TOKEN_PATH:
            record_failure(req, error)
        return super().handle_error_response(req, error)

    # Client authentication ----------------------------------------------------------

    def authenticate_client(self, req: Any, methods: list[str], endpoint: str = "token") -> Any:
        """Authenticate with exactly the method the request used, then check the client."""
        method = detect_auth_method(req.headers.get("Authorization", ""), req.params)
        if method is None:
            raise invalid_client("Client authentication is required.", basic=True)
        req.used_basic = method == AuthMethod.CLIENT_SECRET_BASIC.value
        if method == AuthMethod.PRIVATE_KEY_JWT.value:
            if self._assertion is None:
                self._assertion = PrivateKeyJWT(self)
            client = self._assertion(self.query_client, req)
            if client is None:
                raise invalid_client("Invalid client assertion.", basic=False)
        else:
            client = self._authenticate_secret(req, method)
        if method not in client.auth_methods:
            req.failure_detail = f"method {method} not allowed for client"
            raise invalid_client(
                f"This client may not authenticate with {method}.", basic=req.used_basic
            )
        req.client = client
        req.auth_method = method
        return client

    def _authenticate_secret(self, req: LatchkeyRequest, method: str) -> Client:
        basic = method == AuthMethod.CLIENT_SECRET_BASIC.value
        client_id, secret = presented_secret(req.headers.get("Authorization", ""), req.params,
                                             method)
        req.presented_client_id = client_id
        client = self.query_client(client_id)
        matched = clients.find_secret(client, secret) if client is not None else None
        if client is None or matched is None or not matched.is_active(utcnow()):
            # The detail goes to the usage history only; the response stays generic.
            if client is None:
                req.failure_detail = "unknown client"
            elif matched is None:
                req.failure_detail = "wrong secret"
            else:
                revoked = matched.revoked_at is not None
                req.failure_detail = "secret revoked" if revoked else "secret expired"
            raise invalid_client("Invalid client credentials.", basic=basic)
        req.matched_secret = matched  # type: ignore[attr-defined]
        return client


# -- the grant ---------------------------------------------------------------------------


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """RFC 6749 §4.4 with scope subsets and RFC 8707 audiences."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_token_request(self) -> None:
        client: Client = self.authenticate_token_endpoint_client()
        req: LatchkeyRequest = self.request
        if not client.enabled:
            raise UnauthorizedClientError(description="This client is disabled.")
        if client.kind is ClientKind.USER and not _user_still_member(get_session(), client):
            raise InvalidGrantError(
                description="The user this client acts for is no longer a member of the org."
            )
        # Syntax only here; whether the client may have them is issue_token's rule.
        try:
            req.requested_scopes = parse_scope(req.payload.scope)  # type: ignore[attr-defined]
        except ValidationFailed as e:
            raise InvalidScopeError(description=safe_description(e.message)) from e
        if req.requested_scopes == []:  # type: ignore[attr-defined]
            # RFC 6749 §3.3: a scope has at least one scope-token.
            raise InvalidScopeError(
                description="scope must not be empty; omit it to get every allowed scope."
            )
        req.requested_audiences = requested_audiences(req.params)  # type: ignore[attr-defined]

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """Sign, then write the token's record and usage event in one short write.

        Everything before the write only reads (in autocommit mode on the hot
        path, see ``portal.core.db.autocommit``), so on SQLite the write lock
        is held for two INSERTs, not across the reads and the signature.
        """
        req: LatchkeyRequest = self.request
        client: Client = req.client
        session = get_session()
        now = utcnow()
        try:
            signed = tokens.sign_token(
                session,
                client=client,
                org_public_id=client.org.public_id,
                scopes=req.requested_scopes,  # type: ignore[attr-defined]
                audiences=req.requested_audiences,  # type: ignore[attr-defined]
                source=TokenSource.TOKEN_ENDPOINT,
                now=now,
            )
        except tokens.ScopeNotAllowed as e:
            raise InvalidScopeError(description=safe_description(e.message)) from e
        except tokens.AudienceNotAllowed as e:
            raise InvalidTargetError(description=safe_description(e.message)) from e
        except LatchkeyError as e:
            raise InvalidRequestError(description=safe_description(e.message)) from e
        event = usage.event_values(
            kind=UsageKind.TOKEN_ISSUED, org_id=client.org_id, client_id=client.id,
            client_ref=client.client_id, jti=signed.values["jti"], source_ip=source_ip(),
            now=now,
        )
        stale = _stale_last_used(client, getattr(req, "matched_secret", None), now)
        if stale or session.get_bind().dialect.name != "postgresql":
            # More than one statement: give them one transaction (on SQLite,
            # BEGIN IMMEDIATE, taken here and not before the reads).
            end_autocommit(session)
        tokens.record_issued(session, signed, event=event)
        for table, row_id in stale:
            session.execute(touch_statement(table), {"row_id": row_id, "now": now})
        session.commit()
        body = {
            "access_token": signed.access_token,
            "token_type": "Bearer",
            "expires_in": signed.expires_in,
            "scope": signed.claims["scope"],
        }
        return 200, body, self.TOKEN_RESPONSE_HEADER


def requested_audiences(params: Params) -> list[str]:
    """``audience`` and ``resource`` values (RFC 8707); ``resource`` must be an absolute URI."""
    values = list(params.lists.get("audience", []))
    for resource in params.lists.get("resource", []):
        # As API identifiers are written (urn: ones too); http(s) ones need a host.
        if not is_absolute_uri(resource):
            raise InvalidTargetError(
                description="resource must be an absolute URI without a fragment."
            )
        values.append(resource)
    if any(not v for v in values):
        raise InvalidTargetError(description="audience must not be empty.")
    return values


def _user_still_member(session: Session, client: Client) -> bool:
    if client.user_id is None:
        return False
    member = session.scalar(
        select(Membership.id).where(
            Membership.org_id == client.org_id, Membership.user_id == client.user_id
        )
    )
    return member is not None


def _stale_last_used(client: Client, secret: Any, now: datetime) -> list[tuple[Table, int]]:
    """The client and secret rows whose last-used time is older than the granularity."""
    stale: list[tuple[Table, int]] = []
    if last_used_is_stale(client.last_used_at, now):
        stale.append((table_of(Client), client.id))
    if secret is not None and last_used_is_stale(secret.last_used_at, now):
        stale.append((table_of(ClientSecret), secret.id))
    return stale


# -- failures and rate limits ------------------------------------------------------------


def _failure_limit() -> Any:
    return _parse_limit(str(current_app.config["TOKEN_FAILURE_RATE_LIMIT"]))


@functools.lru_cache(maxsize=8)
def _parse_limit(text: str) -> Any:
    """Parsed once per setting, not per request."""
    return parse_limit(text)


def check_failure_rate(ip: str | None = None) -> None:
    """Refuse early when this address (default: the request's) has failed client
    authentication too often."""
    if not current_app.config.get("RATELIMIT_ENABLED", True):
        return
    item = _failure_limit()
    key = ("client-auth-failures", source_ip() if ip is None else ip)
    if not limiter.limiter.test(item, *key):
        stats = limiter.limiter.get_window_stats(item, *key)
        retry = max(1, int(stats.reset_time - utcnow().timestamp()))
        raise TooManyFailures(retry_after=retry)


def count_failure() -> None:
    if current_app.config.get("RATELIMIT_ENABLED", True):
        limiter.limiter.hit(_failure_limit(), "client-auth-failures", source_ip())


def record_failure(req: LatchkeyRequest | None, error: OAuth2Error) -> None:
    """Record a failed token request, with its reason, in the usage history."""
    if isinstance(error, TooManyFailures):
        return  # not a request we looked at; recording it would let floods fill the table
    if isinstance(error, InvalidClientError):
        count_failure()
    session = get_session()
    session.rollback()
    client = (req.client or req.presented_client) if req is not None else None
    reason = f"{error.error}: {error.description or ''}"
    if req is not None and req.failure_detail:
        reason += f" ({req.failure_detail})"
    usage.record_event(
        session,
        kind=UsageKind.TOKEN_FAILED,
        org_id=client.org_id if client is not None else None,
        client_id=client.id if client is not None else None,
        client_ref=client.client_id if client is not None
        else (req.presented_client_id if req is not None else ""),
        reason=reason,
        source_ip=source_ip(),
    )
    session.commit()


# -- introspection and revocation callers ------------------------------------------------


def authenticate_caller(server: LatchkeyAuthorizationServer, req: LatchkeyRequest) -> Caller:
    """A client of the org (any method it may use) or an org API key as a Bearer token."""
    header = req.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        if detect_auth_method(header, req.params) is not None:
            raise InvalidRequestError("Use exactly one client authentication method per request.")
        key = authenticate_api_key(get_session(), header[7:].strip())
        if key is None:
            count_failure()
            raise InvalidClientError(description="Invalid API key.", status_code=401)
        return Caller(org_id=key.org_id, label=f"api_key:{key.hint}", api_key=key)
    try:
        client: Client = server.authenticate_client(req, AUTH_METHODS, "introspection")
    except InvalidClientError:
        count_failure()
        raise
    if not client.enabled:
        raise UnauthorizedClientError(description="This client is disabled.")
    return Caller(org_id=client.org_id, label=client_label(client.client_id), client=client)


def init_app(app: Flask) -> None:
    """Give the app its own authorization server (tests build many apps)."""
    server = LatchkeyAuthorizationServer()
    server.init_app(app)
    server.register_grant(ClientCredentialsGrant)
    app.extensions["latchkey.oauth"] = server


def get_server() -> LatchkeyAuthorizationServer:
    server: LatchkeyAuthorizationServer = current_app.extensions["latchkey.oauth"]
    return server
