"""The accounts migration (invitations, session generation, forced password change) on a
database that already has users, on SQLite and PostgreSQL, up and down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import inspect, text

from portal import create_app
from portal.core.db import get_engine
from portal.migrate import alembic_config
from tests.conftest import base_config, postgres_database

REVISION = "0002_accounts"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database(request, tmp_path) -> Iterator[str]:
    """A database of its own, with no tables yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    with postgres_database("latchkey_migrate") as url:
        yield url


def test_existing_users_keep_their_password_and_sessions_and_it_goes_down_again(
        empty_database):
    app = create_app(base_config(empty_database))
    with app.app_context():
        config = alembic_config()
        command.upgrade(config, "0001")
        with get_engine().begin() as conn:
            conn.execute(text(
                "INSERT INTO users (public_id, email, name, password_hash, created_at) "
                "VALUES ('usr_1', 'old@example.com', '', '$argon2id$x', CURRENT_TIMESTAMP)"))

        command.upgrade(config, REVISION)
        with get_engine().connect() as conn:
            row = conn.execute(text(
                "SELECT must_change_password, session_generation, password_hash FROM users"
            )).one()
            tables = inspect(conn).get_table_names()
        assert (bool(row[0]), row[1], row[2]) == (False, 0, "$argon2id$x")
        assert "invitations" in tables

        command.downgrade(config, "0001")
        with get_engine().connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("users")}
            tables = inspect(conn).get_table_names()
        assert "session_generation" not in columns and "must_change_password" not in columns
        assert "invitations" not in tables

        command.upgrade(config, "head")
        get_engine().dispose()
