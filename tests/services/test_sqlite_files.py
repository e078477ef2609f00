"""The SQLite database holds emails, password hashes, keyed hashes and encrypted keys:
its file, WAL and shared memory are readable by their owner only."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from portal.core.db import make_engine


def modes_after_a_write(path: Path) -> dict[str, int]:
    """Write a row through the app's engine, then the mode of every file in the folder
    (read while a connection keeps the WAL and SHM open)."""
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM t").scalar()
            return {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
    finally:
        engine.dispose()


def test_new_database_its_wal_and_shm_are_created_0600(tmp_path):
    modes = modes_after_a_write(tmp_path / "fresh.db")

    assert modes == {"fresh.db": 0o600, "fresh.db-wal": 0o600, "fresh.db-shm": 0o600}


def test_existing_database_readable_by_others_is_used_with_a_warning(tmp_path, caplog):
    path = tmp_path / "shared.db"
    path.touch()
    path.chmod(0o644)

    with caplog.at_level(logging.WARNING, logger="latchkey.db"):
        modes_after_a_write(path)

    assert f"{path} can be read by other users (mode 0644)" in caplog.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the operator's file, left as it is
