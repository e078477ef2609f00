"""Core statements run on bare DBAPI connections, for the protocol endpoints.

Executing a prepared Core statement through SQLAlchemy costs about 80 µs of
Python per statement; the same statement on the driver's cursor costs about
10 µs on SQLite. The token endpoint runs two or three statements per token
and is the product's hot path, so :mod:`portal.core.tokens.store` runs them here:

- :class:`RawStatement` compiles a Core statement once per dialect and keeps
  the column types' own bind and result processors (UTC datetimes, JSON,
  enums), so values look the same as through the ORM;
- :class:`RawConnections` keeps a few driver connections made by the app's
  engine (so its ``connect`` hooks ran: WAL, ``busy_timeout`` on SQLite) in
  autocommit mode, without the pool's pre-ping and reset round trips, and
  runs writes that must land together. A connection that raised is closed,
  never reused; they are closed when the engine is disposed.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import JSON, Engine, event
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from portal.core.types import UTCDateTime

log = logging.getLogger("latchkey.db")


class RawStatement:
    """A Core statement compiled once for one dialect, run on a DBAPI cursor."""

    def __init__(self, statement: ClauseElement, engine: Engine) -> None:
        dialect = engine.dialect
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = compiled.string
        self.positional = bool(compiled.positiontup)
        self.names: list[str] = list(compiled.positiontup or compiled.binds)
        # Each parameter with its column type's bind processor (None: as given).
        self._binds: list[tuple[str, Callable[[Any], Any] | None]] = [
            (name, _bind_processor(compiled.binds[name].type, dialect)) for name in self.names
        ]
        # A SELECT's columns, or what an INSERT ... RETURNING returns: the positions
        # whose values a processor converts.
        columns = list(getattr(statement, "exported_columns", None) or [])
        self._results: list[tuple[int, Callable[[Any], Any]]] = [
            (index, processor) for index, column in enumerate(columns)
            if (processor := _result_processor(column.type, dialect)) is not None
        ]

    def params(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        if self.positional:
            return [values[name] if bind is None else bind(values[name])
                    for name, bind in self._binds]
        return {name: values[name] if bind is None else bind(values[name])
                for name, bind in self._binds}

    def execute(self, connection: Any, values: Mapping[str, Any]) -> int:
        """Run it; returns the driver's row count."""
        cursor = connection.cursor()
        try:
            cursor.execute(self.sql, self.params(values))
            return int(cursor.rowcount or 0)
        finally:
            cursor.close()

    def execute_many(self, connection: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run it once per row, in one driver call."""
        cursor = connection.cursor()
        try:
            cursor.executemany(self.sql, [self.params(values) for values in rows])
        finally:
            cursor.close()

    def first(self, connection: Any, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        cursor = connection.cursor()
        try:
            cursor.execute(self.sql, self.params(values))
            row = cursor.fetchone()
        finally:
            cursor.close()
        if row is None:
            return None
        if not self._results:
            return tuple(row)
        converted = list(row)
        for index, processor in self._results:
            converted[index] = processor(converted[index])
        return tuple(converted)


# -- the column types' own conversions, and faster equivalents of the costliest --------------
#
# SQLite has no datetime type: SQLAlchemy stores UTC times as text
# ("2026-12-02 20:17:39.000000") and parses them back with a regular expression;
# the token endpoint's read returns seven of them, and JSON lists of scopes and
# audiences. These give the very same values for a fraction of the cost.


def _bind_processor(type_: Any, dialect: Any) -> Callable[[Any], Any] | None:
    if dialect.name == "sqlite" and isinstance(type_, UTCDateTime):
        return _sqlite_utc_text
    processor: Callable[[Any], Any] | None = type_.dialect_impl(dialect).bind_processor(dialect)
    return processor


def _result_processor(type_: Any, dialect: Any) -> Callable[[Any], Any] | None:
    if dialect.name == "sqlite" and isinstance(type_, UTCDateTime):
        return _sqlite_utc_datetime
    try:
        processor: Callable[[Any], Any] | None = (
            type_.dialect_impl(dialect).result_processor(dialect, None))
    except TypeError:
        # Some types pick a processor by the driver's column type, which a statement
        # compiled ahead of time does not know (psycopg's Float): the driver's own
        # values are the right ones for them.
        processor = None
    if processor is not None and dialect.name == "sqlite" and isinstance(type_, JSON):
        return _json_value
    return processor


def _sqlite_utc_text(value: datetime | None) -> str | None:
    """As ``UTCDateTime`` then SQLite's ``DATETIME`` write it (naive UTC, microseconds)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTCDateTime column")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ",
                                                                timespec="microseconds")


def _sqlite_utc_datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


@functools.lru_cache(maxsize=1024)
def _json_value(text: str | None) -> Any:
    """A JSON column's value; the same text (a client's scopes, say) is parsed once.

    The values are shared between calls: callers copy them (tuples, frozensets,
    dict unpacking) and never change them in place.
    """
    return None if text is None else json.loads(text)


_SERIALS = itertools.count(1)


class RawConnection:
    """A driver connection in autocommit mode and, on SQLite, its own handle on the
    write-lock file (see :meth:`RawConnections.write`)."""

    def __init__(self, driver: Any, lock_path: str | None) -> None:
        self.driver = driver
        self.serial = next(_SERIALS)  # never reused, unlike id()
        self.lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600) if lock_path else None

    def cursor(self) -> Any:
        return self.driver.cursor()

    def close(self) -> None:
        try:
            self.driver.close()
        finally:
            if self.lock_fd is not None:
                os.close(self.lock_fd)
                self.lock_fd = None


def sqlite_file(engine: Engine) -> str | None:
    """The file of a SQLite database (absolute); None for any other database, one in
    memory, or a ``file:`` URI (which may name a shared cache)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return None
    return os.path.abspath(database)


class RawConnections:
    """Autocommit driver connections of one engine, lent one request at a time.

    On SQLite, writers queue on an exclusive ``flock`` of ``<database>-hotwrite.lock``
    before ``BEGIN IMMEDIATE``: the kernel wakes the next writer the moment the
    lock is released, where SQLite's busy handler would poll with sleeps of 1, 2,
    5, 10… ms (the long tail of the token endpoint under load). The WAL is
    checkpointed by a thread every ``CHECKPOINT_SECONDS`` instead of by whichever
    request's commit crosses ``wal_autocheckpoint`` (an fsync of 10–20 ms on the
    request's time), and kept short (:meth:`checkpoint`).

    Durability (``durable``, the ``DURABLE_TOKEN_WRITES`` setting): every write here
    is committed before the request is answered, so it survives any crash of Latchkey.
    Not durable (the default), a crash of the database server or of the machine may
    lose the last moments of them: SQLite's WAL with ``synchronous=NORMAL`` (no sync
    at each commit), PostgreSQL's ``synchronous_commit=off`` (the WAL writer flushes
    within three ``wal_writer_delay``, 0.6 s by default) — so PostgreSQL, like SQLite,
    does not wait for a disk flush per token. Durable: SQLite ``synchronous=FULL``,
    PostgreSQL the server's ``synchronous_commit``. The portal's writes (audit,
    revocations, clients) always use the server's setting.
    """

    CHECKPOINT_SECONDS = 0.25
    #: A WAL this long (frames of 4 KiB pages) is started over (see :meth:`checkpoint`).
    RESTART_FRAMES = 2000
    CHECKPOINT_WAIT_MS = 50

    def __init__(self, engine: Engine, *, keep: int = 8, durable: bool = False) -> None:
        self.engine = engine
        self.keep = keep
        self.durable = durable
        self.sqlite = engine.dialect.name == "sqlite"
        self.lock_path = f"{engine.url.database}-hotwrite.lock" if self.sqlite else None
        self._idle: list[RawConnection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()
        #: Writes through these connections so far (see :class:`Unchanged`).
        self.writes = 0
        dbapi = engine.dialect.dbapi
        self.database_errors: type[BaseException] = dbapi.Error if dbapi is not None \
            else Exception
        self.integrity_errors: type[BaseException] = dbapi.IntegrityError \
            if dbapi is not None else Exception
        event.listen(engine, "engine_disposed", lambda _engine: self.close_all())

    def _detached_driver(self) -> Any:
        proxied = self.engine.raw_connection()  # runs the engine's connect hooks once
        driver: Any = proxied.driver_connection
        proxied.detach()  # from now on ours, not the pool's
        driver.rollback()  # the pool's pre-ping may have opened a transaction
        return driver

    def _new(self) -> RawConnection:
        driver = self._detached_driver()
        if self.sqlite:
            driver.isolation_level = None  # set by the connect hook too; explicit here
            driver.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
            if self.durable:
                driver.execute("PRAGMA synchronous=FULL")
            self._start_checkpointer()
        else:
            driver.autocommit = True
            if not self.durable:
                driver.execute("SET synchronous_commit TO off")
        return RawConnection(driver, self.lock_path)

    @contextlib.contextmanager
    def connection(self) -> Iterator[RawConnection]:
        """A connection in autocommit mode, lent for the block.

        A block that ends with a database error closes it rather than keep it;
        any other exception (a refused request, say) leaves it as good as it was
        (statements here never leave a transaction open: see :meth:`write`).
        """
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's connections are not ours
                self._idle, self._pid, self._checkpointer = [], os.getpid(), None
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._new()
        try:
            yield connection
        except self.database_errors:
            with contextlib.suppress(Exception):
                connection.close()
            raise
        except BaseException:
            self._release(connection)
            raise
        self._release(connection)

    def _release(self, connection: RawConnection) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(connection)
                return
        connection.close()

    @contextlib.contextmanager
    def write(self, connection: RawConnection) -> Iterator[None]:
        """Statements that land together, or not at all (SQLite: behind the write-lock file)."""
        with self._queued(connection):
            cursor = connection.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE" if self.sqlite else "BEGIN")
                try:
                    yield
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
            finally:
                cursor.close()

    def write_one(self, connection: RawConnection, statement: RawStatement,
                  values: Mapping[str, Any]) -> int:
        """One statement, atomic on its own in autocommit mode (SQLite: behind the
        write-lock file, with no ``BEGIN``/``COMMIT`` round of its own); its row count."""
        with self._queued(connection):
            return statement.execute(connection, values)

    def write_first(self, connection: RawConnection, statement: RawStatement,
                    values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """As :meth:`write_one`, for a statement that returns a row (``RETURNING``)."""
        with self._queued(connection):
            return statement.first(connection, values)

    @contextlib.contextmanager
    def _queued(self, connection: RawConnection) -> Iterator[None]:
        """Every write here: counted in :attr:`writes`; on SQLite behind the write-lock file."""
        try:
            if connection.lock_fd is None:
                yield
                return
            fcntl.flock(connection.lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(connection.lock_fd, fcntl.LOCK_UN)
        finally:
            with self._lock:
                self.writes += 1

    def _start_checkpointer(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                return
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(self._stop,),
                name="latchkey-wal-checkpoint", daemon=True,
            )
            self._checkpointer.start()

    def _checkpoint_loop(self, stop: threading.Event) -> None:
        checkpointer: RawConnection | None = None
        while not stop.wait(self.CHECKPOINT_SECONDS):
            try:
                if checkpointer is None:
                    checkpointer = self._new_checkpointer()
                self.checkpoint(checkpointer)
            except Exception:  # a vanished database: try again next time
                log.warning("WAL checkpoint failed", exc_info=True)
                if checkpointer is not None:
                    with contextlib.suppress(Exception):
                        checkpointer.close()
                checkpointer = None
        if checkpointer is not None:
            with contextlib.suppress(Exception):
                checkpointer.close()

    def _new_checkpointer(self) -> RawConnection:
        driver = self._detached_driver()
        # While it holds the write-lock file, it waits this long at most for a portal
        # request's transaction; it tries again next time.
        driver.execute(f"PRAGMA busy_timeout={self.CHECKPOINT_WAIT_MS}")
        return RawConnection(driver, self.lock_path)

    def checkpoint(self, checkpointer: RawConnection) -> None:
        """Copy the WAL into the database file and, once it is long, start it over.

        PASSIVE copies what it can beside the writers (and syncs). A WAL starts
        over only when a writer begins while every frame is copied, which under
        a steady stream of tokens never happens: the WAL would grow without end,
        each token appending its ~40 KB of pages to an ever longer file. So once
        it holds ``RESTART_FRAMES``, the few frames written since the PASSIVE
        pass are copied with RESTART, which then starts the WAL over, while the
        fast path's writers queue on the write-lock file.
        """
        _busy, frames, _copied = checkpointer.driver.execute(
            "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames < self.RESTART_FRAMES:
            return
        with self._queued(checkpointer):
            checkpointer.driver.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()

    def close_all(self) -> None:
        """Close the idle connections and stop the checkpointer (the engine was disposed);
        later requests start afresh."""
        with self._lock:
            self._stop.set()
            self._stop, self._checkpointer = threading.Event(), None
            idle, self._idle = self._idle, []
        for connection in idle:
            with contextlib.suppress(Exception):
                connection.close()


class Unchanged:
    """What a read found, kept for as long as the database is unchanged (SQLite only).

    A result is used again only on the connection that read it, and only while
    SQLite's ``PRAGMA data_version`` on that connection is what it was just before
    the read (no other connection, of any process, has committed since) and no write
    went through :class:`RawConnections` (whose own commits that number leaves out).
    Checking costs one pragma, a few microseconds: far less than a read that joins
    several tables and builds its values. Nothing is kept on other databases, nor on
    SQLite in memory or named by a ``file:`` URI (connections sharing a cache do not
    see each other's commits in that number).
    """

    LIMIT = 4096  # results kept at most; then they are all dropped

    def __init__(self, connections: RawConnections) -> None:
        self.connections = connections
        self.enabled = sqlite_file(connections.engine) is not None
        self._found: dict[Any, tuple[tuple[int, int, int], Any]] = {}
        self._pid = os.getpid()

    def stamp(self, connection: RawConnection) -> tuple[int, int, int]:
        """What must be the same for a result read on ``connection`` to be used again."""
        version = connection.driver.execute("PRAGMA data_version").fetchone()[0]
        return connection.serial, version, self.connections.writes

    def get(self, connection: Any, key: Any,
            read: Callable[[], tuple[Any, bool]]) -> Any:
        """The result of ``read()`` for ``key``: kept from an earlier read if nothing has
        changed since, else read now. ``read`` returns the result and whether it may be
        kept (a result that time alone can make wrong may not)."""
        if not self.enabled or not isinstance(connection, RawConnection):
            return read()[0]
        if self._pid != os.getpid():  # forked: the parent's results are not ours
            self._found, self._pid = {}, os.getpid()
        stamp = self.stamp(connection)  # before the read: a commit during it is a change
        found = self._found.get(key)
        if found is not None and found[0] == stamp:
            return found[1]
        result, keep = read()
        if keep:
            if len(self._found) >= self.LIMIT:
                self._found = {}
            self._found[key] = (stamp, result)
        return result
