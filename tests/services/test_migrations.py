"""Alembic migrations build exactly the schema the models describe, on every backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from portal.core.db import Base, get_engine
from portal.migrate import alembic_config


def test_migrated_schema_matches_the_models(app):
    with get_engine().connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_database_is_at_the_single_head(app):
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    with get_engine().connect() as conn:
        current = MigrationContext.configure(conn).get_current_heads()
    assert len(heads) == 1
    assert current == tuple(heads)
