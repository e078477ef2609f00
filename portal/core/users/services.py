"""Users and memberships."""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from sqlalchemy import func, select
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


def parse_role(role: str) -> Role:
    """A role's name as a :class:`Role`; anything else is a ``role`` field error."""
    try:
        return Role(role)
    except ValueError as e:
        raise ValidationFailed("role must be owner, admin or viewer", field="role") from e


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
    member_role = parse_role(role)
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


# -- members of an org (the portal's members page) ------------------------------------

#: Length of the random temporary password given to a member added by an owner.
TEMPORARY_PASSWORD_BYTES = 18  # 24 characters of base64url, 144 bits


def list_members(session: Session, *, org_id: int) -> list[Membership]:
    """The org's memberships with their users, oldest first."""
    stmt = (
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == org_id)
        .order_by(Membership.created_at, Membership.id)
    )
    return list(session.scalars(stmt))


def get_membership(session: Session, *, org_id: int, membership_id: int) -> Membership:
    """One membership of the org; another org's behaves exactly like a missing one."""
    membership = session.scalar(
        select(Membership).where(Membership.id == membership_id, Membership.org_id == org_id)
    )
    if membership is None:
        raise NotFound("no such member")
    return membership


def add_member(
    session: Session,
    *,
    org: Organization,
    email: str,
    role: str,
    actor: str,
    source_ip: str = "",
    now: datetime | None = None,
) -> tuple[str | None, Membership]:
    """Add a person to the org by email, creating their account when there is none.

    Returns ``(temporary_password, membership)``; the password is set only when
    a new account was created (there is no mail server to send an invitation),
    and is shown once to the owner: only its argon2id hash is stored.
    """
    email = normalise_email(email)
    parse_role(role)
    user = find_user(session, email)
    if user is not None:
        if session.scalar(select(Membership.id).where(
                Membership.org_id == org.id, Membership.user_id == user.id)) is not None:
            raise Conflict(f"{email} is already a member of this organisation")
        return None, add_membership(session, org=org, user=user, role=role, actor=actor,
                                    source_ip=source_ip, now=now)
    temporary = secrets.token_urlsafe(TEMPORARY_PASSWORD_BYTES)
    user = create_user(session, email=email, password=temporary, org=org, role=role,
                       actor=actor, source_ip=source_ip, now=now)
    membership = session.scalar(
        select(Membership).where(Membership.org_id == org.id, Membership.user_id == user.id)
    )
    if membership is None:  # pragma: no cover (create_user made it just above)
        raise NotFound("the new membership was not created")
    return temporary, membership


def _owner_count(session: Session, org_id: int) -> int:
    return session.scalar(
        select(func.count(Membership.id)).where(
            Membership.org_id == org_id, Membership.role == Role.OWNER)
    ) or 0


def is_last_owner(session: Session, membership: Membership) -> bool:
    """True for the only owner of an org: they can be neither demoted nor removed."""
    return membership.role is Role.OWNER and _owner_count(session, membership.org_id) <= 1


def set_role(
    session: Session,
    *,
    membership: Membership,
    role: str,
    actor: str,
    source_ip: str = "",
    now: datetime | None = None,
) -> Membership:
    """Change a member's role; the org's last owner cannot be demoted."""
    new_role = parse_role(role)
    old_role = membership.role
    if new_role is old_role:
        return membership
    if is_last_owner(session, membership):
        raise ValidationFailed(
            "the organisation's last owner cannot be demoted; make someone else an owner first",
            field="role",
        )
    membership.role = new_role
    session.flush()
    audit.record(
        session,
        org_id=membership.org_id,
        actor=actor,
        action="member:role_changed",
        target_type="user",
        target_id=membership.user.email,
        details={"from": old_role.value, "to": new_role.value},
        source_ip=source_ip,
        now=now,
    )
    return membership


def remove_membership(
    session: Session,
    *,
    membership: Membership,
    actor: str,
    source_ip: str = "",
    now: datetime | None = None,
) -> None:
    """Take a member out of the org (their account stays); never the last owner."""
    if is_last_owner(session, membership):
        raise ValidationFailed(
            "the organisation's last owner cannot be removed; make someone else an owner first"
        )
    email = membership.user.email
    audit.record(
        session,
        org_id=membership.org_id,
        actor=actor,
        action="member:removed",
        target_type="user",
        target_id=email,
        details={"role": membership.role.value},
        source_ip=source_ip,
        now=now,
    )
    session.delete(membership)
    session.flush()
