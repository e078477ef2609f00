"""docs/deploy.md: every command in it is run by a test, and those commands work.

:data:`COVERAGE` says which test runs (or stands for) each command of the
guide; a command added to the guide without an entry here fails
:func:`test_every_command_in_the_guide_is_covered_by_a_test`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.conftest import _wipe, base_config, migrate

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deploy.md"
SELF = "tests/ops/test_deploy_doc.py"
LIVE = "tests/live/test_ops_doc_commands.py"

#: (pattern a command of the guide matches, the tests that run it).
COVERAGE: list[tuple[str, list[str]]] = [
    (r"export LATCHKEY_(ISSUER|DATABASE_URL|REDIS_URL|LOG_FORMAT)=\S+",
     ["tests/live/test_ops_many_instances.py::test_both_instances_are_ready_with_redis",
      "tests/live/test_zz_log_audit.py::test_the_audited_server_logged_every_flow_in_json"]),
    (r"export LATCHKEY_PROXY_FIX=1",
     ["tests/ops/test_logs.py::test_a_trusted_proxys_request_id_is_kept_and_logged",
      "tests/ops/test_metrics.py::test_behind_a_proxy_on_loopback_the_clients_address_counts"]),
    (r"export LATCHKEY_METRICS_TOKEN=.*",
     [f"{SELF}::test_secret_generators_make_usable_values",
      f"{LIVE}::test_probe_and_metrics_commands_answer_as_the_guide_says"]),
    (r"python3 -c .*",
     [f"{SELF}::test_secret_generators_make_usable_values"]),
    (r'export LATCHKEY_KEY_ENCRYPTION_KEYS=.*',
     ["tests/ops/test_rotate_kek.py::test_rotate_kek_reencrypts_every_key_so_the_old_kek_can_go"]),
    (r"latchkey rotate-kek",
     ["tests/ops/test_rotate_kek.py::test_rotate_kek_reencrypts_every_key_so_the_old_kek_can_go",
      "tests/live/test_zz_log_audit.py::test_no_secret_appears_in_any_live_servers_log"]),
    (r"latchkey db upgrade",
     [f"{LIVE}::test_probe_and_metrics_commands_answer_as_the_guide_says",
      "tests/services/test_migrations.py"]),
    (r"latchkey serve --host 127.0.0.1 --port 8000 --workers 4",
     [f"{LIVE}::test_probe_and_metrics_commands_answer_as_the_guide_says",
      "tests/live/test_ops_shutdown.py::test_sigterm_lets_a_request_in_flight_finish"]),
    (r"sqlite3 instance/latchkey.db .*",
     [f"{SELF}::test_sqlite_backup_command_copies_a_database_in_use"]),
    (r"pg_dump .*|pg_restore .*",
     [f"{SELF}::test_pg_dump_and_restore_commands_round_trip"]),
    (r"curl -s .*",
     [f"{LIVE}::test_probe_and_metrics_commands_answer_as_the_guide_says"]),
]


def guide_commands() -> list[str]:
    """Every command line of the guide's ``sh`` blocks (comments and blank lines dropped)."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.S):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+#.*$", "", line))
    return commands


def command(pattern: str) -> str:
    """The one command of the guide that ``pattern`` matches."""
    (found,) = {c for c in guide_commands() if re.fullmatch(pattern, c)}
    return found


def test_the_guide_is_linked_from_the_readme():
    assert "(docs/deploy.md)" in (ROOT / "README.md").read_text()


def test_every_command_in_the_guide_is_covered_by_a_test():
    commands = guide_commands()
    assert len(commands) >= 15
    uncovered = [c for c in commands
                 if not any(re.fullmatch(pattern, c) for pattern, _ in COVERAGE)]
    assert uncovered == [], "commands of docs/deploy.md that no test runs"


def test_every_covering_test_exists():
    for _pattern, tests in COVERAGE:
        for node in tests:
            path, _, name = node.partition("::")
            text = (ROOT / path).read_text()
            assert not name or f"def {name}(" in text, node


def test_secret_generators_make_usable_values():
    outputs = [subprocess.run(["bash", "-c", c], capture_output=True, text=True, check=True,
                              timeout=60).stdout.strip()
               for c in guide_commands() if c.startswith("python3 -c")]
    token, hmac_key, kek = outputs
    assert len(token) >= 64 and len(hmac_key) >= 64 and token != hmac_key
    Fernet(kek.encode())  # a valid Fernet key
    export = command(r"export LATCHKEY_METRICS_TOKEN=.*")
    value = subprocess.run(["bash", "-c", f"{export}; echo $LATCHKEY_METRICS_TOKEN"],
                           capture_output=True, text=True, check=True, timeout=60).stdout
    assert len(value.strip()) >= 40


@pytest.mark.skipif(shutil.which("sqlite3") is None and os.environ.get("CI") != "true",
                    reason="the sqlite3 command is not installed (make test installs it)")
def test_sqlite_backup_command_copies_a_database_in_use(tmp_path):
    from portal import create_app
    from portal.core.db import get_engine, get_session
    from tests.factories import make_org

    (tmp_path / "instance").mkdir()
    url = f"sqlite:///{tmp_path / 'instance' / 'latchkey.db'}"
    migrate(url)
    app = create_app(base_config(url))
    with app.app_context():
        make_org(get_session(), slug="backed-up")
        reader = sqlite3.connect(tmp_path / "instance" / "latchkey.db")
        reader.execute("BEGIN")  # in use: a reader holds a snapshot, the WAL has the writes
        reader.execute("SELECT count(*) FROM organizations").fetchone()
        try:
            subprocess.run(["bash", "-c", command(r"sqlite3 instance/latchkey.db .*")],
                           cwd=tmp_path, check=True, timeout=60)
        finally:
            reader.close()
            get_session().close()
            get_engine().dispose()

    backup = sqlite3.connect(tmp_path / "latchkey-backup.db")
    try:
        assert backup.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert backup.execute("SELECT slug FROM organizations").fetchall() == [("backed-up",)]
        assert backup.execute("SELECT count(*) FROM signing_keys").fetchone() == (2,)
    finally:
        backup.close()


@pytest.mark.postgres
def test_pg_dump_and_restore_commands_round_trip(tmp_path, postgres_url):
    import psycopg

    from portal import create_app
    from portal.core.db import get_engine, get_session
    from tests.conftest import postgres_database
    from tests.factories import make_org

    app = create_app(base_config(postgres_url))
    with app.app_context():
        make_org(get_session(), slug=f"dumped-{secrets.token_hex(3)}")
        get_session().close()
    try:
        with postgres_database("latchkey_restore") as restore_url:
            env = {**os.environ, "LATCHKEY_DATABASE_URL": postgres_url,
                   "RESTORE_DATABASE_URL": restore_url}
            for pattern in (r"pg_dump .*", r"pg_restore .*"):
                subprocess.run(["bash", "-c", command(pattern)], cwd=tmp_path, env=env,
                               check=True, timeout=120)
            with psycopg.connect(postgres_url) as source, psycopg.connect(restore_url) as copy:
                query = "SELECT slug, public_id FROM organizations ORDER BY id"
                assert copy.execute(query).fetchall() == source.execute(query).fetchall()
                keys = "SELECT kid, private_key_ciphertext FROM signing_keys ORDER BY id"
                assert copy.execute(keys).fetchall() == source.execute(keys).fetchall()
    finally:
        with app.app_context():
            _wipe(get_engine())  # the suite's shared database: leave it as found
            get_engine().dispose()
