"""Engine, sessions and the declarative base.

One engine per app, kept in ``app.extensions``; one session per request or CLI
command, cached in ``g`` and closed on teardown. Only views and CLI commands
commit; services flush.

Reads never take SQLite's write lock
------------------------------------

SQLite has one write lock per database file. The rule, on every backend:

* A transaction begun while serving a **safe request** (``GET``, ``HEAD``,
  ``OPTIONS``) is a **read transaction**: on SQLite a deferred ``BEGIN`` (WAL
  readers never wait for, nor block, a writer), and on every backend any
  statement other than a read raises :class:`ReadOnlyTransaction`. A page can
  therefore never write by accident: it fails loudly, in tests too, instead of
  writing under a transaction that did not reserve the lock. A change is a
  ``POST`` (the portal's forms, the protocol endpoints).
* Every other transaction (``POST`` requests, CLI commands, tests arranging
  data) is a **write transaction** and starts with ``BEGIN IMMEDIATE``, which
  takes the write lock before its first read of what it acts on. It must:
  in WAL mode a deferred transaction that has read and then writes after
  another connection committed fails at once with ``SQLITE_BUSY_SNAPSHOT``,
  which no busy timeout can help.
* Work outside a request that only reads uses ``new_session(read_only=True)``;
  the protocol's hot path reads in autocommit mode (:func:`autocommit`) and
  writes on connections of its own (:mod:`portal.core.rawdb`).
* Keep write transactions short, and never hold one across slow work such as
  password hashing: end the read (``session.commit()``), do the slow part, then
  write in a transaction of its own.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import TYPE_CHECKING, Any

from flask import current_app, g, has_request_context, request
from sqlalchemy import MetaData, Table, create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("latchkey.db")

EXTENSION_KEY = "latchkey.db"
#: Execution option marking a connection whose statements each commit on their own.
AUTOCOMMIT = "latchkey_autocommit"
#: Execution option marking a read transaction (see the module docstring).
READ_ONLY = "latchkey_read_only"
#: Requests whose transactions only read (RFC 9110 safe methods).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: First words of the statements a read transaction may run.
READ_STATEMENTS = frozenset({"SELECT", "WITH", "PRAGMA", "EXPLAIN", "SHOW",
                             "BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK"})


class ReadOnlyTransaction(RuntimeError):
    """A read transaction (a GET request's, or a read-only session's) tried to write.

    A programming error, never a user's: the write belongs in a POST view or a
    session of its own.
    """

# Stable constraint names, so Alembic migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs that name no driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine with the settings each backend needs under concurrency."""
    url = normalise_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if url.startswith("sqlite"):
        # A file database is shared by many processes: each connection waits
        # for the write lock instead of failing with "database is locked".
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        if ":memory:" in url or url in ("sqlite://", "sqlite:///"):
            raise ValueError("use a file database; :memory: is private to one connection")
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["pool_size"] = 5
        kwargs["max_overflow"] = 10
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _create_private(engine.url.database or "")
        _tune_sqlite(engine)
    _guard_read_transactions(engine)
    return engine


def _create_private(path: str) -> None:
    """Create the SQLite file readable by its owner only (0600) if it does not exist yet.

    It holds emails, password hashes, keyed hashes and encrypted keys. SQLite
    creates the ``-wal`` and ``-shm`` files with the database file's mode. An
    existing file that others may read is left as it is, with a warning.
    """
    if not path or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            log.warning("%s can be read by other users (mode %04o): run chmod 600 %s "
                        "(and its -wal and -shm files)", path, mode, path)
        return
    except OSError:
        return  # no such directory, say: SQLite's own error will name it
    os.close(fd)


def _read_transaction_wanted() -> bool:
    """Whether a transaction beginning now only reads: it serves a safe request."""
    return has_request_context() and request.method in SAFE_METHODS


def _guard_read_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _mark_read(conn: Connection) -> None:
        if not conn.get_execution_options().get(READ_ONLY) and _read_transaction_wanted():
            # The Connection lives as long as the session's transaction, so the
            # mark ends with it. Autocommit reads of a safe request are marked too.
            conn.execution_options(**{READ_ONLY: True})

    @event.listens_for(engine, "before_cursor_execute")
    def _refuse_writes(conn: Connection, _cursor: Any, statement: str, _params: Any,
                       context: Any, _executemany: bool) -> None:
        if not conn.get_execution_options().get(READ_ONLY):
            return
        words = statement.lstrip().split(None, 1)
        writes = context is not None and (context.isinsert or context.isupdate
                                          or context.isdelete)
        if writes or not words or words[0].upper() not in READ_STATEMENTS:
            raise ReadOnlyTransaction(
                "a read transaction (safe request or read-only session) tried to run "
                f"{statement.strip()[:60]!r}: make the change in a POST view or a session "
                "of its own"
            )


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling issues a deferred BEGIN, and a
        # deferred transaction that reads and then writes fails at once with
        # "database is locked" when another writer got in between (the busy
        # timeout cannot help). Take the write lock when the transaction starts
        # instead: writers queue for up to busy_timeout; WAL keeps readers of
        # other connections unblocked.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get(AUTOCOMMIT):
            return  # isolation_level None: every statement is its own transaction
        if options.get(READ_ONLY) or _read_transaction_wanted():
            conn.exec_driver_sql("BEGIN")  # deferred: a WAL reader takes no lock
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def init_app(app: Flask) -> None:
    """Create the app's engine and session factory and close sessions on teardown."""
    url = app.config.get("DATABASE_URL") or f"sqlite:///{app.instance_path}/latchkey.db"
    app.config["DATABASE_URL"] = url
    engine = make_engine(url, echo=bool(app.config.get("DATABASE_ECHO")))
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    readers = sessionmaker(bind=engine.execution_options(**{READ_ONLY: True}),
                           expire_on_commit=False)
    app.extensions[EXTENSION_KEY] = {"engine": engine, "sessionmaker": factory,
                                     "read_sessionmaker": readers}
    app.teardown_appcontext(_close_session)


def get_engine() -> Engine:
    """The current app's engine."""
    return engine_of(current_app)


def engine_of(app: Flask) -> Engine:
    """``app``'s engine, without an app context."""
    engine: Engine = app.extensions[EXTENSION_KEY]["engine"]
    return engine


def sessions(app: Flask) -> sessionmaker[Session]:
    """``app``'s session factory, for sessions apart from a request's (closed by the caller)."""
    factory: sessionmaker[Session] = app.extensions[EXTENSION_KEY]["sessionmaker"]
    return factory


def get_session() -> Session:
    """The session of the current request or command, created on first use."""
    if "db_session" not in g:
        g.db_session = current_app.extensions[EXTENSION_KEY]["sessionmaker"]()
    session: Session = g.db_session
    return session


def table_of(model: type[Base]) -> Table:
    """A model's Core table, for the hot path's Core INSERTs and UPDATEs (no ORM unit of work)."""
    return model.metadata.tables[model.__tablename__]


def new_session(*, read_only: bool = False) -> Session:
    """A session apart from the request's, which the caller closes.

    For work that outlives the request's app context, such as the body of a
    streamed response: the request's session is closed at teardown, before
    such a body is produced, and one reused after that is never closed again.
    ``read_only``: every transaction of the session is a read transaction (on
    SQLite a deferred ``BEGIN``; writing raises :class:`ReadOnlyTransaction`).
    """
    name = "read_sessionmaker" if read_only else "sessionmaker"
    session: Session = current_app.extensions[EXTENSION_KEY][name]()
    return session


def in_read_transaction(session: Session) -> bool:
    """Whether the session's current transaction is a read transaction."""
    if not session.in_transaction():
        return False
    return bool(session.connection().get_execution_options().get(READ_ONLY))


def autocommit(session: Session) -> bool:
    """Run the session's statements, until its next commit or rollback, each on its own.

    For the protocol endpoints' hot path, which reads (client, secrets, keys)
    and then writes once: on SQLite the reads take no write lock (a
    ``BEGIN IMMEDIATE`` held across the reads and the signing serialised every
    token request of every worker), and on PostgreSQL no ``BEGIN`` and
    ``COMMIT`` round trips are spent on reads. A write that needs more than one
    statement calls :func:`end_autocommit` first, so it gets a transaction.

    Does nothing (returns False) when the session is already in a transaction,
    or is bound to a connection rather than the engine (as tests may do).
    """
    if session.in_transaction():
        return False
    bind = session.get_bind()
    if isinstance(bind, Connection):
        return False
    options: dict[str, Any] = {AUTOCOMMIT: True}
    if bind.dialect.name != "sqlite":
        options["isolation_level"] = "AUTOCOMMIT"
    session.connection(execution_options=options)
    return True


def in_autocommit(session: Session) -> bool:
    """Whether :func:`autocommit` is in effect for the session's current connection."""
    if not session.in_transaction():
        return False
    return bool(session.connection().get_execution_options().get(AUTOCOMMIT))


def end_autocommit(session: Session) -> None:
    """Leave autocommit mode, so that the statements that follow share one transaction."""
    if in_autocommit(session):
        session.commit()  # nothing to write: only releases the connection


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
