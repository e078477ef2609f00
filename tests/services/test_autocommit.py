"""Reads in autocommit mode (the key ring's own sessions) hold no transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from portal.core.clients.models import Client
from portal.core.db import autocommit, get_engine


def test_sqlite_reads_in_autocommit_take_no_write_lock(app, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only: PostgreSQL has no database-wide write lock to check")
    session = app.extensions["latchkey.db"]["sessionmaker"]()
    try:
        assert autocommit(session)
        session.execute(select(func.count()).select_from(Client))
        with get_engine().connect() as other:
            # Would wait for the lock (and fail after the timeout) if the
            # reading session held it.
            other.exec_driver_sql("PRAGMA busy_timeout=0")
            other.execute(text("DELETE FROM used_assertions WHERE 1 = 0"))
            other.commit()
    finally:
        session.close()
