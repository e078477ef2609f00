"""Alembic, driven from the app's configuration (``latchkey db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from portal.core.db import get_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    """An Alembic config for the current app's database (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = get_engine()
    return cfg


def upgrade(revision: str = "head") -> None:
    """Migrate the current app's database to ``revision``."""
    command.upgrade(alembic_config(), revision)
