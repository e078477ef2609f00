"""The token endpoint's and introspection's database work, as raw statements.

One read finds the client by its public id and the keyed hash of the
presented secret (for a token, with its org's public id, its user's,
whether that user is still a member, and its grants of APIs; for introspection, only what is checked
of the caller, and its org's record of the token); one
write records an issued token with its usage event, or an introspection's
usage event. The statements are the models' own Core
tables, compiled once per engine (:mod:`portal.core.rawdb`). Nothing here is
cached between requests: a revoked secret, a disabled client or a revoked
token is seen by the very next request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Engine, and_, bindparam, exists, func, insert, select, update

from portal.core import crypto, settings
from portal.core.apis.grants import (
    LINE_SEPARATOR,
    GrantedApi,
    grant_line,
    parse_grant_lines,
    sql_text,
)
from portal.core.apis.models import Api, ClientGrant
from portal.core.clients.models import Client, ClientKind, ClientSecret, secret_is_active
from portal.core.db import get_engine, table_of
from portal.core.orgs.models import Organization
from portal.core.rawdb import RawConnection, RawConnections, RawStatement
from portal.core.tokens.models import IssuedToken, token_is_active
from portal.core.tokens.services import Signed, issued_with_event
from portal.core.types import UTCDateTime
from portal.core.usage.models import UsageEvent
from portal.core.users.models import Membership, User

EXTENSION_KEY = "latchkey.hotpath"
# Update last-used times at most this often, so a busy client does not turn
# every token request into an extra UPDATE of the same row.
LAST_USED_GRANULARITY = timedelta(seconds=60)


@dataclass(frozen=True)
class SecretUser:
    public_id: str


@dataclass(frozen=True)
class Caller:
    """A client authenticated by its secret, as introspection checks it."""

    org_id: int
    client_id: str
    auth_methods: list[str]
    enabled: bool
    secret_expires_at: datetime | None
    secret_revoked_at: datetime | None

    def secret_is_active(self, now: datetime) -> bool:
        return secret_is_active(self.secret_revoked_at, self.secret_expires_at, now)


@dataclass(frozen=True)
class AuthenticatedClient(Caller):
    """A client as the token endpoint needs it, and the secret it presented.

    Has the attributes :func:`portal.core.tokens.services.sign_token` reads
    from a :class:`~portal.core.clients.models.Client`.
    """

    id: int
    kind: ClientKind
    granted: dict[str, GrantedApi]
    default_audience: str | None
    token_ttl: int
    custom_claims: dict[str, Any]
    last_used_at: datetime | None
    org_public_id: str
    user: SecretUser | None
    user_is_member: bool
    secret_id: int
    secret_last_used_at: datetime | None

    def may_get_tokens(self, now: datetime) -> bool:
        """Every rule of the token endpoint's client checks that reads the client's row."""
        if not self.enabled or not self.secret_is_active(now):
            return False
        return self.kind is not ClientKind.USER or (self.user is not None and self.user_is_member)


@dataclass(frozen=True)
class LiveRecord:
    client_id: int
    jti: str
    scopes: list[str]
    expires_at: datetime
    revoked_at: datetime | None
    client_enabled: bool

    def is_active(self, now: datetime) -> bool:
        """As :meth:`IssuedToken.is_active`, and its client still enabled."""
        return self.client_enabled and token_is_active(self.revoked_at, self.expires_at, now)


@dataclass
class HotPath:
    """The compiled statements and the connections of one engine."""

    engine: Engine
    connections: RawConnections
    client_by_secret: RawStatement
    caller_and_record: RawStatement
    insert_token: RawStatement
    insert_event: RawStatement
    touch_client: RawStatement
    touch_secret: RawStatement
    token_with_event: RawStatement | None = None
    dialect: str = field(init=False)

    def __post_init__(self) -> None:
        self.dialect = self.engine.dialect.name


_building = threading.Lock()


def hot_path() -> HotPath:
    """The current app's :class:`HotPath`, built on first use (once, even by many threads)."""
    found: HotPath | None = current_app.extensions.get(EXTENSION_KEY)
    if found is None:
        with _building:
            found = current_app.extensions.get(EXTENSION_KEY)
            if found is None:
                found = _build(get_engine())
                current_app.extensions[EXTENSION_KEY] = found
    return found


def _insert_all(table: Any, skip: tuple[str, ...] = ("id",)) -> Any:
    return insert(table).values(
        {c.name: bindparam(c.name, type_=c.type) for c in table.columns if c.name not in skip}
    )


def touch_statement(table: Any) -> Any:
    """``UPDATE`` of a row's ``last_used_at`` (parameters ``row_id``, ``now``).

    Being used is not being edited: ``updated_at`` (an ``onupdate`` column
    of clients) keeps its value.
    """
    values: dict[str, Any] = {"last_used_at": bindparam("now", type_=UTCDateTime())}
    if "updated_at" in table.c:
        values["updated_at"] = table.c.updated_at
    return update(table).where(table.c.id == bindparam("row_id")).values(values)


def _build(engine: Engine) -> HotPath:
    clients, secrets = table_of(Client), table_of(ClientSecret)
    orgs, users, members = table_of(Organization), table_of(User), table_of(Membership)
    tokens, events = table_of(IssuedToken), table_of(UsageEvent)
    apis, grants = table_of(Api), table_of(ClientGrant)
    is_member = exists().where(members.c.org_id == clients.c.org_id,
                               members.c.user_id == clients.c.user_id)
    # The client's grants in the same read, one line per API
    # (portal.core.apis.grants.parse_grant_lines reads them back).
    granted = (
        select(func.aggregate_strings(grant_line(apis, grants), sql_text(LINE_SEPARATOR)))
        .select_from(grants.join(apis, apis.c.id == grants.c.api_id))
        .where(grants.c.client_id == clients.c.id)
        .scalar_subquery()
    )
    caller_columns = (
        clients.c.id, clients.c.org_id, clients.c.client_id, clients.c.kind,
        granted.label("granted"), clients.c.auth_methods, clients.c.token_ttl,
        clients.c.custom_claims, clients.c.enabled, clients.c.last_used_at,
        orgs.c.public_id, users.c.public_id, is_member.label("is_member"),
        secrets.c.id, secrets.c.expires_at, secrets.c.revoked_at, secrets.c.last_used_at,
    )
    caller_from = (
        secrets.join(clients, clients.c.id == secrets.c.client_id)
        .join(orgs, orgs.c.id == clients.c.org_id)
        .outerjoin(users, users.c.id == clients.c.user_id)
    )
    caller_is = (
        clients.c.client_id == bindparam("client_id"),
        secrets.c.secret_hash == bindparam("secret_hash", type_=secrets.c.secret_hash.type),
    )
    client_by_secret = select(*caller_columns).select_from(caller_from).where(*caller_is)
    # Introspection: the caller (only what is checked of it) and, in the same read,
    # its org's record of the token.
    record_client = clients.alias("record_client")
    caller_and_record = (
        select(clients.c.org_id, clients.c.client_id, clients.c.auth_methods,
               clients.c.enabled, secrets.c.expires_at, secrets.c.revoked_at,
               tokens.c.client_id, tokens.c.jti, tokens.c.scopes, tokens.c.expires_at,
               tokens.c.revoked_at, record_client.c.enabled)
        .select_from(
            secrets.join(clients, clients.c.id == secrets.c.client_id)
            .outerjoin(tokens, and_(tokens.c.jti == bindparam("jti"),
                                    tokens.c.org_id == clients.c.org_id))
            .outerjoin(record_client, record_client.c.id == tokens.c.client_id)
        )
        .where(*caller_is)
    )
    return HotPath(
        engine=engine,
        connections=RawConnections(engine),
        client_by_secret=RawStatement(client_by_secret, engine),
        caller_and_record=RawStatement(caller_and_record, engine),
        insert_token=RawStatement(_insert_all(tokens, ("id", "revoked_at", "revoked_by")), engine),
        insert_event=RawStatement(_insert_all(events), engine),
        touch_client=RawStatement(touch_statement(clients), engine),
        touch_secret=RawStatement(touch_statement(secrets), engine),
        token_with_event=(RawStatement(issued_with_event(), engine)
                          if engine.dialect.name == "postgresql" else None),
    )


def authenticate_secret(
    hot: HotPath, connection: RawConnection, client_id: str, secret: str
) -> AuthenticatedClient | None:
    """The client with this public id that has a stored secret matching ``secret``, else None.

    The secret is found by the keyed hash (unique, indexed), which reveals
    nothing about the secret through timing. Whether the secret and the
    client may be used is left to the caller (``may_get_tokens``).
    """
    row = _caller_row(hot.client_by_secret, connection, client_id, secret, {})
    return None if row is None else _authenticated(row)


def authenticate_with_record(
    hot: HotPath, connection: RawConnection, client_id: str, secret: str, jti: str | None
) -> tuple[Caller, LiveRecord | None] | None:
    """The caller, found as :func:`authenticate_secret` finds a client, and in the
    same read its org's record of the token with this ``jti`` (None: no record,
    or no ``jti``)."""
    row = _caller_row(hot.caller_and_record, connection, client_id, secret, {"jti": jti})
    if row is None:
        return None
    (org_id, public_client_id, auth_methods, caller_enabled, secret_expires, secret_revoked,
     record_client_id, record_jti, scopes, expires_at, revoked_at, enabled) = row
    caller = Caller(org_id=org_id, client_id=public_client_id,
                    auth_methods=list(auth_methods or []), enabled=bool(caller_enabled),
                    secret_expires_at=secret_expires, secret_revoked_at=secret_revoked)
    if record_jti is None:
        return caller, None
    return caller, LiveRecord(client_id=record_client_id, jti=record_jti,
                              scopes=list(scopes or []), expires_at=expires_at,
                              revoked_at=revoked_at, client_enabled=bool(enabled))


def _caller_row(statement: RawStatement, connection: RawConnection, client_id: str,
                secret: str, extra: dict[str, Any]) -> tuple[Any, ...] | None:
    if not client_id or len(client_id) > 64 or "\x00" in client_id:
        return None
    digest = crypto.hmac_digest(settings.hmac_key(), secret)
    return statement.first(connection, {"client_id": client_id, "secret_hash": digest, **extra})


def _authenticated(row: tuple[Any, ...]) -> AuthenticatedClient:
    (id_, org_id, public_client_id, kind, grant_lines, auth_methods, ttl, custom,
     enabled, last_used, org_public_id, user_public_id, member, secret_id, secret_expires,
     secret_revoked, secret_last_used) = row
    granted, default_audience = parse_grant_lines(grant_lines)
    return AuthenticatedClient(
        id=id_, org_id=org_id, client_id=public_client_id, kind=ClientKind(kind),
        granted=granted, default_audience=default_audience,
        auth_methods=list(auth_methods or []), token_ttl=ttl, custom_claims=dict(custom or {}),
        enabled=bool(enabled), last_used_at=last_used, org_public_id=org_public_id,
        user=SecretUser(user_public_id) if user_public_id is not None else None,
        user_is_member=bool(member), secret_id=secret_id, secret_expires_at=secret_expires,
        secret_revoked_at=secret_revoked, secret_last_used_at=secret_last_used,
    )


def last_used_is_stale(last_used: datetime | None, now: datetime) -> bool:
    """Whether a last-used time is old enough to be written again."""
    return last_used is None or now - last_used > LAST_USED_GRANULARITY


def record_token(
    hot: HotPath, connection: RawConnection, client: AuthenticatedClient, signed: Signed,
    event: dict[str, Any], *, now: datetime,
) -> None:
    """Write the token's record and usage event, and stale last-used times, atomically.

    On PostgreSQL with nothing stale: one statement (a data-modifying CTE) in
    autocommit mode. Otherwise one short transaction; on SQLite its
    ``BEGIN IMMEDIATE`` takes the write lock only for these statements.
    """
    stale_client = last_used_is_stale(client.last_used_at, now)
    stale_secret = last_used_is_stale(client.secret_last_used_at, now)
    if hot.token_with_event is not None and not (stale_client or stale_secret):
        params = {f"t_{k}": v for k, v in signed.values.items()}
        params.update({f"e_{k}": v for k, v in event.items()})
        hot.token_with_event.execute(connection, params)
        return
    with hot.connections.write(connection):
        hot.insert_token.execute(connection, signed.values)
        hot.insert_event.execute(connection, event)
        if stale_client:
            hot.touch_client.execute(connection, {"row_id": client.id, "now": now})
        if stale_secret:
            hot.touch_secret.execute(connection, {"row_id": client.secret_id, "now": now})


def insert_event(hot: HotPath, connection: RawConnection, event: dict[str, Any]) -> None:
    """One usage event, one statement (on SQLite behind the write-lock file)."""
    hot.connections.write_one(connection, hot.insert_event, event)
