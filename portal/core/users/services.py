"""Users and memberships."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core import crypto
from portal.core.audit import services as audit
from portal.core.errors import Conflict, NotFound, ValidationFailed
from portal.core.orgs.models import Organization
from portal.core.types import utcnow
from portal.core.users.models import Membership, Role, User

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")
MIN_PASSWORD_LENGTH = 10


def normalise_email(email: str) -> str:
    email = (email or "").strip().lower()
    if not _EMAIL.match(email):
        raise ValidationFailed("enter a valid email address", field="email")
    return email


def create_user(
    session: Session,
    *,
    email: str,
    password: str,
    name: str = "",
    org: Organization | None = None,
    role: str = Role.ADMIN.value,
    actor: str,
    source_ip: str = "",
    now: datetime | None = None,
) -> User:
    """Create a user (argon2id password) and, given ``org``, their membership."""
    now = now or utcnow()
    email = normalise_email(email)
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user with email {email} already exists")
    user = User(
        public_id=crypto.new_public_id("usr_"),
        email=email,
        name=(name or "").strip(),
        password_hash=crypto.hash_password(password),
        created_at=now,
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        org_id=org.id if org else None,
        actor=actor,
        action="user:created",
        target_type="user",
        target_id=email,
        source_ip=source_ip,
        now=now,
    )
    if org is not None:
        add_membership(session, org=org, user=user, role=role, actor=actor,
                       source_ip=source_ip, now=now)
    return user


def add_membership(
    session: Session,
    *,
    org: Organization,
    user: User,
    role: str,
    actor: str,
    source_ip: str = "",
    now: datetime | None = None,
) -> Membership:
    """Give a user a role in an org."""
    try:
        member_role = Role(role)
    except ValueError as e:
        raise ValidationFailed("role must be owner, admin or viewer", field="role") from e
    existing = session.scalar(
        select(Membership).where(Membership.org_id == org.id, Membership.user_id == user.id)
    )
    if existing is not None:
        raise Conflict(f"{user.email} is already a member of {org.slug}")
    membership = Membership(org_id=org.id, user_id=user.id, role=member_role,
                            created_at=now or utcnow())
    session.add(membership)
    session.flush()
    audit.record(
        session,
        org_id=org.id,
        actor=actor,
        action="member:added",
        target_type="user",
        target_id=user.email,
        details={"role": member_role.value},
        source_ip=source_ip,
        now=now,
    )
    return membership


def find_user(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == (email or "").strip().lower()))


def get_user(session: Session, email: str) -> User:
    user = find_user(session, email)
    if user is None:
        raise NotFound(f"no user with email {email!r}")
    return user


def authenticate(session: Session, *, email: str, password: str,
                 now: datetime | None = None) -> User | None:
    """The user if the password matches, rehashing when argon2 parameters changed."""
    user = find_user(session, email)
    if user is None:
        crypto.verify_password(_DUMMY_HASH, password)  # same cost for unknown emails
        return None
    if not crypto.verify_password(user.password_hash, password):
        return None
    if crypto.password_needs_rehash(user.password_hash):
        user.password_hash = crypto.hash_password(password)
    user.last_login_at = now or utcnow()
    session.flush()
    return user


_DUMMY_HASH = crypto.hash_password("not-a-real-password")
