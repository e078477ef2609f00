"""Readiness: may this process take traffic? (Liveness needs no code: it answers.)

Each check is cheap (one short read per concern, a Fernet decryption the first
time a key is seen, a Redis PING) and holds no lock (:func:`queries.reading`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from portal.core import crypto, settings
from portal.core.signing_keys.models import KeyState, SigningKey
from portal.ops import queries

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("latchkey.ops")

OK = "ok"
EXTENSION_KEY = "latchkey.ops.readiness"
#: Seconds a Redis PING may take before Redis counts as unreachable.
REDIS_TIMEOUT = 1.0


@dataclass(frozen=True)
class Readiness:
    """Each check's verdict: ``ok`` (perhaps with a note after a colon) or what is wrong."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(v == OK or v.startswith(OK + ":") for v in self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [k for k, v in self.checks.items() if not (v == OK or v.startswith(OK + ":"))]


class ReadinessProbe:
    """The app's readiness checks, with what they may keep between calls."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._heads: tuple[str, frozenset[str]] | None = None
        self._usable_kids: set[str] = set()
        self._last_failing: list[str] | None = None
        self._lock = threading.Lock()

    def check(self) -> Readiness:
        """Run every check (in the app context)."""
        checks: dict[str, str] = {}
        try:
            with queries.reading() as session:
                revision = queries.schema_revision(session)
                checks["database"] = OK
                checks["schema"] = self._schema(revision)
                checks["signing_key"] = (self._signing_key(session) if revision is not None
                                         else "unknown (schema not migrated)")
        except SQLAlchemyError as e:
            log.debug("readiness: database check failed", exc_info=e)
            checks.setdefault("database", "unreachable")
            checks.setdefault("schema", "unknown (database unreachable)")
            checks.setdefault("signing_key", "unknown (database unreachable)")
        checks["redis"] = self._redis_check()
        result = Readiness(checks)
        self._log_change(result)
        return result

    def _schema(self, revision: str | None) -> str:
        head, known = self._migration_heads()
        if revision == head:
            return OK
        if revision is None:
            return "not migrated; run `latchkey db upgrade`"
        if revision not in known:
            # A newer release migrated the database (a rolling upgrade): this
            # process's code still works on it, as migrations stay compatible.
            return f"ok: at {revision}, newer than this release's {head}"
        return f"at {revision}, this release needs {head}; run `latchkey db upgrade`"

    def _migration_heads(self) -> tuple[str, frozenset[str]]:
        if self._heads is None:
            from alembic.script import ScriptDirectory

            from portal.migrate import alembic_config

            script = ScriptDirectory.from_config(alembic_config())
            heads = script.get_heads()
            known = frozenset(rev.revision for rev in script.walk_revisions())
            self._heads = (heads[0] if len(heads) == 1 else ",".join(sorted(heads)), known)
        return self._heads

    def _signing_key(self, session: Any) -> str:
        org_id = queries.any_org_with_active_key(session)
        if org_id is None:
            return "no organisation has an active signing key; `latchkey create-org` makes one"
        row = session.execute(
            select(SigningKey.kid, SigningKey.private_key_ciphertext).where(
                SigningKey.org_id == org_id, SigningKey.state == KeyState.ACTIVE)
        ).first()
        if row is None:  # rotated between the two reads
            return OK
        kid, ciphertext = row
        if kid in self._usable_kids:
            return OK
        try:
            crypto.decrypt_private_key(settings.key_encryption_keys(), ciphertext)
        except (crypto.KeyDecryptionFailed, ValueError):
            return "the active signing key cannot be decrypted with KEY_ENCRYPTION_KEYS"
        with self._lock:
            self._usable_kids.add(kid)
        return OK

    def _redis_check(self) -> str:
        url = self.app.config.get("REDIS_URL")
        if not url:
            return "ok: not configured"
        import redis

        try:
            # A connection of its own, closed at once: a probe every few seconds
            # costs nothing, and a kept client would be one more thing to close.
            with redis.Redis.from_url(str(url), socket_timeout=REDIS_TIMEOUT,
                                      socket_connect_timeout=REDIS_TIMEOUT) as client:
                client.ping()
        except Exception as e:  # any failure of the client is "unreachable"
            log.debug("readiness: redis check failed", exc_info=e)
            return "unreachable"
        return OK

    def _log_change(self, result: Readiness) -> None:
        failing = result.failing
        if failing == self._last_failing:
            return
        self._last_failing = failing
        if failing:
            log.warning("not ready: %s", "; ".join(f"{k}: {result.checks[k]}" for k in failing))
        else:
            log.info("ready")


def probe(app: Flask) -> ReadinessProbe:
    """The app's readiness probe."""
    found: ReadinessProbe = app.extensions[EXTENSION_KEY]
    return found


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION_KEY] = ReadinessProbe(app)
