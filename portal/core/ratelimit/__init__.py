"""Rate limits on failures, counted once per deployment.

Without Redis, counters live in the app's database (:class:`DatabaseStorage`, the
``latchkey+db://`` storage of the ``limits`` library), so every worker and every
machine of a deployment shares them; with ``REDIS_URL`` they live in Redis. The
same storage serves the token endpoint's failure limit (:class:`FailureLimit`) and
Flask-Limiter's limits on sign-in.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import bindparam, case, delete, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from portal.core.db import table_of
from portal.core.ratelimit.models import RateLimitCounter
from portal.core.rawdb import RawConnections, RawStatement

DATABASE_SCHEME = "latchkey+db"
MAX_KEY = 255  # the counters' key column
MEMORY = "memory://"


def storage_uri(config: Any) -> str:
    """Where counters live: ``RATELIMIT_STORAGE_URI`` if set, else Redis when configured,
    else the database."""
    explicit = config.get("RATELIMIT_STORAGE_URI")
    if explicit:
        return str(explicit)
    redis_url = config.get("REDIS_URL")
    return str(redis_url) if redis_url else f"{DATABASE_SCHEME}://"


class DatabaseStorage(Storage):
    """A ``limits`` storage of fixed-window counters in the app's database.

    ``storage_from_string("latchkey+db://", connections=RawConnections(engine))``.
    Reads and writes are single statements on the connections of the token store's
    kind (autocommit; on SQLite writes queue on the write-lock file).
    """

    STORAGE_SCHEME = [DATABASE_SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 **options: Any) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        connections: RawConnections = options["connections"]
        self.connections = connections
        engine = connections.engine
        table = table_of(RateLimitCounter)
        now = bindparam("now", type_=table.c.expires_at.type)
        amount = bindparam("amount", type_=table.c.hits.type)
        dialect_insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        fresh = table.c.expires_at > now
        values = dialect_insert(table).values(key=bindparam("key"), hits=amount,
                                              expires_at=bindparam("expires_at"))
        upsert = values.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={"hits": _case(fresh, table.c.hits + amount, amount),
                  "expires_at": _case(fresh, table.c.expires_at, values.excluded.expires_at)},
        ).returning(table.c.hits)
        self._incr = RawStatement(upsert, engine)
        self._get = RawStatement(live_hits(bindparam("key"), now), engine)
        self._expiry = RawStatement(select(table.c.expires_at).where(
            table.c.key == bindparam("key")), engine)
        self._clear = RawStatement(delete(table).where(table.c.key == bindparam("key")), engine)
        self._reset = RawStatement(delete(table), engine)
        self._check = RawStatement(select(literal(1)), engine)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        dbapi = self.connections.engine.dialect.dbapi
        return dbapi.Error if dbapi is not None else Exception  # type: ignore[no-any-return]

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        with self.connections.connection() as connection:
            return self.incr_on(connection, key, expiry, amount)

    def incr_on(self, connection: Any, key: str, expiry: int, amount: int = 1) -> int:
        """:meth:`incr` on a connection the caller already holds (one statement)."""
        now = time.time()
        row = self.connections.write_first(
            connection, self._incr,
            {"key": key[:MAX_KEY], "amount": amount, "expires_at": now + expiry, "now": now})
        return int(row[0]) if row else amount

    def get(self, key: str) -> int:
        with self.connections.connection() as connection:
            return self.get_on(connection, key)

    def get_on(self, connection: Any, key: str) -> int:
        """:meth:`get` on a connection the caller already holds (one statement)."""
        row = self._get.first(connection, {"key": key[:MAX_KEY], "now": time.time()})
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        with self.connections.connection() as connection:
            row = self._expiry.first(connection, {"key": key[:MAX_KEY]})
        return float(row[0]) if row else time.time()

    def check(self) -> bool:
        try:
            with self.connections.connection() as connection:
                self._check.first(connection, {})
        except Exception:  # noqa: BLE001 (limits' contract: a health check answers False)
            return False
        return True

    def reset(self) -> int | None:
        with self.connections.connection() as connection:
            self.connections.write_one(connection, self._reset, {})
        return None

    def clear(self, key: str) -> None:
        with self.connections.connection() as connection:
            self.connections.write_one(connection, self._clear, {"key": key[:MAX_KEY]})


def live_hits(key: Any, now: Any) -> Any:
    """``SELECT hits`` of the counter ``key`` while its window lasts at time ``now``
    (seconds since the epoch): the count a limit is checked against."""
    table = table_of(RateLimitCounter)
    return select(table.c.hits).where(table.c.key == key, table.c.expires_at > now)


def _case(condition: Any, then: Any, otherwise: Any) -> Any:
    return case((condition, then), else_=otherwise)


def make_storage(uri: str, connections: RawConnections) -> Storage:
    """The ``limits`` storage at ``uri`` (the database's needs the store's connections)."""
    if uri.startswith(f"{DATABASE_SCHEME}:"):
        return storage_from_string(uri, connections=connections)  # type: ignore[arg-type,return-value]
    return storage_from_string(uri)  # type: ignore[return-value]


def storage_options(uri: str, connections: RawConnections) -> dict[str, Any]:
    """Flask-Limiter's ``RATELIMIT_STORAGE_OPTIONS`` for ``uri``."""
    return {"connections": connections} if uri.startswith(f"{DATABASE_SCHEME}:") else {}


@functools.lru_cache(maxsize=16)
def parse_limit(text: str) -> RateLimitItem:
    return parse(text)


class FailureLimit:
    """At most N failures per key (an address) in a fixed window; then refused until it ends."""

    def __init__(self, limit: str, storage: Storage, *, enabled: bool = True,
                 namespace: str = "client-auth-failures") -> None:
        self.item = parse_limit(limit)
        self.storage = storage
        self.enabled = enabled
        self.namespace = namespace
        self._limiter = FixedWindowRateLimiter(storage)

    def retry_after(self, key: str, connection: Any = None) -> int | None:
        """Seconds until ``key`` may try again, or None while it may.

        With the database's counters and a ``connection`` the caller holds, the count
        is read on it: one statement, no connection of its own.
        """
        if not self.enabled:
            return None
        if connection is not None and isinstance(self.storage, DatabaseStorage):
            return self.retry_after_hits(
                key, self.storage.get_on(connection, self.item.key_for(self.namespace, key)))
        if self._limiter.test(self.item, self.namespace, key):
            return None
        return self._seconds_left(key)

    def counter_key(self, key: str) -> str | None:
        """The database counter of ``key``, for a statement that reads its count beside
        other columns (:func:`live_hits`); None when the count is not in the database."""
        if not self.enabled or not isinstance(self.storage, DatabaseStorage):
            return None
        return self.item.key_for(self.namespace, key)[:MAX_KEY]

    def retry_after_hits(self, key: str, hits: int) -> int | None:
        """:meth:`retry_after` from the count of :meth:`counter_key` read with other
        columns: no statement of its own unless ``key`` is over the limit."""
        if hits < self.item.amount:
            return None
        return self._seconds_left(key)

    def _seconds_left(self, key: str) -> int:
        stats = self._limiter.get_window_stats(self.item, self.namespace, key)
        return max(1, int(stats.reset_time - time.time()))

    def hit(self, key: str, connection: Any = None) -> None:
        """Count one failure of ``key`` (on ``connection`` if given, as :meth:`retry_after`)."""
        if not self.enabled:
            return
        if connection is not None and isinstance(self.storage, DatabaseStorage):
            self.storage.incr_on(connection, self.item.key_for(self.namespace, key),
                                 self.item.get_expiry())
        else:
            self._limiter.hit(self.item, self.namespace, key)


def prune(connections: RawConnections, *, now: float | None = None) -> int:
    """Delete counters whose window has ended; returns how many."""
    table = table_of(RateLimitCounter)
    statement = RawStatement(delete(table).where(table.c.expires_at < bindparam("now")),
                             connections.engine)
    with connections.connection() as connection:
        return connections.write_one(connection, statement, {"now": now or time.time()})
