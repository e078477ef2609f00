"""Read-only queries behind the readiness probe and the scrape-time gauges.

Each runs on a session of its own in autocommit mode (:func:`reading`): no
transaction is left open, and on SQLite no ``BEGIN IMMEDIATE`` takes the
write lock, so a probe or a scrape never waits for, or holds up, a writer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from portal.core.clients.models import Client, ClientSecret
from portal.core.db import autocommit, new_session
from portal.core.orgs.models import Organization
from portal.core.signing_keys.models import KeyState, SigningKey


@contextlib.contextmanager
def reading() -> Iterator[Session]:
    """A session of its own whose statements each run on their own, closed afterwards."""
    session = new_session()
    try:
        autocommit(session)
        yield session
    finally:
        session.close()


def schema_revision(session: Session) -> str | None:
    """The Alembic revision the database is at; None before the first migration.

    Raises :class:`SQLAlchemyError` when the database cannot be reached.
    """
    try:
        value = session.scalar(text("SELECT version_num FROM alembic_version"))
    except SQLAlchemyError:
        # No such table, or no database at all: tell them apart with a
        # statement that needs no table (it raises when unreachable).
        session.rollback()
        autocommit(session)
        session.execute(text("SELECT 1"))
        return None
    return str(value) if value is not None else None


def any_org_with_active_key(session: Session) -> int | None:
    """The id of one org that has an active signing key, or None."""
    return session.scalar(
        select(SigningKey.org_id).where(SigningKey.state == KeyState.ACTIVE).limit(1)
    )


@dataclass(frozen=True)
class KeyAges:
    """How old each org's active signing key is (seconds since it became active)."""

    oldest: list[tuple[str, float]]  # (org slug, age), oldest first, at most ``limit``
    oldest_age: float | None  # over every org
    orgs: int
    orgs_without_key: int


def signing_key_ages(session: Session, *, now: datetime, limit: int) -> KeyAges:
    """The ``limit`` oldest active keys by org, and figures over every org."""
    since = func.coalesce(SigningKey.activated_at, SigningKey.created_at)
    rows = session.execute(
        select(Organization.slug, since.label("since"))
        .join(SigningKey, SigningKey.org_id == Organization.id)
        .where(SigningKey.state == KeyState.ACTIVE)
        .order_by(since, Organization.slug)
        .limit(limit)
    ).all()
    oldest = [(slug, max(0.0, (now - _aware(at)).total_seconds())) for slug, at in rows]
    first = session.scalar(
        select(since).where(SigningKey.state == KeyState.ACTIVE).order_by(since).limit(1)
    )
    orgs = session.scalar(select(func.count()).select_from(Organization)) or 0
    has_key = exists().where(SigningKey.org_id == Organization.id,
                             SigningKey.state == KeyState.ACTIVE)
    without = session.scalar(select(func.count()).select_from(Organization).where(~has_key)) or 0
    oldest_age = max(0.0, (now - _aware(first)).total_seconds()) if first is not None else None
    return KeyAges(oldest=oldest, oldest_age=oldest_age, orgs=int(orgs),
                   orgs_without_key=int(without))


@dataclass(frozen=True)
class ExpiringSecrets:
    """Client secrets, not revoked, that expire within the window."""

    by_org: list[tuple[str, int]]  # (org slug, count), most first, at most ``limit``
    total: int  # over every org


def secrets_expiring(session: Session, *, now: datetime, within: timedelta,
                     limit: int) -> ExpiringSecrets:
    """Unrevoked client secrets expiring in ``(now, now + within]``, by org and in all."""
    conditions = (ClientSecret.revoked_at.is_(None), ClientSecret.expires_at > now,
                  ClientSecret.expires_at <= now + within)
    count = func.count(ClientSecret.id)
    rows = session.execute(
        select(Organization.slug, count)
        .select_from(ClientSecret)
        .join(Client, Client.id == ClientSecret.client_id)
        .join(Organization, Organization.id == Client.org_id)
        .where(*conditions)
        .group_by(Organization.slug)
        .order_by(count.desc(), Organization.slug)
        .limit(limit)
    ).all()
    total = session.scalar(select(func.count(ClientSecret.id)).where(*conditions)) or 0
    return ExpiringSecrets(by_org=[(slug, int(n)) for slug, n in rows], total=int(total))


def _aware(value: datetime | str) -> datetime:
    """A UTC datetime from what an aggregate returns (SQLite may hand back text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
