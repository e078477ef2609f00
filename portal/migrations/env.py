"""Alembic environment: runs on the engine handed over by ``portal.migrate``."""

from __future__ import annotations

from alembic import context

from portal.core.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from portal import create_app
        from portal.core.db import get_engine

        with create_app().app_context():
            engine = get_engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `latchkey db upgrade`")
run_migrations_online()
