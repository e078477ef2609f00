"""The protocol endpoints, written once: ``/oauth/token``, ``/oauth/introspect``, ``/oauth/revoke``.

RFC request parsing lives here — the body (:mod:`api.oauth.params`), Basic and the
other client authentication methods, ``audience`` and ``resource``, the failure
limit, the caller's address — and so does the one error writer. The rules of the
exchange are the core's (:mod:`portal.core.tokens.exchange`), its reads and writes
the store's (:mod:`portal.core.tokens.store`). A door (the Flask views in
:mod:`api.oauth.views`, the WSGI door in :mod:`api.oauth.door`) only turns its
request into an :class:`HttpRequest` and an :class:`HttpResponse` back into its own.

Nothing here needs a Flask app context: everything it uses is handed to
:class:`Protocol` when the app is built.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from typing import Protocol as Protocol_
from urllib.parse import unquote_plus

from api.oauth.params import InvalidRequestError, Params, check_query, parse_body
from portal.core import crypto
from portal.core.apis.services import is_absolute_uri
from portal.core.clients.models import AuthMethod
from portal.core.errors import ValidationFailed
from portal.core.ratelimit import FailureLimit
from portal.core.signing_keys.services import KeyRing
from portal.core.tokens import exchange
from portal.core.tokens import services as tokens
from portal.core.tokens.claims import parse_scope
from portal.core.tokens.exchange import (
    INVALID_CLIENT,
    INVALID_REQUEST,
    INVALID_SCOPE,
    INVALID_TARGET,
    UNAUTHORIZED_CLIENT,
    UNSUPPORTED_GRANT_TYPE,
    ClientSnapshot,
    Presented,
    Refused,
    TokenRecord,
    TokenRequest,
    TtlBounds,
)
from portal.core.tokens.jws import UnverifiedToken, read_token
from portal.core.tokens.models import TokenSource
from portal.core.tokens.store import ApiKeyCaller, Connection, TokenStore
from portal.core.types import utcnow
from portal.core.usage.models import UsageKind
from portal.core.usage.services import event_values

log = logging.getLogger("latchkey.oauth")

TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path)
INTROSPECT_PATH = "/oauth/introspect"
REVOKE_PATH = "/oauth/revoke"
AUTH_METHODS = [m.value for m in AuthMethod]
ASSERTION_ALGS = list(exchange.ASSERTION_ALGS)
BASIC = AuthMethod.CLIENT_SECRET_BASIC.value
POST = AuthMethod.CLIENT_SECRET_POST.value
PRIVATE_KEY_JWT = AuthMethod.PRIVATE_KEY_JWT.value
#: Authlib's JSON headers, as every answer of these endpoints has carried them.
JSON_HEADERS = (("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                ("Pragma", "no-cache"))


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What the endpoints read of an HTTP request, whichever door it came through.

    ``body`` is None when the body was larger than the limit (413). ``secure`` is
    whether OAuth may be spoken over this transport (https, or plain http to loopback).
    """

    path: str
    query: str
    mimetype: str
    authorization: str
    body: bytes | None
    remote_addr: str
    secure: bool


@dataclass(slots=True)
class HttpResponse:
    """An answer, and what the access log and metrics may know of it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    client_id: str = ""
    org: str = ""
    outcome: str = ""  # e.g. "issued", "invalid_client", "active", "inactive"
    auth_method: str = ""


@dataclass(frozen=True)
class Settings:
    """The configuration the endpoints use, read once when the app is built."""

    issuer: str
    hmac_key: bytes
    ttl: TtlBounds
    assertion_leeway: int
    max_body: int


class TooManyFailures(Refused):
    """Too many failed requests from one address: 429 with ``Retry-After``."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(INVALID_REQUEST,
                         "Too many failed client authentications from this address; "
                         f"retry after {retry_after} seconds.", status=429)
        self.retry_after = retry_after


class Observer(Protocol_):
    """What the endpoints tell the metrics (``portal.ops.metrics`` is one)."""

    def token_issued(self, auth_method: str) -> None: ...
    def token_refused(self, error: str, auth_method: str | None) -> None: ...
    def introspected(self, active: bool) -> None: ...
    def revoked(self) -> None: ...
    def db_error(self) -> None: ...


class NoOpObserver:
    """An :class:`Observer` that counts nothing."""

    def token_issued(self, auth_method: str) -> None: ...
    def token_refused(self, error: str, auth_method: str | None) -> None: ...
    def introspected(self, active: bool) -> None: ...
    def revoked(self) -> None: ...
    def db_error(self) -> None: ...


#: The answer when the database fails under a request (it is logged and counted).
UNAVAILABLE = "The database is unavailable; try again shortly."


# -- the one error writer ------------------------------------------------------------------


_json_answer = json.JSONEncoder(sort_keys=True, ensure_ascii=True).encode


def json_bytes(document: Mapping[str, Any]) -> bytes:
    """A JSON answer as the app's provider writes it (sorted keys, ASCII)."""
    return _json_answer(document).encode()


def safe_description(text: str, limit: int = 300) -> str:
    """Printable ASCII without quote or backslash, as RFC 6749 §5.2 requires."""
    return "".join(c for c in text if 0x20 <= ord(c) <= 0x7E and c not in '"\\')[:limit]


def error_response(refused: Refused, *, basic: bool = False) -> HttpResponse:
    """RFC 6749 §5.2: ``error`` and ``error_description``, ``Cache-Control: no-store``;
    401 with ``WWW-Authenticate`` for ``invalid_client`` when Basic was used."""
    description = safe_description(refused.description)
    headers = list(JSON_HEADERS)
    if refused.status == 401:
        headers.append(("WWW-Authenticate", f'Basic error="{refused.error}", '
                                            f'error_description="{description}"'))
    if isinstance(refused, TooManyFailures):
        headers.append(("Retry-After", str(refused.retry_after)))
    body = {"error": refused.error}
    if description:
        body["error_description"] = description
    client = refused.client
    return HttpResponse(refused.status, headers, json_bytes(body),
                        client_id=client.public_id if client else "",
                        org=client.org_public_id if client else "", outcome=refused.error)


def ok(document: Mapping[str, Any], **info: str) -> HttpResponse:
    return HttpResponse(200, list(JSON_HEADERS), json_bytes(document), **info)


# -- parsing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presented to authenticate a client, not yet checked."""

    presented: Presented
    secret: str = ""
    assertion: str = ""
    api_key: str = ""


def _malformed_basic() -> Refused:
    return Refused(INVALID_CLIENT, "Malformed Basic credentials.", status=401)


def parse_basic(header: str) -> tuple[str, str]:
    """Client id and secret from a Basic header, form-decoded (RFC 6749 §2.3.1)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        raise _malformed_basic()
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise ValueError("no colon")
        client_id = unquote_plus(raw_id, errors="strict")
        secret = unquote_plus(raw_secret, errors="strict")
    except (binascii.Error, ValueError, UnicodeDecodeError) as e:
        raise _malformed_basic() from e
    if not client_id or not secret:
        raise _malformed_basic()
    return client_id, secret


def credentials(authorization: str, params: Params, *, api_keys: bool) -> Credentials:
    """The one client authentication method a request uses (more than one is an error)."""
    used = []
    if authorization[:5].lower() == "basic":
        used.append(BASIC)
    bearer = api_keys and authorization[:7].lower() == "bearer "
    if bearer:
        used.append("bearer")
    if "client_secret" in params.data:
        used.append(POST)
    if "client_assertion" in params.data or "client_assertion_type" in params.data:
        used.append(PRIVATE_KEY_JWT)
    if len(used) > 1:
        raise InvalidRequestError("Use exactly one client authentication method per request.")
    if not used:
        raise Refused(INVALID_CLIENT, "Client authentication is required.", status=401)
    method = used[0]
    if method == "bearer":
        return Credentials(Presented("bearer"), api_key=authorization[7:].strip())
    if method == BASIC:
        client_id, secret = parse_basic(authorization)
        body_id = params.data.get("client_id")
        if body_id is not None and body_id != client_id:
            raise InvalidRequestError("client_id in the body does not match the Basic credentials.")
        return Credentials(Presented(BASIC, client_id), secret=secret)
    if method == POST:
        client_id = params.data.get("client_id", "")
        if not client_id:
            raise Refused(INVALID_CLIENT, "Missing client_id.")
        return Credentials(Presented(POST, client_id), secret=params.data.get("client_secret", ""))
    if params.data.get("client_assertion_type") != exchange.ASSERTION_TYPE:
        raise Refused(INVALID_CLIENT, f"client_assertion_type must be {exchange.ASSERTION_TYPE}.")
    assertion = params.data.get("client_assertion", "")
    return Credentials(Presented(PRIVATE_KEY_JWT, exchange.assertion_subject(
        assertion, Presented(PRIVATE_KEY_JWT))), assertion=assertion)


def requested_scopes(params: Params, error: str = INVALID_SCOPE) -> tuple[str, ...] | None:
    """``scope`` (RFC 6749 §3.3); absent or empty means not asked (§3.1)."""
    try:
        scopes = parse_scope(params.data.get("scope"))
    except ValidationFailed as e:
        description = e.message if error == INVALID_SCOPE else "The scope parameter is malformed."
        raise Refused(error, description) from e
    return tuple(scopes) if scopes else None


def requested_audiences(params: Params) -> tuple[str, ...] | None:
    """``audience`` and ``resource`` values (RFC 8707); ``resource`` must be an absolute
    URI without a fragment; empty values count as not sent (RFC 6749 §3.1)."""
    values = [v for v in params.lists.get("audience", []) if v]
    for resource in params.lists.get("resource", []):
        if not resource:
            continue
        # As API identifiers are written (urn: ones too); http(s) ones need a host.
        if not is_absolute_uri(resource):
            raise Refused(INVALID_TARGET, "resource must be an absolute URI without a fragment.")
        values.append(resource)
    return tuple(values) if values else None


# -- the endpoints -------------------------------------------------------------------------


@dataclass(slots=True)
class Attempt:
    """One request's failure limit (the address's count of failed requests). It is
    checked before anything is refused or authenticated: with the caller's read when the
    request gets that far (``key``: the count comes in the same statement), else on its
    own before the refusal is answered."""

    address: str
    key: str | None
    checked: bool = False


@dataclass
class Caller:
    """Who called introspection or revocation: a client of an org, or an org API key."""

    org_id: int
    label: str
    client: ClientSnapshot | None = None
    api_key: ApiKeyCaller | None = None
    record: TokenRecord | None = field(default=None, repr=False)


class Protocol:
    """The three endpoints over one store, one key ring and one failure limit."""

    def __init__(self, *, store: TokenStore, keyring: KeyRing, failures: FailureLimit,
                 config: Mapping[str, Any], observer: Observer | None = None) -> None:
        self.store = store
        self.keyring = keyring
        self.failures = failures
        self.config = config
        self.observer: Observer = observer or NoOpObserver()
        self.database_errors = store.connections.database_errors
        self._settings: tuple[tuple[Any, ...], Settings] | None = None
        # On SQLite a protocol request's database work is local I/O that releases the
        # GIL many times (each statement, the writers' lock file): two of a worker's
        # threads in it at once only hand the GIL back and forth at each of those
        # points. One at a time per process, the other thread stays free for the
        # portal (+19 % ES256 tokens a second: bench/README.md, "Follow-ups of
        # 2026-12-03"). On PostgreSQL the waits are the server's: overlapping them pays.
        self._one_at_a_time: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if store.connections.sqlite else contextlib.nullcontext())

    @property
    def settings(self) -> Settings:
        """The configuration as it is now: the portal's pages see a changed setting at
        once, and so do these endpoints (rebuilt only when one of its values changed)."""
        config = self.config
        key = tuple(map(config.get, SETTINGS_KEYS))
        cached = self._settings
        if cached is None or cached[0] != key:
            cached = self._settings = (key, settings_of(config))
        return cached[1]

    def _assertion_audiences(self, path: str) -> tuple[str, ...]:
        """The ``aud`` a client assertion may name (RFC 7523 §3): the issuer or an endpoint."""
        issuer = self.settings.issuer
        return (issuer, issuer + "/", issuer + TOKEN_PATH, issuer + path)

    # -- shared steps --------------------------------------------------------------------

    def _read(self, request: HttpRequest) -> Params:
        """The body, then the transport: refusals in that order (the failure limit comes
        before either: :meth:`_limit_first`)."""
        check_query(request.query)
        if request.body is None:
            raise Refused(INVALID_REQUEST, "The request body is too large.", status=413)
        params = parse_body(request.mimetype, request.body)
        if not request.secure:
            raise Refused("insecure_transport", "OAuth 2 MUST utilize https.")
        return params

    def _attempt(self, request: HttpRequest) -> Attempt:
        return Attempt(request.remote_addr, self.failures.counter_key(request.remote_addr))

    def _limit(self, connection: Connection | None, attempt: Attempt,
               hits: int | None = None) -> None:
        """Refuse an address over the failure limit (429); ``hits`` is its count when it
        was read with the caller, else it is read now."""
        attempt.checked = True
        retry = (self.failures.retry_after(attempt.address, connection) if hits is None
                 else self.failures.retry_after_hits(attempt.address, hits))
        if retry is not None:
            raise TooManyFailures(retry)

    def _limit_first(self, connection: Connection | None, attempt: Attempt,
                     refused: Refused) -> Refused:
        """The refusal to answer: :class:`TooManyFailures` instead of ``refused`` when the
        request was refused before its limit was checked and the address is over it, so
        an address over the limit is told so whatever it sent."""
        if attempt.checked or isinstance(refused, TooManyFailures):
            return refused
        try:
            self._limit(connection, attempt)
        except TooManyFailures as over:
            return over
        return refused

    def _digest(self, value: str) -> bytes:
        return crypto.hmac_digest(self.settings.hmac_key, value)

    def _client(self, connection: Connection, given: Credentials, path: str, now: datetime,
                attempt: Attempt, jti: str | None = None,
                ) -> tuple[ClientSnapshot, TokenRecord | None]:
        """The client the credentials prove, and with ``jti`` its org's record of that token;
        the failure limit is checked first, on the count read with them."""
        presented = given.presented
        if presented.method == PRIVATE_KEY_JWT:
            client, record, hits = self.store.client_and_record(
                connection, public_id=presented.client_id, digest=b"", jti=jti,
                limit_key=attempt.key)
            self._limit(connection, attempt, hits)
            if client is None:
                raise exchange.invalid_client("Invalid client assertion.", presented,
                                              detail="unknown client")
            assertion = exchange.verify_assertion(
                client, given.assertion, presented, audiences=self._assertion_audiences(path),
                now=now, leeway=self.settings.assertion_leeway)
            if not self.store.use_assertion(connection, client_ref=client.public_id,
                                            jti=assertion.jti, expires_at=assertion.expires_at):
                raise exchange.invalid_client("JWT ID is used before.", presented,
                                              detail="assertion replayed", client=client)
        else:
            # The keyed hash is computed for unknown clients too: an unknown client
            # id costs what a wrong secret costs.
            digest = self._digest(given.secret)
            client, record, hits = self.store.client_and_record(
                connection, public_id=presented.client_id, digest=digest, jti=jti,
                limit_key=attempt.key)
            self._limit(connection, attempt, hits)
        return exchange.authenticate(client, presented, now), record

    def _fail(self, request: HttpRequest, refused: Refused,
              connection: Connection | None = None) -> None:
        """Count a failure toward the address's limit: every failed authentication, and
        every failure of a request that authenticated no client (anonymous)."""
        if refused.error == INVALID_CLIENT or refused.client is None:
            self.failures.hit(request.remote_addr, connection)

    # -- POST /oauth/token ---------------------------------------------------------------

    def token(self, request: HttpRequest) -> HttpResponse:
        """Issue an access token (RFC 6749 §4.4, client credentials)."""
        try:
            with self._one_at_a_time, self.store.connections.connection() as connection:
                return self._token(connection, request)
        except self.database_errors:
            return self._unavailable()

    def _unavailable(self) -> HttpResponse:
        """A database error under a request: logged and counted; the caller is told to
        retry (503), never given a trace."""
        log.exception("database error under a protocol request")
        self.observer.db_error()
        return error_response(Refused("temporarily_unavailable", UNAVAILABLE, status=503))

    def _token(self, connection: Connection, request: HttpRequest) -> HttpResponse:
        now = utcnow()
        given: Credentials | None = None
        attempt = self._attempt(request)
        try:
            params = self._read(request)
            grant_type = params.data.get("grant_type")
            if not grant_type:
                raise InvalidRequestError("Missing grant_type parameter.")
            if grant_type != "client_credentials":
                raise Refused(UNSUPPORTED_GRANT_TYPE, "")
            given = credentials(request.authorization, params, api_keys=False)
            client, _ = self._client(connection, given, TOKEN_PATH, now, attempt)
            wanted = TokenRequest(scopes=requested_scopes(params),
                                  audiences=requested_audiences(params))
            settings = self.settings
            try:
                issued = tokens.issue(
                    connection, client, wanted, store=self.store, keys=self.keyring,
                    issuer=settings.issuer, bounds=settings.ttl,
                    source=TokenSource.TOKEN_ENDPOINT, source_ip=request.remote_addr, now=now)
            except Refused as refused:
                refused.client = refused.client or client
                raise
        except Refused as refused:
            refused = self._limit_first(connection, attempt, refused)
            if isinstance(refused, TooManyFailures):
                return error_response(refused)  # not a request we looked at: nothing recorded
            return self._token_refused(connection, request, refused, given, now)
        self.observer.token_issued(given.presented.method)
        return ok({"access_token": issued.access_token, "token_type": "Bearer",
                   "expires_in": issued.expires_in, "scope": issued.claims["scope"]},
                  client_id=client.public_id, org=client.org_public_id, outcome="issued",
                  auth_method=given.presented.method)

    def _token_refused(self, connection: Connection, request: HttpRequest, refused: Refused,
                       given: Credentials | None, now: datetime) -> HttpResponse:
        """Record a failed token request, with its reason, in the usage history."""
        self._fail(request, refused, connection)
        client = refused.client
        presented_id = given.presented.client_id if given is not None else ""
        event = event_values(
            kind=UsageKind.TOKEN_FAILED, org_id=client.org_id if client else None,
            client_id=client.id if client else None,
            client_ref=client.public_id if client else presented_id,
            reason=refused.reason, source_ip=request.remote_addr, now=now)
        self.store.insert_event(connection, event)
        self.observer.token_refused(refused.error, given.presented.method if given else None)
        basic = given is not None and given.presented.basic
        if refused.error == INVALID_CLIENT and not basic and refused.status == 401 \
                and given is not None:
            refused.status = 400  # 401 only when the client used HTTP authentication
        response = error_response(refused, basic=basic)
        response.auth_method = given.presented.method if given else ""
        return response

    # -- POST /oauth/introspect and /oauth/revoke ------------------------------------------

    def _caller(self, connection: Connection, request: HttpRequest, params: Params,
                path: str, now: datetime, jti: str | None, attempt: Attempt) -> Caller:
        """A client of the org (any method it may use) or an org API key as a Bearer token,
        read with its org's record of token ``jti``."""
        given = credentials(request.authorization, params, api_keys=True)
        if given.api_key:
            key, record = None, None
            if given.api_key.startswith(crypto.API_KEY_PREFIX) and len(given.api_key) <= 200 \
                    and "\x00" not in given.api_key:
                key, record, hits = self.store.api_key_and_record(
                    connection, digest=self._digest(given.api_key), jti=jti,
                    limit_key=attempt.key)
                self._limit(connection, attempt, hits)
            if key is None or key.revoked_at is not None:
                raise Refused(INVALID_CLIENT, "Invalid API key.", status=401)
            self.store.touch_api_key(connection, key_id=key.id, last_used_at=key.last_used_at,
                                     now=now)
            return Caller(org_id=key.org_id, label=key.label, api_key=key, record=record)
        client, record = self._client(connection, given, path, now, attempt, jti)
        if not client.enabled:
            raise Refused(UNAUTHORIZED_CLIENT, "This client is disabled.", client=client)
        return Caller(org_id=client.org_id, label=f"client:{client.public_id}"[:64],
                      client=client, record=record)

    def _record(self, connection: Connection, caller: Caller, token: UnverifiedToken | None,
                now: datetime) -> TokenRecord | None:
        """The caller's org's record of the token; else, for a token issued lately whose
        record may still be queued, the one its claims and its client (of the caller's
        org) make (:func:`exchange.unrecorded`). Unverified either way: see :meth:`_verified`."""
        if caller.record is not None or token is None:
            return caller.record
        claims = token.claims
        public_id = claims.get("client_id")
        if not isinstance(public_id, str) or not exchange.issued_lately(claims, now):
            return None
        client = self.store.client(connection, public_id=public_id, org_id=caller.org_id)
        return exchange.unrecorded(claims, kid=token.kid, client=client, now=now)

    def _verified(self, token: UnverifiedToken | None, record: TokenRecord | None,
                  now: datetime) -> tuple[Mapping[str, Any] | None, int | None]:
        """The token's claims if it verifies with the key its record names, and that key's org."""
        return tokens.verified_claims(token, kid=record.kid if record is not None else None,
                                      keys=self.keyring, issuer=self.settings.issuer, now=now)

    def introspect(self, request: HttpRequest) -> HttpResponse:
        """RFC 7662: whether a token is active, for a client or API key of the same org."""
        try:
            with self._one_at_a_time, self.store.connections.connection() as connection:
                return self._introspect(connection, request)
        except self.database_errors:
            return self._unavailable()

    def _introspect(self, connection: Connection, request: HttpRequest) -> HttpResponse:
        now = utcnow()
        attempt = self._attempt(request)
        try:
            params = self._read(request)
            value = params.data.get("token")
            token = read_token(value) if value else None
            caller = self._caller(connection, request, params, INTROSPECT_PATH, now,
                                  token.claimed_jti if token is not None else None, attempt)
            if value is None:
                raise InvalidRequestError("Missing token parameter.")
            wanted = requested_scopes(params, error=INVALID_REQUEST) or ()
            record = self._record(connection, caller, token, now)
            claims, key_org = self._verified(token, record, now)
            body = exchange.introspection(
                record, claims, caller_org_id=caller.org_id,
                kid=token.kid if token is not None else None, key_org_id=key_org,
                wanted=wanted, now=now)
            # The event names the token's client whenever the token is one of the org's,
            # signed by the key its record names: an expired or revoked one too (so it
            # shows under that client), never a forged one that merely claims its jti.
            if not body["active"] and (record is None or key_org != record.org_id):
                record = None
            self.store.insert_event(connection, event_values(
                kind=UsageKind.TOKEN_INTROSPECTED, org_id=caller.org_id,
                client_id=record.client_id if record is not None else None,
                client_ref=caller.label, reason="active" if body["active"] else "inactive",
                jti=record.jti if record is not None else None,
                source_ip=request.remote_addr, now=now))
        except Refused as refused:
            refused = self._limit_first(connection, attempt, refused)
            if not isinstance(refused, TooManyFailures) and refused.error == INVALID_CLIENT:
                self._fail(request, refused, connection)
            return error_response(refused)
        self.observer.introspected(bool(body["active"]))
        client = caller.client
        return ok(body, client_id=client.public_id if client else caller.label,
                  outcome="active" if body["active"] else "inactive")

    def revoke(self, request: HttpRequest,
               revoke_record: Callable[[TokenRecord, Mapping[str, Any], Caller, datetime], bool],
               ) -> HttpResponse:
        """RFC 7009: a client revokes its own token (an org API key, any of the org's).

        Unknown, malformed, expired and other orgs' tokens answer 200 and change
        nothing. ``revoke_record`` writes the revocation of the token's record (one not
        written yet: from its verified claims) with the portal's service, in the
        request's session, returning False when it was already revoked.
        """
        now = utcnow()
        attempt = self._attempt(request)
        try:
            with self._one_at_a_time, self.store.connections.connection() as connection:
                params = self._read(request)
                value = params.data.get("token")
                token = read_token(value) if value else None
                caller = self._caller(connection, request, params, REVOKE_PATH, now,
                                      token.claimed_jti if token is not None else None,
                                      attempt)
                record = self._record(connection, caller, token, now)
            if value is None:
                raise InvalidRequestError("Missing token parameter.")
            claims, key_org = self._verified(token, record, now)
            if claims is None or record is None or key_org != record.org_id:
                record = None
            own = caller.client
            if record is not None and own is not None and record.client_id != own.id:
                raise Refused(UNAUTHORIZED_CLIENT, "The token was not issued to this client.",
                              client=own)
        except Refused as refused:
            refused = self._limit_first(None, attempt, refused)
            if not isinstance(refused, TooManyFailures) and refused.error == INVALID_CLIENT:
                self._fail(request, refused)
            return error_response(refused)
        if record is not None and claims is not None \
                and revoke_record(record, claims, caller, now):
            self.observer.revoked()
        return ok({}, outcome="revoked" if record is not None else "unknown")


SETTINGS_KEYS = ("ISSUER", "CLIENT_SECRET_HMAC_KEY", "MIN_TOKEN_TTL", "DEFAULT_TOKEN_TTL",
                 "MAX_TOKEN_TTL", "CLIENT_ASSERTION_LEEWAY", "MAX_CONTENT_LENGTH")


def settings_of(config: Mapping[str, Any]) -> Settings:
    """The endpoints' :class:`Settings` from an app's configuration."""
    return Settings(
        issuer=str(config["ISSUER"]).rstrip("/"),
        hmac_key=str(config["CLIENT_SECRET_HMAC_KEY"]).encode("utf-8"),
        ttl=TtlBounds(int(config["MIN_TOKEN_TTL"]), int(config["DEFAULT_TOKEN_TTL"]),
                      int(config["MAX_TOKEN_TTL"])),
        assertion_leeway=int(config["CLIENT_ASSERTION_LEEWAY"]),
        max_body=int(config.get("MAX_CONTENT_LENGTH") or 64 * 1024),
    )

