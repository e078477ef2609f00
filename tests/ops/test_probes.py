"""``/healthz`` and ``/readyz``: what each checks, that they are cheap, uncached, unlimited."""

from __future__ import annotations

import sqlite3
import time
from http import HTTPStatus

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import event, text

from portal import create_app
from portal.core.db import get_engine, get_session
from portal.ops.probes import probe
from tests.conftest import REDIS_URL, base_config
from tests.factories import make_org


def test_healthz_answers_without_touching_the_database(app, client):
    statements = []
    event.listen(get_engine(), "before_cursor_execute",
                 lambda *args: statements.append(args[2]))

    response = client.get("/healthz")

    assert response.status_code == HTTPStatus.OK
    assert response.get_json() == {"status": "ok"}
    assert statements == []


def test_readyz_is_ready_with_a_migrated_database_and_an_org(client, org):
    response = client.get("/readyz")

    assert response.status_code == HTTPStatus.OK
    assert response.get_json() == {"status": "ready", "checks": {
        "database": "ok", "schema": "ok", "signing_key": "ok", "redis": "ok: not configured"}}


def test_readyz_is_503_naming_the_signing_key_when_no_org_has_one(client):
    response = client.get("/readyz")

    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    body = response.get_json()
    assert body["status"] == "not ready" and body["failing"] == ["signing_key"]
    assert "no organisation has an active signing key" in body["checks"]["signing_key"]


def test_readyz_is_503_when_the_schema_was_never_migrated(fresh_sqlite):
    app = fresh_sqlite(migrated=False)

    body = app.test_client().get("/readyz").get_json()

    assert body["failing"] == ["schema", "signing_key"]
    assert body["checks"]["schema"] == "not migrated; run `latchkey db upgrade`"


def test_readyz_is_503_when_the_schema_is_behind_this_releases_head(app, client, org):
    # As if this release shipped a migration the database has not had yet.
    revision = get_session().scalar(text("SELECT version_num FROM alembic_version"))
    probe(app)._heads = ("9999_next", frozenset({revision, "9999_next"}))

    body = client.get("/readyz").get_json()

    assert body["failing"] == ["schema"]
    assert body["checks"]["schema"] == (
        f"at {revision}, this release needs 9999_next; run `latchkey db upgrade`")


def test_readyz_stays_ready_on_a_schema_newer_than_this_release(app, client, org):
    # A rolling upgrade: a newer release migrated the database, this one still serves.
    revision = get_session().scalar(text("SELECT version_num FROM alembic_version"))
    probe(app)._heads = ("0000_older", frozenset({"0000_older"}))

    response = client.get("/readyz")

    assert response.status_code == HTTPStatus.OK
    assert response.get_json()["checks"]["schema"] == (
        f"ok: at {revision}, newer than this release's 0000_older")


def test_readyz_is_503_when_the_active_key_cannot_be_decrypted(database_url, session, org):
    # Startup refuses such keys; this is a running process whose keys changed under it.
    other = create_app(base_config(database_url))
    other.config["KEY_ENCRYPTION_KEYS"] = [Fernet.generate_key().decode()]

    body = other.test_client().get("/readyz").get_json()
    with other.app_context():
        get_engine().dispose()

    assert body["failing"] == ["signing_key"]
    assert body["checks"]["signing_key"] == (
        "the active signing key cannot be decrypted with KEY_ENCRYPTION_KEYS")


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path):
    app = create_app(base_config(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"))

    response = app.test_client().get("/readyz")

    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert response.get_json()["failing"] == ["database", "schema", "signing_key"]
    assert response.get_json()["checks"]["database"] == "unreachable"


def test_readyz_body_never_shows_the_database_url_or_its_password():
    app = create_app(base_config("postgresql://latchkey:pw-s3cret-xyz@127.0.0.1:1/nothing"))

    response = app.test_client().get("/readyz")

    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert b"pw-s3cret-xyz" not in response.data and b"127.0.0.1:1" not in response.data


@pytest.mark.redis
@pytest.mark.parametrize("app_config", [{"REDIS_URL": REDIS_URL}])
def test_readyz_checks_redis_when_configured(client, org):
    import redis

    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as check:
            check.ping()
    except redis.RedisError as e:
        from tests.conftest import unavailable

        unavailable("Redis", str(e))

    response = client.get("/readyz")

    assert response.status_code == HTTPStatus.OK
    assert response.get_json()["checks"]["redis"] == "ok"


@pytest.mark.parametrize("app_config", [{"REDIS_URL": "redis://127.0.0.1:1/0"}])
def test_readyz_is_503_when_configured_redis_is_unreachable(client, org):
    response = client.get("/readyz")

    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert response.get_json()["failing"] == ["redis"]
    assert response.get_json()["checks"]["redis"] == "unreachable"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_are_never_cached(client, path):
    assert client.get(path).headers["Cache-Control"] == "no-store"


@pytest.fixture
def sqlite_only(database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock")
    return database_url.removeprefix("sqlite:///")


def test_readyz_answers_while_another_connection_holds_the_sqlite_write_lock(
        client, org, sqlite_only):
    writer = sqlite3.connect(sqlite_only, timeout=0.1, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the write lock, as a busy token writer holds it
    try:
        started = time.monotonic()
        response = client.get("/readyz")
        elapsed = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()

    assert response.status_code == HTTPStatus.OK
    assert elapsed < 2  # a probe waiting for the lock would wait busy_timeout (30 s)


def test_readyz_leaves_no_transaction_holding_the_sqlite_write_lock(client, org, sqlite_only):
    client.get("/readyz")

    writer = sqlite3.connect(sqlite_only, timeout=0.1, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # fails at once if the probe kept the lock
        writer.execute("ROLLBACK")
    finally:
        writer.close()


def test_other_orgs_key_makes_the_deployment_ready(client, session):
    # Readiness is about the deployment: one org with a usable key is enough.
    make_org(session)
    make_org(session)

    assert client.get("/readyz").status_code == HTTPStatus.OK
