"""Configuration defaults and the instance-folder secrets made on first run.

Order, later wins: :class:`Defaults` -> ``instance/config.py`` -> ``LATCHKEY_*``
environment variables -> the ``test_config`` given to ``create_app``.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

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

    # Secrets; when unset they are generated once into instance/secrets.json.
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

    # Rate limits (Flask-Limiter syntax). Failed client authentication is
    # counted per source address; successful requests are never counted.
    TOKEN_FAILURE_RATE_LIMIT = "60/minute"  # noqa: S105 (a limit)
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
    SERVE_THREADS: int | None = None  # per worker; None: granian 1, gthread 4
    SERVE_WORKER_CLASS = "granian"  # or gunicorn's "sync" or "gthread"
    SERVE_ACCESS_LOG = True  # one line per request from the server (no query strings)
    PROTOCOL_DOOR = True  # token and introspection answered by the WSGI door before Flask


def load_or_create_instance_secrets(instance_path: Path) -> dict[str, Any]:
    """Return the generated secrets kept in ``instance/``, creating them on first run.

    The file is created with mode 0600 and written atomically, so two processes
    starting at once never read a half-written file.
    """
    path = instance_path / GENERATED_SECRETS_FILE
    if path.exists():
        return dict(json.loads(path.read_text()))
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
    return dict(json.loads(path.read_text()))


def key_list(value: str | list[str] | None) -> list[str]:
    """Accept a list, a JSON list or a comma-separated string of keys."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part) for part in value]
