"""What the token exchange reads and writes, each written once, used by every door.

- :meth:`TokenStore.client`: a client as a :class:`ClientSnapshot`, in one statement: for
  authentication by its public id and the keyed hash of the presented secret, or for a
  mint by its org and public id;
- :meth:`TokenStore.client_and_record`: the same and, in the same read, its org's record of
  the token with a given ``jti`` and the failure count of the caller's address (the token
  endpoint, and introspection and revocation by a client);
- :meth:`TokenStore.api_key_and_record`: an org API key, its org's record of a token and
  the failure count;
- :meth:`TokenStore.record_issued`: an issued token's record with its usage event (the
  token endpoint's in the :class:`WriteQueue`'s next batch), and the client's and
  secret's last-used times when stale;
- :meth:`TokenStore.touch_api_key`: an org API key's last-used time, when stale;
- :meth:`TokenStore.insert_event`: one usage event;
- :meth:`TokenStore.use_assertion`: a ``private_key_jwt`` assertion's ``jti``, once.

The statements are the models' own Core tables compiled once per engine
(:class:`portal.core.rawdb.RawStatement`) and run on a DBAPI connection: one of the
store's own (:class:`portal.core.rawdb.RawConnections`, autocommit) for the protocol
endpoints, or the ORM session's (:func:`session_connection`, inside its transaction)
for the portal and the management API, so that a mint's record and its audit entry
commit together. A read is used again by a later request only on SQLite, and only
while nothing has changed in the database (:class:`~portal.core.rawdb.Unchanged`): a
revoked secret, a disabled client or a revoked token is seen by the very next request.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import multiprocessing.util
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import (
    Engine,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from portal.core.api_keys.models import ApiKey
from portal.core.apis.grants import (
    LINE_SEPARATOR,
    GrantedApi,
    grant_line,
    parse_grant_lines,
    sql_text,
)
from portal.core.apis.models import Api, ClientGrant
from portal.core.clients.models import Client, ClientKind, ClientSecret, is_usable_public_id
from portal.core.db import table_of
from portal.core.orgs.models import Organization
from portal.core.ratelimit import live_hits
from portal.core.ratelimit.models import RateLimitCounter
from portal.core.rawdb import (
    RawConnection,
    RawConnections,
    RawStatement,
    Unchanged,
    sqlite_file,
)
from portal.core.tokens.exchange import ClientSnapshot, SecretMatch, TokenRecord
from portal.core.tokens.journal import ORPHAN_SCAN_SECONDS, Journal, Segment, journal_dir
from portal.core.tokens.models import IssuedToken, UsedAssertion
from portal.core.types import UTCDateTime
from portal.core.usage.models import UsageEvent
from portal.core.users.models import Membership, User

log = logging.getLogger("latchkey.db")

EXTENSION_KEY = "latchkey.store"
# Update last-used times at most this often, so a busy client does not turn
# every token request into an extra UPDATE of the same row.
LAST_USED_GRANULARITY = timedelta(seconds=60)
MAX_CLIENT_ID = 64


@dataclass(frozen=True, slots=True)
class ApiKeyCaller:
    """An org API key presented as a Bearer credential."""

    id: int
    org_id: int
    hint: str
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def label(self) -> str:
        return f"api_key:{self.hint}"


class SessionConnection:
    """The DBAPI connection under an ORM session, inside the session's transaction."""

    def __init__(self, session: Session) -> None:
        self.driver: Any = session.connection().connection.driver_connection

    def cursor(self) -> Any:
        return self.driver.cursor()


Connection = RawConnection | SessionConnection


def session_connection(session: Session) -> SessionConnection:
    """Run store statements in ``session``'s transaction (they commit with it)."""
    return SessionConnection(session)


def last_used_is_stale(last_used: datetime | None, now: datetime) -> bool:
    """Whether a last-used time is old enough to be written again."""
    return last_used is None or now - last_used > LAST_USED_GRANULARITY


def _insert_all(table: Any, skip: tuple[str, ...] = ("id",), *,
                new_only: tuple[str, ...] = (), dialect: str = "") -> Any:
    """``INSERT`` of every column but ``skip``, one parameter each; with ``new_only``
    (unique columns) a row that would repeat one of them is skipped (``ON CONFLICT DO
    NOTHING``, PostgreSQL's and SQLite's own)."""
    values = {c.name: bindparam(c.name, type_=c.type) for c in table.columns
              if c.name not in skip}
    if not new_only:
        return insert(table).values(values)
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return upsert(table).values(values).on_conflict_do_nothing(index_elements=list(new_only))


def _touch(table: Any) -> Any:
    """``UPDATE`` of a row's ``last_used_at`` (parameters ``row_id``, ``now``); being used
    is not being edited, so ``updated_at`` keeps its value."""
    values: dict[str, Any] = {"last_used_at": bindparam("now", type_=UTCDateTime())}
    if "updated_at" in table.c:
        values["updated_at"] = table.c.updated_at
    return update(table).where(table.c.id == bindparam("row_id")).values(values)


class TokenStore:
    """The compiled statements and the connections of one engine."""

    def __init__(self, engine: Engine, *, write_delay: float = 0.0, durable: bool = False,
                 defer_records: bool = False, journal_dir: Path | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.connections = RawConnections(engine, durable=durable)
        self._unchanged = Unchanged(self.connections)
        self.integrity_error: type[Exception] = engine.dialect.dbapi.IntegrityError  # type: ignore[union-attr]
        clients, secrets = table_of(Client), table_of(ClientSecret)
        orgs, users, members = table_of(Organization), table_of(User), table_of(Membership)
        tokens, events, keys = table_of(IssuedToken), table_of(UsageEvent), table_of(ApiKey)
        apis, grants = table_of(Api), table_of(ClientGrant)
        counters = table_of(RateLimitCounter)
        is_member = exists().where(members.c.org_id == clients.c.org_id,
                                   members.c.user_id == clients.c.user_id)
        # The client's grants in the same read, one line per API (parse_grant_lines).
        granted = (
            select(func.aggregate_strings(grant_line(apis, grants), sql_text(LINE_SEPARATOR)))
            .select_from(grants.join(apis, apis.c.id == grants.c.api_id))
            .where(grants.c.client_id == clients.c.id)
            .scalar_subquery()
        )
        client_columns = (
            clients.c.id, clients.c.client_id, clients.c.org_id, orgs.c.public_id, clients.c.kind,
            clients.c.enabled, clients.c.auth_methods, granted.label("granted"),
            clients.c.token_ttl, clients.c.custom_claims, clients.c.jwks, clients.c.last_used_at,
            users.c.public_id, is_member.label("is_member"),
            secrets.c.id, secrets.c.expires_at, secrets.c.revoked_at, secrets.c.last_used_at,
            clients.c.tokens_revoked_at,
        )
        by_public_id = clients.c.client_id == bindparam("client_id")

        def client_joins(source: Any) -> Any:
            """The client's org, user and presented secret joined to ``source``."""
            return (
                source.outerjoin(orgs, orgs.c.id == clients.c.org_id)
                .outerjoin(users, users.c.id == clients.c.user_id)
                .outerjoin(secrets, and_(
                    secrets.c.client_id == clients.c.id,
                    secrets.c.secret_hash == bindparam("digest",
                                                       type_=secrets.c.secret_hash.type)))
            )

        client_from = client_joins(clients)
        record_client = clients.alias("record_client")
        record_columns = (
            tokens.c.id, tokens.c.org_id, tokens.c.client_id, tokens.c.jti, tokens.c.scopes,
            tokens.c.kid, tokens.c.issued_at, tokens.c.expires_at, tokens.c.revoked_at,
            record_client.c.enabled, record_client.c.tokens_revoked_at,
        )

        def with_record(source: Any, org_id: Any) -> Any:
            return (source.outerjoin(tokens, and_(tokens.c.jti == bindparam("jti"),
                                                  tokens.c.org_id == org_id))
                    .outerjoin(record_client, record_client.c.id == tokens.c.client_id))

        def compiled(statement: Any) -> RawStatement:
            return RawStatement(statement, engine)

        self._client = compiled(select(*client_columns).select_from(client_from)
                                .where(by_public_id))
        self._org_client = compiled(
            select(*client_columns).select_from(client_from)
            .where(by_public_id, clients.c.org_id == bindparam("org_id")))
        # The protocol's reads answer one row whatever matches (an unknown client or key
        # too), with the failure count of the caller's address: no statement of its own.
        anchor = select(literal_column("1").label("one")).subquery("anchor")
        failures = live_hits(bindparam("limit_key", type_=counters.c.key.type),
                             bindparam("limit_now", type_=counters.c.expires_at.type))
        failures_column = failures.scalar_subquery().label("failures")
        self._client_and_record = compiled(
            select(*client_columns, *record_columns, failures_column)
            .select_from(with_record(client_joins(anchor.outerjoin(clients, by_public_id)),
                                     clients.c.org_id)))
        self._api_key_and_record = compiled(
            select(keys.c.id, keys.c.org_id, keys.c.hint, keys.c.revoked_at,
                   keys.c.last_used_at, *record_columns, failures_column)
            .select_from(with_record(
                anchor.outerjoin(keys, keys.c.key_hash == bindparam(
                    "digest", type_=keys.c.key_hash.type)), keys.c.org_id)))
        self._insert_token = compiled(_insert_all(tokens, ("id", "revoked_at", "revoked_by")))
        # A batched record that a revocation wrote first (from the token's claims) stays.
        self._insert_token_late = compiled(_insert_all(tokens, ("id", "revoked_at", "revoked_by"),
                                                       new_only=("jti",), dialect=self.dialect))
        self._insert_event = compiled(_insert_all(events))
        self._touch_client = compiled(_touch(clients))
        self._touch_secret = compiled(_touch(secrets))
        self._touch_api_key = compiled(_touch(keys))
        self._insert_assertion = compiled(_insert_all(table_of(UsedAssertion)))
        self._token_with_event = (compiled(_token_with_event(tokens, events))
                                  if self.dialect == "postgresql" else None)
        # The token endpoint's records ride the queue when asked to (journaled first),
        # unless every write must wait for the disk before its answer.
        self.defers_records = (write_delay > 0 and defer_records and not durable
                               and journal_dir is not None)
        # Orphaned journal segments are replayed whatever the settings are now.
        self.journal = Journal(journal_dir) if journal_dir is not None else None
        self._journal_failed = False
        self.queue = (WriteQueue(self.connections, (self._insert_token_late, self._insert_event),
                                 write_delay,
                                 journal=self.journal if self.defers_records else None,
                                 journaled=self._insert_token_late)
                      if write_delay > 0 else None)

    # -- reads --------------------------------------------------------------------------

    def client(self, connection: Connection, *, public_id: str, digest: bytes | None = None,
               org_id: int | None = None) -> ClientSnapshot | None:
        """The client with this public id (and, given ``org_id``, of that org), with the
        stored secret whose keyed hash is ``digest`` if there is one."""
        if not is_usable_public_id(public_id):
            return None
        if org_id is None:
            row = self._client.first(connection, {"client_id": public_id, "digest": digest})
        else:
            row = self._org_client.first(connection, {"client_id": public_id, "digest": digest,
                                                      "org_id": org_id})
        return None if row is None else _snapshot(row)

    def client_and_record(self, connection: Connection, *, public_id: str, digest: bytes,
                          jti: str | None, limit_key: str | None = None,
                          ) -> tuple[ClientSnapshot | None, TokenRecord | None, int | None]:
        """:meth:`client` and, in the same read, its org's record of token ``jti`` and the
        count of the failure counter ``limit_key`` (:meth:`FailureLimit.counter_key`; None
        when not read). One row whatever matches, so an unknown client id costs what a
        wrong secret costs. On SQLite, what it found is used again while nothing has
        changed in the database (:class:`~portal.core.rawdb.Unchanged`), unless it counted
        failures."""
        if not is_usable_public_id(public_id):
            return None, None, None

        def read() -> tuple[tuple[ClientSnapshot | None, TokenRecord | None, int | None], bool]:
            row = self._client_and_record.first(connection, {
                "client_id": public_id, "digest": digest, "jti": jti,
                **_limit_params(limit_key)})
            if row is None:  # never: the anchor's row is always there
                return (None, None, None), False
            failures = _failures(limit_key, row[-1])
            client = None if row[0] is None else _snapshot(row)
            # A failure count can fall with time alone (its counter expires): not kept.
            return (client, _record(row[CLIENT_COLUMNS:-1]), failures), not failures

        return self._unchanged.get(connection, (public_id, digest, jti, limit_key), read)

    def api_key_and_record(self, connection: Connection, *, digest: bytes, jti: str | None,
                           limit_key: str | None = None,
                           ) -> tuple[ApiKeyCaller | None, TokenRecord | None, int | None]:
        """The API key whose keyed hash is ``digest``, its org's record of token ``jti``
        and the count of the failure counter ``limit_key``."""
        row = self._api_key_and_record.first(
            connection, {"digest": digest, "jti": jti, **_limit_params(limit_key)})
        if row is None:  # never: the anchor's row is always there
            return None, None, None
        key = None if row[0] is None else ApiKeyCaller(
            id=row[0], org_id=row[1], hint=row[2], revoked_at=row[3], last_used_at=row[4])
        return key, _record(row[5:-1]), _failures(limit_key, row[-1])

    # -- writes -------------------------------------------------------------------------

    @contextlib.contextmanager
    def atomic(self, connection: Connection) -> Iterator[None]:
        """Statements that land together: a transaction of their own on the store's
        connections (on SQLite behind the write-lock file), the session's otherwise."""
        if isinstance(connection, RawConnection):
            with self.connections.write(connection):
                yield
        else:
            yield

    def record_issued(self, connection: Connection, values: Mapping[str, Any],
                      event: Mapping[str, Any], *, client: ClientSnapshot,
                      now: datetime) -> None:
        """Write an issued token's record, its usage event, and stale last-used times of
        the client and of the secret it used.

        On the store's connections (the token endpoint) with a :class:`WriteQueue`, the
        event follows within the queue's delay, and so does the record when the store
        ``defers_records`` (until then introspection and revocation judge the token by
        its claims: :func:`portal.core.tokens.exchange.unrecorded`); else the record is
        written before this returns. Without a queue, or for a mint, both are: on
        PostgreSQL with nothing stale one statement (a data-modifying CTE), otherwise one
        short transaction (on SQLite its ``BEGIN IMMEDIATE`` takes the write lock only for
        these statements).
        """
        secret = client.secret
        stale_client = last_used_is_stale(client.last_used_at, now)
        stale_secret = secret is not None and last_used_is_stale(secret.last_used_at, now)
        queue = self.queue if isinstance(connection, RawConnection) else None
        deferred = queue is not None and self.defers_records
        if queue is not None and deferred:
            try:
                queue.add(self._insert_token_late, values)
            except OSError as e:
                if not self._journal_failed:  # once a process, not once a token
                    self._journal_failed = True
                    log.warning("token records: the journal cannot be written (%s); records "
                                "are written before their answers until it can", e)
                deferred = False
        if not (stale_client or stale_secret):
            if queue is not None:
                if not deferred:
                    self._write_one(connection, self._insert_token, values)
                queue.add(self._insert_event, event)
                return
            if self._token_with_event is not None:
                params = {f"t_{k}": v for k, v in values.items()}
                params.update({f"e_{k}": v for k, v in event.items()})
                self._token_with_event.execute(connection, params)
                return
        with self.atomic(connection):
            if not deferred:
                self._insert_token.execute(connection, values)
            if queue is None:
                self._insert_event.execute(connection, event)
            if stale_client:
                self._touch_client.execute(connection, {"row_id": client.id, "now": now})
            if stale_secret and secret is not None:
                self._touch_secret.execute(connection, {"row_id": secret.id, "now": now})
        if queue is not None:
            queue.add(self._insert_event, event)

    def replay_journal(self) -> int:
        """Write the records of dead processes' journal segments (``latchkey serve``
        before it starts its workers); returns how many."""
        if self.journal is None:
            return 0
        return replay_journal(self.journal, self.connections, self._insert_token_late)

    def touch_api_key(self, connection: Connection, *, key_id: int,
                      last_used_at: datetime | None, now: datetime) -> None:
        """Write an API key's last-used time if it is stale."""
        if last_used_is_stale(last_used_at, now):
            self._write_one(connection, self._touch_api_key, {"row_id": key_id, "now": now})

    def insert_event(self, connection: Connection, event: Mapping[str, Any]) -> None:
        """One usage event: queued when there is a :class:`WriteQueue` (on the store's
        connections), else one statement (on SQLite behind the write-lock file, with no
        ``BEGIN``/``COMMIT`` round of its own)."""
        if self.queue is not None and isinstance(connection, RawConnection):
            self.queue.add(self._insert_event, event)
        else:
            self._write_one(connection, self._insert_event, event)

    def _write_one(self, connection: Connection, statement: RawStatement,
                   values: Mapping[str, Any]) -> None:
        if isinstance(connection, RawConnection):
            self.connections.write_one(connection, statement, values)
        else:
            statement.execute(connection, values)

    def use_assertion(self, connection: Connection, *, client_ref: str, jti: str,
                      expires_at: datetime) -> bool:
        """Record a client assertion's ``jti``; False when it was used before.

        Written at once and kept even if the request fails later (a bad scope,
        say): an assertion is single-use whatever happens next.
        """
        values = {"client_ref": client_ref[:MAX_CLIENT_ID], "jti": jti, "expires_at": expires_at}
        try:
            if isinstance(connection, RawConnection):
                self.connections.write_one(connection, self._insert_assertion, values)
            else:
                self._insert_assertion.execute(connection, values)
        except self.integrity_error:
            return False
        return True


CLIENT_COLUMNS = 19


def _limit_params(limit_key: str | None) -> dict[str, Any]:
    """The caller reads' failure-count parameters (no key: the subquery finds nothing)."""
    return {"limit_key": limit_key, "limit_now": time.time()}


def _failures(limit_key: str | None, hits: int | None) -> int | None:
    """The count read (no counter row: 0), or None when no key was given: not read."""
    return None if limit_key is None else int(hits or 0)


@functools.lru_cache(maxsize=1024)
def _grants(lines: str | None) -> tuple[Mapping[str, GrantedApi], str | None]:
    """A client's grants read back; the same text (one client's) is parsed once. The
    mapping is shared between calls and never changed."""
    return parse_grant_lines(lines)


def _snapshot(row: tuple[Any, ...]) -> ClientSnapshot:
    (id_, public_id, org_id, org_public_id, kind, enabled, methods, grant_lines, ttl,
     custom, jwks, last_used, user_public_id, member, secret_id, secret_expires,
     secret_revoked, secret_last_used, tokens_revoked_at) = row[:CLIENT_COLUMNS]
    granted, default_audience = _grants(grant_lines)
    return ClientSnapshot(
        id=id_, public_id=public_id, org_id=org_id, org_public_id=org_public_id,
        kind=ClientKind(kind), enabled=bool(enabled), auth_methods=frozenset(methods or ()),
        granted=granted, default_audience=default_audience, token_ttl=ttl,
        custom_claims=custom or {}, jwks=jwks, last_used_at=last_used,
        user_public_id=user_public_id, user_is_member=bool(member),
        secret=None if secret_id is None else SecretMatch(
            id=secret_id, expires_at=secret_expires, revoked_at=secret_revoked,
            last_used_at=secret_last_used),
        tokens_revoked_at=tokens_revoked_at,
    )


def _record(columns: tuple[Any, ...]) -> TokenRecord | None:
    (id_, org_id, client_id, jti, scopes, kid, issued_at, expires_at, revoked_at, enabled,
     tokens_revoked_at) = columns
    if id_ is None:
        return None
    return TokenRecord(id=id_, org_id=org_id, client_id=client_id, jti=jti,
                       scopes=tuple(scopes or ()), kid=kid, issued_at=issued_at,
                       expires_at=expires_at, revoked_at=revoked_at,
                       client_enabled=bool(enabled), client_tokens_revoked_at=tokens_revoked_at)


def _token_with_event(tokens: Any, events: Any) -> Any:
    """``WITH issued_token AS (INSERT INTO issued_tokens ...) INSERT INTO usage_events ...``
    with named parameters ``t_*`` and ``e_*``."""
    token_columns = [c.name for c in tokens.columns
                     if c.name not in ("id", "revoked_at", "revoked_by")]
    event_columns = [c.name for c in events.columns if c.name != "id"]
    token_insert = insert(tokens).values(
        {c: bindparam(f"t_{c}", type_=tokens.c[c].type) for c in token_columns})
    event_insert = insert(events).values(
        {c: bindparam(f"e_{c}", type_=events.c[c].type) for c in event_columns})
    return event_insert.add_cte(token_insert.cte("issued_token"))


def token_store() -> TokenStore:
    """The current app's store."""
    found: TokenStore = current_app.extensions[EXTENSION_KEY]
    return found


#: A queued row: its statement, its values and, for a journaled record, its segment.
Row = tuple[RawStatement, Mapping[str, Any], Segment | None]


class WriteQueue:
    """Writes of the protocol endpoints that need not delay their answer, in batches:
    every usage event and, when the store ``defers_records`` (``DEFER_TOKEN_RECORDS``),
    the token endpoint's token records, by a thread of their own, at most ``delay``
    seconds after they happen.

    An introspection (or a deferred token) then costs no write of its own: one
    transaction carries every record and event of the last ``delay`` seconds, records
    first. A token whose record is not written yet is judged by its claims
    (:func:`portal.core.tokens.exchange.unrecorded`). The records of ``journaled``
    are appended to the :class:`~portal.core.tokens.journal.Journal` before
    :meth:`add` returns, so a crash (``kill -9``) loses none of them: they are written
    from the journal when the process is gone. What a crash can lose is the last
    ``delay`` seconds of usage events (missing from the usage history); never an audit
    entry. The queue is written out when the process exits and when the engine is
    disposed; should the database be unreachable, at most ``limit`` writes wait and the
    oldest are dropped (logged; a dropped record stays in the journal).
    """

    def __init__(self, connections: RawConnections, statements: tuple[RawStatement, ...],
                 delay: float, *, limit: int = 20_000, journal: Journal | None = None,
                 journaled: RawStatement | None = None) -> None:
        self.connections = connections
        self.statements = statements  # the order they are written in
        self.delay = delay
        self.limit = limit
        self.journal = journal
        self.journaled = journaled
        self._pending: list[Row] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._next_scan = 0.0  # the first round looks for orphaned journal segments
        # At exit, and when the engine is disposed. Worker processes started by
        # multiprocessing leave through os._exit, after running its finalizers (not
        # atexit's). Weak references: a queue dropped with its app is not kept alive.
        me = weakref.WeakMethod(self.flush)
        atexit.register(_call, me)
        multiprocessing.util.Finalize(None, _call, args=(me,), exitpriority=10)
        sa_event.listen(connections.engine, "engine_disposed", lambda _engine: _call(me))

    def add(self, statement: RawStatement, values: Mapping[str, Any]) -> None:
        """Queue one row of ``statement`` (one of :attr:`statements`); a ``journaled``
        one is in the journal when this returns (``OSError`` if it cannot be)."""
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread is not ours
                self._pending, self._thread, self._pid = [], None, os.getpid()
            segment = None
            if self.journal is not None and statement is self.journaled:
                segment = self.journal.append(values)
            self._pending.append((statement, values, segment))
            if len(self._pending) > self.limit:
                dropped = len(self._pending) - self.limit
                del self._pending[:dropped]
                log.warning("token records and usage events: %d dropped (the database is "
                            "not keeping up; dropped records stay in the journal)", dropped)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="latchkey-writes",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.delay)
            try:
                self.tick()
            except Exception:  # a vanished database: the writes wait for the next round
                log.warning("token records and usage events: write failed; retrying",
                            exc_info=True)

    def tick(self) -> int:
        """A round of the queue's thread: :meth:`flush` and, at the first round and every
        :data:`~portal.core.tokens.journal.ORPHAN_SCAN_SECONDS`, :meth:`replay`."""
        written = self.flush(keep_segment=True)
        if self.journal is not None and time.monotonic() >= self._next_scan:
            self._next_scan = time.monotonic() + ORPHAN_SCAN_SECONDS
            self.replay()
        return written

    def flush(self, *, keep_segment: bool = False) -> int:
        """Write everything queued now, in one transaction; returns how many rows. The
        journal's current segment ends first, unless ``keep_segment`` (the thread's
        rounds): then only once it is old enough (:meth:`Journal.rotate`)."""
        with self._lock:
            batch, self._pending = self._pending, []
            if self.journal is not None:
                if keep_segment:
                    self.journal.rotate()
                else:
                    self.journal.cut()
        if batch:
            try:
                write_rows(self.connections, self.statements, batch)
            except BaseException:
                with self._lock:
                    self._pending[:0] = batch
                raise
            if self.journal is not None:
                with self._lock:
                    self.journal.written([segment for _, _, segment in batch if segment])
        return len(batch)

    def replay(self) -> int:
        """Write the records of every orphaned journal segment; returns how many."""
        if self.journal is None or self.journaled is None:
            return 0
        return replay_journal(self.journal, self.connections, self.journaled)


def write_rows(connections: RawConnections, statements: tuple[RawStatement, ...],
               batch: list[Row]) -> None:
    """``batch`` in one transaction, the rows of each of ``statements`` in turn; should a
    row refer to a client or org deleted since, the others one by one (it is dropped)."""
    with connections.connection() as connection:
        try:
            with connections.write(connection):
                for statement in statements:
                    rows = [values for of, values, _ in batch if of is statement]
                    if rows:
                        statement.execute_many(connection, rows)
        except connections.integrity_errors:
            for statement in statements:
                for of, values, _ in batch:
                    if of is not statement:
                        continue
                    try:
                        connections.write_one(connection, statement, values)
                    except connections.integrity_errors:
                        log.info("token record or usage event dropped: its client or org "
                                 "is gone")


def replay_journal(journal: Journal, connections: RawConnections,
                   insert: RawStatement) -> int:
    """Write the records of ``journal``'s orphaned segments with ``insert`` (one that
    leaves a record written already as it is); returns how many."""
    return journal.replay(
        lambda rows: write_rows(connections, (insert,), [(insert, values, None)
                                                         for values in rows]))


def _call(method: weakref.WeakMethod[Any]) -> None:
    found = method()
    if found is not None:
        found()


def journal_location(app: Any, engine: Engine) -> Path | None:
    """This database's token-record journal (``TOKEN_JOURNAL_DIR``, by default the
    instance folder's ``token-journal``); None for a database in memory."""
    if engine.dialect.name == "sqlite":
        path = sqlite_file(engine)
        if path is None:
            return None
        key = f"sqlite:{path}"
    else:
        key = engine.url.render_as_string(hide_password=True)
    base = app.config.get("TOKEN_JOURNAL_DIR") or os.path.join(app.instance_path,
                                                                "token-journal")
    return journal_dir(base, key)


def init_app(app: Any, engine: Engine) -> TokenStore:
    store = TokenStore(engine, write_delay=float(app.config.get("WRITE_DELAY_MS") or 0) / 1000,
                       durable=bool(app.config.get("DURABLE_TOKEN_WRITES")),
                       defer_records=bool(app.config.get("DEFER_TOKEN_RECORDS")),
                       journal_dir=journal_location(app, engine))
    app.extensions[EXTENSION_KEY] = store
    return store
