"""Configuration defaults and the instance-folder secrets made on first run.

Order, later wins: :class:`Defaults` -> ``instance/config.py`` -> ``LATCHKEY_*``
environment variables -> the ``test_config`` given to ``create_app``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import click
from cryptography.fernet import Fernet

log = logging.getLogger("latchkey")

ROOT = Path(__file__).resolve().parent.parent
INSTANCE_PATH = ROOT / "instance"

#: Secrets that a laptop install may generate and keep in ``instance/``.
GENERATED_SECRETS = ("SECRET_KEY", "CLIENT_SECRET_HMAC_KEY", "KEY_ENCRYPTION_KEYS")
GENERATED_SECRETS_FILE = "secrets.json"


class Defaults:
    """Values that work on a laptop with nothing configured."""

    ISSUER = "http://127.0.0.1:5000"
    DATABASE_URL: str | None = None  # None -> SQLite file in the instance folder
    DATABASE_ECHO = False
    REDIS_URL: str | None = None  # None -> in-memory rate limits (one process)

    # Secrets; when unset they are generated once into instance/secrets.json, only
    # while the database holds no data (a missing file later stops the startup).
    SECRET_KEY: str | None = None
    CLIENT_SECRET_HMAC_KEY: str | None = None  # keys the HMAC-SHA256 of client secrets
    KEY_ENCRYPTION_KEYS: str | list[str] | None = None  # Fernet keys, first one encrypts

    # Tokens
    DEFAULT_TOKEN_TTL = 3600
    MIN_TOKEN_TTL = 300
    MAX_TOKEN_TTL = 86400
    DEFAULT_SIGNING_ALG = "RS256"
    MAX_ACTIVE_SECRETS = 5
    # How long a process may keep using its cached idea of an org's active key
    # and the JWKS document. Rotation publishes the next key long before it
    # signs, so a few seconds of staleness never produces an unverifiable token.
    KEY_CACHE_SECONDS = 5
    JWKS_MAX_AGE = 300  # Cache-Control max-age for resource servers
    CLIENT_ASSERTION_LEEWAY = 60

    # Usage history
    USAGE_RETENTION_DAYS = 90
    # The protocol endpoints' usage events (and, with DEFER_TOKEN_RECORDS, the token
    # endpoint's token records) are written in batches this often (0: each with its
    # request). A crash can lose this much of the usage history.
    WRITE_DELAY_MS = 20
    # The token endpoint answers before its token's record is in the database: the
    # record is appended to the process's journal (TOKEN_JOURNAL_DIR) and rides the next
    # batch; until it lands, introspection and revocation judge the token by its claims
    # and its client. A crash (kill -9) loses no record: a dead process's journal is
    # written by the others and by `latchkey serve` when it starts. Off: every record is
    # in the database before its answer. Ignored with DURABLE_TOKEN_WRITES.
    DEFER_TOKEN_RECORDS = True
    # Where the journals of deferred token records are kept, one folder per database
    # (default: instance/token-journal). On a local disk, kept across restarts.
    TOKEN_JOURNAL_DIR = ""
    # The protocol endpoints' writes (token records, their usage events, failure counters,
    # used assertions) wait for the disk at each commit: SQLite synchronous=FULL,
    # PostgreSQL synchronous_commit as the server has it, and no record is deferred.
    # Off: committed (token records: journaled) before each answer, so safe from any
    # crash of Latchkey, but a crash of the database server or the machine may lose the
    # last moments of them (SQLite synchronous=NORMAL, PostgreSQL synchronous_commit=off
    # for these connections only).
    DURABLE_TOKEN_WRITES = False

    # Rate limits (Flask-Limiter syntax). Failed client authentication is
    # counted per source address; successful requests are never counted.
    TOKEN_FAILURE_RATE_LIMIT = "60/minute"  # noqa: S105 (a limit)
    # Requests per org API key to the management API (/api/v1), every worker counted
    # together (the database's or Redis's counters): 429 with Retry-After past it.
    API_RATE_LIMIT = "600/minute"
    RATELIMIT_ENABLED = True
    RATELIMIT_HEADERS_ENABLED = False

    MAX_CONTENT_LENGTH = 64 * 1024  # request bodies above this get 413
    MAX_FORM_PARTS = 100

    SIGNUP = False
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    WTF_CSRF_TIME_LIMIT = None

    # Serving
    PROXY_FIX = 0  # number of trusted proxies in front (X-Forwarded-For/Proto/Host)
    SERVE_HOST = "127.0.0.1"
    SERVE_PORT = 5000
    SERVE_WORKERS = 2
    SERVE_THREADS: int | None = None  # per worker; None: granian 2, gthread 4
    SERVE_WORKER_CLASS = "granian"  # or gunicorn's "sync" or "gthread"
    # granian's own line per request, beside the app's (ACCESS_LOG, portal.ops): off
    SERVE_ACCESS_LOG = False
    PROTOCOL_DOOR = True  # token and introspection answered by the WSGI door before Flask


class StartupError(click.ClickException):
    """The app cannot start as configured. The message is one line saying what to do.

    A :class:`click.ClickException`, so ``latchkey`` prints it as ``latchkey:
    error: ...`` and exits with status 1, without a traceback.
    """


#: What losing the generated secrets costs, said in every message about them.
_LOSS = ("new secrets would invalidate every client secret, API key, portal session and "
         "signing key")
_RESTORE = ("restore it from a backup, or set LATCHKEY_SECRET_KEY, "
            "LATCHKEY_CLIENT_SECRET_HMAC_KEY and LATCHKEY_KEY_ENCRYPTION_KEYS to the values "
            "it held")


def read_instance_secrets(path: Path) -> dict[str, Any] | None:
    """The generated secrets kept in ``path``, or None when there is no such file.

    Raises :class:`StartupError` for a file that cannot be read, is empty, is not
    JSON or lacks a secret: it is never silently replaced. Logs a warning when
    other users may read it.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise StartupError(f"{path} cannot be read ({reason}): make it readable by the user "
                           f"Latchkey runs as (mode 0600), or {_RESTORE}") from e
    if not text.strip():
        raise StartupError(f"{path} is empty: {_RESTORE}; do not delete it while the database "
                           f"holds data ({_LOSS})")
    try:
        values = json.loads(text)
    except ValueError as e:
        raise StartupError(f"{path} is not valid JSON ({e}): {_RESTORE}; do not delete it "
                           f"while the database holds data ({_LOSS})") from e
    if not isinstance(values, dict):
        raise StartupError(f"{path} is not a JSON object of secrets: {_RESTORE}")
    lacking = [k for k in GENERATED_SECRETS if not values.get(k)]
    if lacking:
        raise StartupError(f"{path} lacks {', '.join(lacking)}: {_RESTORE}")
    _warn_if_shared(path)
    return dict(values)


def _warn_if_shared(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s can be read by other users (mode %04o): it holds the keys that protect "
                    "every secret; run chmod 600 %s", path, mode, path)


def create_instance_secrets(instance_path: Path) -> dict[str, Any]:
    """Generate the secrets into ``instance/``: only for a database that holds no data yet.

    The file is created with mode 0600 and written atomically, so two processes
    starting at once never read a half-written file; the first one wins.
    """
    path = instance_path / GENERATED_SECRETS_FILE
    instance_path.mkdir(parents=True, exist_ok=True)
    values = {
        "SECRET_KEY": secrets.token_urlsafe(48),
        "CLIENT_SECRET_HMAC_KEY": secrets.token_urlsafe(48),
        "KEY_ENCRYPTION_KEYS": [Fernet.generate_key().decode()],
    }
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    try:
        os.link(tmp, path)  # fails if another process won the race; keep theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    found = read_instance_secrets(path)  # ours, or the race winner's
    if found is None:
        raise StartupError(f"{path} vanished while it was being created: start again")
    return found


def fernet_keys(value: str | list[str] | None) -> list[str]:
    """The key-encryption keys, each checked to be a Fernet key (:class:`StartupError` if not)."""
    keys = key_list(value)
    if not keys:
        raise StartupError("KEY_ENCRYPTION_KEYS is empty: set it to one or more Fernet keys "
                           "(comma-separated; the first encrypts, all decrypt)")
    for i, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError) as e:
            raise StartupError(
                f"KEY_ENCRYPTION_KEYS: key {i} of {len(keys)} is not a Fernet key (32 "
                "url-safe base64-encoded bytes; make one with `python -c \"from "
                "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())\"`)"
            ) from e
    return keys


def key_list(value: str | list[str] | None) -> list[str]:
    """Accept a list, a JSON list or a comma-separated string of keys."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part) for part in value]
