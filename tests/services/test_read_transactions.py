"""Read transactions (safe requests, read-only sessions) never write, on either backend;
on SQLite they take no write lock."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import select, update

from portal.core.db import (
    ReadOnlyTransaction,
    get_session,
    in_read_transaction,
    new_session,
)
from portal.core.orgs.models import Organization


def test_read_only_session_refuses_an_orm_write(app, org):
    reader = new_session(read_only=True)
    try:
        reader.get(Organization, org.id).name = "changed"  # type: ignore[union-attr]
        with pytest.raises(ReadOnlyTransaction):
            reader.flush()
    finally:
        reader.close()


def test_read_only_session_refuses_a_core_write(app, org):
    reader = new_session(read_only=True)
    try:
        with pytest.raises(ReadOnlyTransaction):
            reader.execute(update(Organization).values(name="changed"))
    finally:
        reader.close()


def test_read_only_session_reads(app, org):
    reader = new_session(read_only=True)
    try:
        assert reader.scalar(select(Organization.name).where(Organization.id == org.id)) == "Acme"
        assert in_read_transaction(reader)
    finally:
        reader.close()


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_transaction_begun_in_a_safe_request_refuses_writes(app, org, method):
    with app.test_request_context("/", method=method):
        session = new_session()
        try:
            session.get(Organization, org.id)
            assert in_read_transaction(session)
            with pytest.raises(ReadOnlyTransaction):
                session.execute(update(Organization).values(name="changed"))
        finally:
            session.close()


def test_transaction_begun_in_a_post_request_writes(app, org):
    with app.test_request_context("/", method="POST"):
        session = new_session()
        try:
            session.get(Organization, org.id).name = "changed"  # type: ignore[union-attr]
            session.commit()
            assert not in_read_transaction(session)
        finally:
            session.close()

    assert get_session().scalar(select(Organization.name).where(Organization.id == org.id)) \
        == "changed"


def test_open_read_session_leaves_the_sqlite_write_lock_free(app, org):
    if app.config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("SQLite's write lock")
    reader = new_session(read_only=True)
    try:
        reader.get(Organization, org.id)
        assert reader.in_transaction()
        path = app.config["DATABASE_URL"].split("sqlite:///", 1)[1]
        probe = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")  # raises "database is locked" if the reader held it
            probe.execute("UPDATE organizations SET name = 'written meanwhile'")
            probe.execute("COMMIT")
        finally:
            probe.close()
        # The reader keeps its snapshot until its transaction ends.
        assert reader.scalar(select(Organization.name)) == "Acme"
    finally:
        reader.close()

