"""Creating and finding organisations."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core import crypto
from portal.core.actor import Actor
from portal.core.audit import services as audit
from portal.core.errors import Conflict, NotFound, ValidationFailed
from portal.core.orgs.models import Organization
from portal.core.signing_keys.services import ensure_org_keys
from portal.core.types import utcnow

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def slugify(name: str) -> str:
    """A URL-safe slug from a display name."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:63].strip("-") or "org"


def create_org(
    session: Session,
    *,
    name: str,
    slug: str | None = None,
    signing_alg: str | None = None,
    actor: Actor,
    now: datetime | None = None,
) -> Organization:
    """Create an organisation with its active and next signing keys."""
    now = now or utcnow()
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationFailed("organisation name is required (at most 200 characters)",
                               field="name")
    slug = slug.strip().lower() if slug else slugify(name)
    if not _SLUG.match(slug):
        raise ValidationFailed(
            "slug must be lower-case letters, digits and hyphens (at most 63)", field="slug"
        )
    if session.scalar(select(Organization.id).where(Organization.slug == slug)) is not None:
        raise Conflict(f"an organisation with slug {slug!r} already exists")
    org = Organization(
        public_id=crypto.new_public_id("org_"), slug=slug, name=name, created_at=now
    )
    session.add(org)
    session.flush()
    ensure_org_keys(session, org_id=org.id, alg=signing_alg)
    audit.record(
        session,
        org_id=org.id,
        actor=actor,
        action="org:created",
        target_type="org",
        target_id=org.slug,
        details={"name": org.name},
        now=now,
    )
    return org


def available_slug(session: Session, name: str) -> str:
    """A slug for ``name`` that no organisation uses yet (``acme``, ``acme-2``, ...).

    Sign-up uses it so that choosing an existing org's name neither fails nor
    tells the visitor that the other org exists.
    """
    base = slugify(name)[:56].strip("-") or "org"
    taken = set(session.scalars(
        select(Organization.slug).where(
            (Organization.slug == base) | Organization.slug.like(f"{base}-%"))
    ))
    if base not in taken:
        return base
    for n in range(2, 1000):
        candidate = f"{base}-{n}"
        if candidate not in taken:
            return candidate
    return f"{base}-{crypto.new_public_id('', 4).lower()}"


def find_org(session: Session, slug: str) -> Organization | None:
    return session.scalar(select(Organization).where(Organization.slug == slug))


def get_org(session: Session, slug: str) -> Organization:
    org = find_org(session, slug)
    if org is None:
        raise NotFound(f"no organisation with slug {slug!r}")
    return org


def public_id_of(session: Session, org_id: int) -> str:
    """The ``oid`` claim value of an org."""
    value = session.scalar(select(Organization.public_id).where(Organization.id == org_id))
    if value is None:
        raise NotFound("no such organisation")
    return value
