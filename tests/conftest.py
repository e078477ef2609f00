"""Fixtures: an app per test on a real, migrated database (SQLite file or PostgreSQL).

Each backend's database is migrated once per test session with Alembic; every
test gets a fresh app and its rows are deleted afterwards. With ``CI=true`` a
PostgreSQL or Redis that cannot be reached fails the run instead of skipping.
"""

from __future__ import annotations

import atexit
import itertools
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from argon2 import PasswordHasher
from cryptography.fernet import Fernet
from flask import Flask, g, has_app_context
from flask.testing import FlaskClient
from sqlalchemy import text

from portal import create_app
from portal.core import crypto
from portal.core.db import Base, get_engine, get_session, in_read_transaction
from portal.core.models import Client, Organization, User  # (and loads every model)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_ADMIN_URL = os.environ.get(
    "LATCHKEY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _own_redis_database(url: str) -> str:
    """Each pytest-xdist worker flushes a Redis database of its own: gw0 the one
    configured (15 by default), gw1 the one below it, and so on."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    base, _, number = url.rpartition("/")
    if not number.isdigit():
        return url
    return f"{base}/{int(number) - int(worker.removeprefix('gw'))}"


REDIS_URL = _own_redis_database(
    os.environ.get("LATCHKEY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
ISSUER = "http://localhost"
# The token-record journals of this process's apps, one folder per database (never
# instance/); removed at exit, after the apps' queues wrote theirs (atexit runs last first).
TEST_JOURNALS = Path(tempfile.mkdtemp(prefix="latchkey-test-journals-"))
atexit.register(shutil.rmtree, TEST_JOURNALS, ignore_errors=True)

TEST_SECRETS = {
    "SECRET_KEY": secrets.token_urlsafe(32),
    "CLIENT_SECRET_HMAC_KEY": secrets.token_urlsafe(32),
    "KEY_ENCRYPTION_KEYS": [Fernet.generate_key().decode()],
}


def unavailable(what: str, why: str) -> None:
    """Skip outside CI; in CI a missing service is a failure, never a silent skip."""
    message = f"{what} is not reachable ({why})"
    if IN_CI:
        pytest.fail(message + "; CI must run these tests", pytrace=False)
    pytest.skip(message + "; set it up or run in CI")


def base_config(database_url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "ISSUER": ISSUER,
        "RATELIMIT_STORAGE_URI": "memory://",
        "WRITE_DELAY_MS": 0,  # each event with its request (tests/api/test_usage_queue.py)
        "TOKEN_JOURNAL_DIR": str(TEST_JOURNALS),
        **TEST_SECRETS,
        **overrides,
    }


def migrate(database_url: str) -> None:
    from portal.migrate import upgrade

    app = create_app(base_config(database_url))
    with app.app_context():
        upgrade()
        get_engine().dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'latchkey.db'}"
    migrate(url)
    return url


@contextmanager
def postgres_database(prefix: str = "latchkey_test") -> Iterator[str]:
    """An empty PostgreSQL database of its own on the test server, dropped afterwards
    (an unreachable server skips, or fails in CI: :func:`unavailable`)."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as e:
        unavailable("PostgreSQL", str(e).splitlines()[0])
    try:
        yield f"{admin.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        migrate(url)
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


#: RSA keys made once per test process (per pytest-xdist worker) and handed out again.
_RSA_KEYS: list[Any] = []


@pytest.fixture(autouse=True)
def rsa_keys_made_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Org signing keys (RS256) come from a pool instead of being generated anew.

    A 2048-bit RSA key costs about 50 ms and every org has two; generated for each of
    the suite's thousands of orgs they were a third of its time. Within a test each
    call still gets a key no other org of that test has (the pool grows when a test
    needs more), so tenancy and rotation tests see distinct keys; across tests, whose
    rows are wiped in between, the same keys come back. Keys a test makes itself (a
    foreign signer, say) do not come from here.
    """
    from portal.core.signing_keys import services as signing_keys

    generate = signing_keys.generate_private_key
    handed = itertools.count()

    def from_the_pool(alg: str) -> Any:
        if alg != "RS256":
            return generate(alg)
        index = next(handed)
        while len(_RSA_KEYS) <= index:
            _RSA_KEYS.append(generate(alg))
        return _RSA_KEYS[index]

    monkeypatch.setattr(signing_keys, "generate_private_key", from_the_pool)


#: argon2id as cheap as it goes: the suite's few thousand users and sign-ins would each
#: cost about 0.25 s of CPU with the product's parameters (``portal.core.crypto``).
CHEAP_PASSWORD_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def cheap_password_hashing(request: pytest.FixtureRequest,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords are hashed with :data:`CHEAP_PASSWORD_HASHER` in this process.

    Hashing and verifying, rehashing on sign-in and the rules around them behave
    the same with any parameters; the product's own parameters are checked by the
    tests marked ``production_argon2``, which keep them. A ``latchkey`` process
    started by a test (tests/live) hashes with the product's.
    """
    if request.node.get_closest_marker("production_argon2") is None:
        monkeypatch.setattr(crypto, "_password_hasher", CHEAP_PASSWORD_HASHER)


@pytest.fixture
def app_config() -> dict[str, Any]:
    """Per-test overrides of the app configuration."""
    return {}


class ArrangedFirstClient(FlaskClient):
    """A test client that ends the test's own transaction before each request.

    Tests arrange and inspect data through the app's session, in the app
    context the fixture holds, and Flask's views share it; but the protocol
    door (``api.oauth.door``) works on connections of its own, as every
    request does in production. On SQLite the test session's open transaction
    (``BEGIN IMMEDIATE``, even for a read) would hold the write lock that the
    request is waiting for.

    After a safe request (GET) it ends the read transaction that the request
    began in the shared session, so the test's next statements get a write
    transaction again (``portal.core.db``: reads never take the write lock).
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        session = g.get("db_session") if has_app_context() else None
        if session is not None and session.in_transaction():
            session.commit()
        try:
            return super().open(*args, **kwargs)
        finally:
            session = g.get("db_session") if has_app_context() else None
            if session is not None and in_read_transaction(session):
                session.commit()


# Per-request values that extensions cache in ``g``. The ``app`` fixture keeps an
# app context pushed for the whole test, and a test client request reuses it, so
# without this the signed-in user (flask-login's ``g._login_user``) and the CSRF
# token (flask-wtf's ``g.csrf_token``) of one request would leak into the next,
# even into another test client's: a test with both an owner and an outsider
# would act as the wrong person. The database session (``g.db_session``) is
# shared with the test on purpose and stays.
REQUEST_SCOPED_G = ("_login_user", "csrf_token", "csrf_valid")


def _forget_request_state(_exc: BaseException | None) -> None:
    for name in REQUEST_SCOPED_G:
        g.pop(name, None)


@pytest.fixture
def app(database_url: str, app_config: dict[str, Any], tmp_path: Path) -> Iterator[Flask]:
    # A journal folder of the test's own: a segment an earlier test left held (a queue
    # it emptied by hand, as a crash would) is none of this test's.
    app = create_app(base_config(database_url, TOKEN_JOURNAL_DIR=str(tmp_path / "journal"),
                                 **app_config))
    app.test_client_class = ArrangedFirstClient
    app.teardown_request(_forget_request_state)
    with app.app_context():
        yield app
        get_session().close()
        engine = get_engine()
        _wipe(engine)
        engine.dispose()


def _wipe(engine: Any) -> None:
    """Delete every row, children first, and on PostgreSQL start the ids over (as SQLite
    does once a table is empty). ``TRUNCATE`` would cost 130-200 ms a test (new files
    for every table), ``DELETE`` of a test's few rows about 2 ms."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        for table in tables:
            conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 (our table names)
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval(format('%I.%I', schemaname, sequencename), 1, "
                              "false) FROM pg_sequences WHERE schemaname = current_schema()"))


@pytest.fixture
def another_app() -> Iterator[Callable[[dict[str, Any]], Flask]]:
    """``another_app(config)``: a second app, as a second worker or machine would be.

    Its engine is disposed after the test: a connection left to the garbage collector
    would warn (``ResourceWarning``) in whichever later test the collector runs.
    """
    made: list[Flask] = []

    def make(config: dict[str, Any]) -> Flask:
        made.append(create_app(config))
        return made[-1]

    yield make
    for other in made:
        with other.app_context():
            get_engine().dispose()


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The test's app over real HTTP (a werkzeug thread on 127.0.0.1, a free port): its base
    URL, which is also the app's ``ISSUER`` (:func:`tests.live.servers.serving`)."""
    from tests.live.servers import serving

    with serving(app) as base:
        yield base


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def session(app: Flask) -> Any:
    """The app's session for arranging data; factories commit what they make."""
    return get_session()


# -- two tenants --------------------------------------------------------------------------


@dataclass
class Tenant:
    """One org of :func:`tenants`. Its org, an admin of it and a client of it (with the
    secret's plaintext) are each made by tests/factories.py on first use, so a test pays
    only for what it reads."""

    session: Any
    name: str

    @cached_property
    def org(self) -> Organization:
        from tests.factories import make_org

        return make_org(self.session, name=self.name, slug=self.name.lower())

    @cached_property
    def admin(self) -> User:
        from tests.factories import make_user

        return make_user(self.session, org=self.org, role="admin")

    @cached_property
    def _client_and_secret(self) -> tuple[Client, str]:
        from tests.factories import make_client

        secret, client = make_client(self.session, self.org)
        return client, secret

    @property
    def client(self) -> Client:
        """Granted ``read write`` of its org's default API (tests/factories.py)."""
        return self._client_and_secret[0]

    @property
    def secret(self) -> str:
        return self._client_and_secret[1]


class Tenants(NamedTuple):
    ours: Tenant
    theirs: Tenant


@pytest.fixture
def tenants(session: Any) -> Tenants:
    """The one pair of orgs of the suite (hydra's ``t1, t2``): ``ours`` (Acme, slug
    ``acme``) and ``theirs`` (Globex, ``globex``). Isolation tests check both ways: ours
    cannot see or change theirs, and theirs cannot see or change ours."""
    return Tenants(Tenant(session, "Acme"), Tenant(session, "Globex"))


def _tenant_org(name: str, side: str, doc: str) -> Any:
    """A fixture ``name`` returning ``tenants.<side>.org``."""

    def the_org(tenants: Tenants) -> Organization:
        return getattr(tenants, side).org  # type: ignore[no-any-return]

    the_org.__doc__ = doc
    return pytest.fixture(name=name)(the_org)


org = _tenant_org("org", "ours", "Our org (``tenants.ours.org``).")
other_org = _tenant_org("other_org", "theirs", "Their org (``tenants.theirs.org``).")
#: The same orgs by their names, where the suites call them that (tests/api's ``acme`` is
#: a client of ours instead).
acme = _tenant_org("acme", "ours", "Our org by its name.")
globex = _tenant_org("globex", "theirs", "Their org by its name.")
