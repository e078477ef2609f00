"""Users, their passwords and portal sessions, and memberships.

Password hashing (argon2id, tens to hundreds of milliseconds of CPU) never runs
inside a database transaction: on SQLite an open transaction may hold the one
write lock that token issuance needs, and on PostgreSQL it holds row locks and
a connection. So every flow that hashes is split into steps the caller runs in
order, ending the read before the slow step:

* sign-in: :func:`find_credentials` (read) -> end the transaction ->
  :func:`check_password` and :func:`rehash_if_needed` (argon2, no database) ->
  :func:`record_sign_in` (one short write);
* a new password (sign-up, invitation, change, reset): :func:`hash_new_password`
  or :func:`prepare_password_change` first, then the service that writes the
  hash it is given.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, joinedload

from portal.core import crypto
from portal.core.actor import Actor
from portal.core.audit import services as audit
from portal.core.clients.models import Client, ClientKind
from portal.core.errors import Conflict, NotFound, ValidationFailed
from portal.core.orgs.models import Organization
from portal.core.tokens.models import IssuedToken
from portal.core.types import utcnow
from portal.core.users.models import Membership, Role, User

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")
#: The floor for every password (the CLI included); portal forms ask for more.
MIN_PASSWORD_LENGTH = 10
#: Passwords longer than this are refused before hashing (argon2 cost grows with length).
MAX_PASSWORD_LENGTH = 1024


def normalise_email(email: str) -> str:
    email = (email or "").strip().lower()
    if not _EMAIL.match(email):
        raise ValidationFailed("enter a valid email address", field="email")
    return email


# -- passwords ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A new password that passed the rules, as its argon2id hash.

    Made by :func:`hash_new_password` before any transaction is opened; the
    services that store a password take this instead of the plaintext.
    """

    value: str


def check_password_rules(password: str, *, field: str = "password") -> None:
    """The rules every new password meets; a ``field`` error otherwise."""
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"password must be at least {MIN_PASSWORD_LENGTH} characters", field=field)
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"password must be at most {MAX_PASSWORD_LENGTH} characters", field=field)


def hash_new_password(password: str, *, field: str = "password") -> PasswordHash:
    """Check a new password's rules and hash it with argon2id (slow: no transaction open)."""
    check_password_rules(password, field=field)
    return PasswordHash(crypto.hash_password(password))


def new_temporary_password() -> str:
    """A random temporary password (144 bits), shown once to the owner who reset it."""
    return secrets.token_urlsafe(TEMPORARY_PASSWORD_BYTES)


#: Length of a temporary password set by an owner's reset.
TEMPORARY_PASSWORD_BYTES = 18  # 24 characters of base64url, 144 bits


def prepare_password_change(
    current_hash: str, *, current_password: str, new_password: str
) -> PasswordHash:
    """Check the current password and hash the new one (argon2: no transaction open).

    Raises a ``current_password`` error when the current password is wrong and
    a ``new_password`` error when the new one breaks a rule or is the same.
    """
    if not crypto.verify_password(current_hash, current_password or ""):
        raise ValidationFailed("current password is incorrect", field="current_password")
    check_password_rules(new_password, field="new_password")
    if crypto.verify_password(current_hash, new_password):
        raise ValidationFailed(
            "choose a password different from the current one", field="new_password")
    return PasswordHash(crypto.hash_password(new_password))


# -- users -------------------------------------------------------------------------------


def create_user(
    session: Session,
    *,
    email: str,
    password: str | PasswordHash,
    name: str = "",
    org: Organization | None = None,
    role: str = Role.ADMIN.value,
    actor: Actor,
    now: datetime | None = None,
) -> User:
    """Create a user and, given ``org``, their membership.

    ``password`` is best a :class:`PasswordHash` made before the transaction
    began; a plaintext is checked and hashed here (the CLI and tests).
    """
    now = now or utcnow()
    hashed = password if isinstance(password, PasswordHash) else hash_new_password(password)
    email = normalise_email(email)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user with email {email} already exists")
    user = User(
        public_id=crypto.new_public_id("usr_"),
        email=email,
        name=(name or "").strip(),
        password_hash=hashed.value,
        must_change_password=False,
        session_generation=0,
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
        now=now,
    )
    if org is not None:
        add_membership(session, org=org, user=user, role=role, actor=actor, now=now)
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
    actor: Actor,
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


# -- sign-in -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """What sign-in needs of a user, read before the transaction ends."""

    user_id: int
    password_hash: str


def find_credentials(session: Session, email: str) -> Credentials | None:
    """The stored password hash for an email, or None (read only)."""
    row = session.execute(
        select(User.id, User.password_hash).where(User.email == (email or "").strip().lower())
    ).first()
    return Credentials(row.id, row.password_hash) if row is not None else None


_DUMMY_HASH = crypto.hash_password("not-a-real-password")


def check_password(credentials: Credentials | None, password: str) -> bool:
    """argon2 verification; an unknown email costs the same as a wrong password."""
    if credentials is None:
        crypto.verify_password(_DUMMY_HASH, password)
        return False
    return crypto.verify_password(credentials.password_hash, password)


def rehash_if_needed(credentials: Credentials, password: str) -> PasswordHash | None:
    """A new hash when the stored one was made with other argon2 parameters."""
    if not crypto.password_needs_rehash(credentials.password_hash):
        return None
    return PasswordHash(crypto.hash_password(password))


def record_sign_in(
    session: Session,
    *,
    credentials: Credentials,
    rehashed: PasswordHash | None = None,
    now: datetime | None = None,
) -> User | None:
    """Write the sign-in time (and a rehash); None if the user was deleted meanwhile.

    The rehash replaces only the hash that was checked, so a password changed
    between the read and this write is never overwritten with the old one.
    """
    if rehashed is not None:
        session.execute(
            update(User)
            .where(User.id == credentials.user_id,
                   User.password_hash == credentials.password_hash)
            .values(password_hash=rehashed.value)
        )
    user = session.get(User, credentials.user_id, populate_existing=True)
    if user is None:
        return None
    user.last_login_at = now or utcnow()
    session.flush()
    return user


# -- sessions and password changes -------------------------------------------------------


def end_sessions(session: Session, *, user_id: int) -> int:
    """End every portal session of the user (sign-out); returns the new session generation."""
    session.execute(
        update(User).where(User.id == user_id)
        .values(session_generation=User.session_generation + 1)
    )
    return _generation(session, user_id)


def _generation(session: Session, user_id: int) -> int:
    generation = session.scalar(select(User.session_generation).where(User.id == user_id))
    if generation is None:
        raise NotFound("no such user")
    return int(generation)


def change_password(
    session: Session,
    *,
    user_id: int,
    replaced_hash: str,
    new: PasswordHash,
    actor: Actor,
    now: datetime | None = None,
) -> int:
    """Store a new password and end the user's sessions; returns the new session generation.

    ``replaced_hash`` is the hash the current password was checked against: if
    the password changed in between, nothing is written and this is a Conflict.
    """
    now = now or utcnow()
    result = session.execute(
        update(User)
        .where(User.id == user_id, User.password_hash == replaced_hash)
        .values(password_hash=new.value, must_change_password=False,
                session_generation=User.session_generation + 1)
    )
    if not getattr(result, "rowcount", 0):
        raise Conflict("your password was changed meanwhile; sign in again and retry")
    user = session.get(User, user_id, populate_existing=True)
    if user is None:  # pragma: no cover (the update above found it)
        raise NotFound("no such user")
    audit.record(session, org_id=None, actor=actor, action="user:password_changed",
                 target_type="user", target_id=user.email, now=now)
    session.flush()
    return user.session_generation


def check_reset_allowed(session: Session, *, membership: Membership, actor_user_id: int) -> None:
    """Refuse an owner's reset of a password that also guards another org's access.

    A reset shows the owner a temporary password: for an account that is also
    a member elsewhere, that would let this org's owner sign in to the other org.
    """
    if membership.user_id == actor_user_id:
        raise ValidationFailed("change your own password on your account page")
    elsewhere = session.scalar(
        select(func.count(Membership.id)).where(
            Membership.user_id == membership.user_id, Membership.org_id != membership.org_id)
    )
    if elsewhere:
        raise Conflict(
            f"{membership.user.email} is also a member of another organisation, so only "
            "they can change their password (on their account page)"
        )


def reset_password(
    session: Session,
    *,
    membership: Membership,
    temporary: PasswordHash,
    actor_user_id: int,
    actor: Actor,
    now: datetime | None = None,
) -> User:
    """An owner sets a temporary password for a member of only this org.

    The member's sessions end and nothing but choosing a new password works at
    their next sign-in. The user row is locked while the rule is checked, so an
    invitation to another org accepted at the same moment cannot slip in between.
    """
    now = now or utcnow()
    membership = _relock(session, membership)
    user = session.scalar(
        select(User).where(User.id == membership.user_id)
        .with_for_update().execution_options(populate_existing=True)
    )
    if user is None:  # pragma: no cover (the membership's user cannot be missing)
        raise NotFound("no such member")
    check_reset_allowed(session, membership=membership, actor_user_id=actor_user_id)
    user.password_hash = temporary.value
    user.must_change_password = True
    user.session_generation = user.session_generation + 1
    audit.record(session, org_id=membership.org_id, actor=actor,
                 action="member:password_reset", target_type="user", target_id=user.email, now=now)
    session.flush()
    return user


# -- members of an org (the portal's members page) ---------------------------------------


def list_members(session: Session, *, org_id: int) -> list[Membership]:
    """The org's memberships with their users, oldest first."""
    stmt = (
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == org_id)
        .order_by(Membership.created_at, Membership.id)
    )
    return list(session.scalars(stmt))


def memberships_of(session: Session, *, user_id: int) -> list[Membership]:
    """Every membership of a user with its org, oldest first (account page, org switcher)."""
    stmt = (
        select(Membership)
        .options(joinedload(Membership.org))
        .where(Membership.user_id == user_id)
        .order_by(Membership.id)
        .execution_options(populate_existing=True)  # roles as they are now
    )
    return list(session.scalars(stmt))


def find_member(session: Session, *, org_id: int, public_id: str) -> User | None:
    """The member of the org with this public user id, or None (a user of another org too)."""
    stmt = (
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org_id, User.public_id == public_id)
    )
    return session.scalar(stmt)


def get_membership(session: Session, *, org_id: int, membership_id: int) -> Membership:
    """One membership of the org; another org's behaves exactly like a missing one."""
    membership = session.scalar(
        select(Membership).where(Membership.id == membership_id, Membership.org_id == org_id)
    )
    if membership is None:
        raise NotFound("no such member")
    return membership


def _lock_owners(session: Session, org_id: int) -> set[int]:
    """Lock the org's owner memberships and return their ids.

    Every change that could leave an org without an owner takes these row
    locks first, in id order, so on PostgreSQL two concurrent demotions or
    removals run one after the other and the second counts what the first left
    (READ COMMITTED re-checks a locked row's ``role`` once the lock is granted).
    SQLite has one writer at a time and ignores ``FOR UPDATE``.
    """
    stmt = (
        select(Membership.id)
        .where(Membership.org_id == org_id, Membership.role == Role.OWNER)
        .order_by(Membership.id)
        .with_for_update()
    )
    return set(session.scalars(stmt))


def _relock(session: Session, membership: Membership) -> Membership:
    """The membership as it is now, locked; NotFound when it was removed meanwhile."""
    current = session.scalar(
        select(Membership).where(Membership.id == membership.id)
        .with_for_update().execution_options(populate_existing=True)
    )
    if current is None:
        raise NotFound("no such member")
    return current


def is_last_owner(session: Session, membership: Membership) -> bool:
    """True for the only owner of an org: they can be neither demoted nor removed."""
    if membership.role is not Role.OWNER:
        return False
    owners = session.scalar(
        select(func.count(Membership.id)).where(
            Membership.org_id == membership.org_id, Membership.role == Role.OWNER)
    ) or 0
    return owners <= 1


def set_role(
    session: Session,
    *,
    membership: Membership,
    role: str,
    actor: Actor,
    now: datetime | None = None,
) -> Membership:
    """Change a member's role; the org's last owner cannot be demoted, even concurrently."""
    new_role = parse_role(role)
    owners = _lock_owners(session, membership.org_id)
    membership = _relock(session, membership)
    old_role = membership.role
    if new_role is old_role:
        return membership
    if membership.id in owners and len(owners) <= 1:
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
        now=now,
    )
    return membership


def remove_membership(
    session: Session,
    *,
    membership: Membership,
    actor: Actor,
    now: datetime | None = None,
) -> int:
    """Take a member out of the org (their account stays); never the last owner.

    The active tokens of the org's ``user`` clients acting for them are revoked
    in the same write, so none of them introspects active afterwards. Returns
    how many tokens were revoked.
    """
    now = now or utcnow()
    owners = _lock_owners(session, membership.org_id)
    membership = _relock(session, membership)
    if membership.id in owners and len(owners) <= 1:
        raise ValidationFailed(
            "the organisation's last owner cannot be removed; make someone else an owner first"
        )
    acting_for_them = select(Client.id).where(
        Client.org_id == membership.org_id,
        Client.kind == ClientKind.USER,
        Client.user_id == membership.user_id,
    )
    result = session.execute(
        update(IssuedToken)
        .where(
            IssuedToken.org_id == membership.org_id,
            IssuedToken.client_id.in_(acting_for_them),
            IssuedToken.revoked_at.is_(None),
            IssuedToken.expires_at > now,
        )
        .values(revoked_at=now, revoked_by=actor.label[:200])
        .execution_options(synchronize_session=False)
    )
    revoked = int(getattr(result, "rowcount", 0) or 0)
    audit.record(
        session,
        org_id=membership.org_id,
        actor=actor,
        action="member:removed",
        target_type="user",
        target_id=membership.user.email,
        details={"role": membership.role.value, "tokens_revoked": revoked},
        now=now,
    )
    session.delete(membership)
    session.flush()
    return revoked
