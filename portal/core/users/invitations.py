"""Invitations: how an owner brings a person into the org without learning any credential.

An owner invites an email with a role and is shown a single-use link, once; the
link's secret is random (256 bits) and stored only as a keyed hash, and it
expires after :data:`INVITATION_LIFETIME`. Inviting looks the same whether or
not the email already has an account, and creates none. Whoever opens the link
either chooses a password for a new account or signs in to the account that
already has the invited email and accepts; an account is never attached to an
org without its holder acting, and an owner never sees its password.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.core import crypto, settings
from portal.core.actor import Actor
from portal.core.audit import services as audit
from portal.core.errors import Conflict, NotFound, ValidationFailed
from portal.core.orgs.models import Organization
from portal.core.types import utcnow
from portal.core.users.models import Invitation, Membership, User
from portal.core.users.services import (
    PasswordHash,
    add_membership,
    create_user,
    normalise_email,
    parse_role,
)

INVITATION_LIFETIME = timedelta(days=7)
#: Longest value looked up as an invitation secret (the prefix and 43 characters).
_MAX_TOKEN_LENGTH = 200

NOT_VALID = ("this invitation link is not valid: it may have expired, been revoked or "
             "been used already; ask an owner of the organisation for a new one")


class InvitationNotValid(NotFound):
    code = "invitation_not_valid"


class WrongAccount(ValidationFailed):
    """The signed-in account is not the one the invitation is for."""

    code = "invitation_wrong_account"


class AccountExists(Conflict):
    """A new account was asked for an email that already has one: sign in instead."""

    code = "invitation_account_exists"


def _digest(token: str) -> bytes:
    return crypto.hmac_digest(settings.hmac_key(), token)


def invite(
    session: Session,
    *,
    org: Organization,
    email: str,
    role: str,
    actor: Actor,
    now: datetime | None = None,
) -> tuple[str, Invitation]:
    """Invite an email to the org; returns the link's secret (shown once) and the row.

    Never looks at whether the email has an account elsewhere, so the answer
    cannot tell. A pending invitation for the same email is replaced (its link
    stops working): that is how a lost link is sent again.
    """
    now = now or utcnow()
    email = normalise_email(email)
    member_role = parse_role(role)
    already = session.scalar(
        select(Membership.id).join(User, User.id == Membership.user_id)
        .where(Membership.org_id == org.id, User.email == email)
    )
    if already is not None:
        raise Conflict(f"{email} is already a member of this organisation")
    for old in _pending(session, org_id=org.id, email=email, now=now):
        old.revoked_at = now
        audit.record(session, org_id=org.id, actor=actor, action="invitation:revoked",
                     target_type="invitation", target_id=email,
                     details={"role": old.role.value, "replaced": True}, now=now)
    plaintext = crypto.new_secret(crypto.INVITATION_PREFIX)
    invitation = Invitation(
        org_id=org.id,
        email=email,
        role=member_role,
        token_hash=_digest(plaintext),
        invited_by=actor.label[:200],
        created_at=now,
        expires_at=now + INVITATION_LIFETIME,
    )
    session.add(invitation)
    session.flush()
    audit.record(session, org_id=org.id, actor=actor, action="invitation:created",
                 target_type="invitation", target_id=email,
                 details={"role": member_role.value,
                          "expires_at": invitation.expires_at.isoformat(timespec="seconds")},
                 now=now)
    return plaintext, invitation


def _pending(session: Session, *, org_id: int, email: str, now: datetime) -> list[Invitation]:
    return list(session.scalars(
        select(Invitation).where(
            Invitation.org_id == org_id, Invitation.email == email,
            Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None),
            Invitation.expires_at > now)
    ))


def list_pending(session: Session, *, org_id: int, now: datetime | None = None
                 ) -> list[Invitation]:
    """The org's invitations whose links still work, newest first."""
    now = now or utcnow()
    stmt = (
        select(Invitation)
        .where(Invitation.org_id == org_id, Invitation.accepted_at.is_(None),
               Invitation.revoked_at.is_(None), Invitation.expires_at > now)
        .order_by(Invitation.created_at.desc(), Invitation.id.desc())
    )
    return list(session.scalars(stmt))


def revoke_invitation(
    session: Session,
    *,
    org_id: int,
    invitation_id: int,
    actor: Actor,
    now: datetime | None = None,
) -> Invitation:
    """Make a pending invitation's link stop working; another org's is NotFound."""
    now = now or utcnow()
    invitation = session.scalar(
        select(Invitation).where(Invitation.id == invitation_id, Invitation.org_id == org_id)
        .with_for_update()
    )
    if invitation is None or not invitation.is_pending(now):
        raise NotFound("no such pending invitation")
    invitation.revoked_at = now
    audit.record(session, org_id=org_id, actor=actor, action="invitation:revoked",
                 target_type="invitation", target_id=invitation.email,
                 details={"role": invitation.role.value}, now=now)
    session.flush()
    return invitation


def find_pending(session: Session, token: str, *, now: datetime | None = None,
                 lock: bool = False) -> Invitation | None:
    """The pending invitation a link's secret opens, or None (looked up by keyed hash)."""
    now = now or utcnow()
    token = (token or "").strip()
    if not token.startswith(crypto.INVITATION_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
        return None
    try:
        digest = _digest(token)
    except UnicodeEncodeError:  # a lone surrogate cannot be a secret we made
        return None
    stmt = select(Invitation).where(Invitation.token_hash == digest)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    invitation = session.scalar(stmt)
    if invitation is None or not crypto.digests_equal(invitation.token_hash, digest):
        return None
    return invitation if invitation.is_pending(now) else None


def get_pending(session: Session, token: str, *, now: datetime | None = None,
                lock: bool = False) -> Invitation:
    invitation = find_pending(session, token, now=now, lock=lock)
    if invitation is None:
        raise InvitationNotValid(NOT_VALID)
    return invitation


def _accepted(session: Session, invitation: Invitation, *, user: User, source_ip: str,
              now: datetime) -> Membership:
    """Mark the invitation used and make the user a member (or keep their membership)."""
    invitation.accepted_at = now
    who = Actor(f"user:{user.email}", source_ip)  # the invitee accepts
    audit.record(session, org_id=invitation.org_id, actor=who, action="invitation:accepted",
                 target_type="invitation", target_id=invitation.email,
                 details={"role": invitation.role.value}, now=now)
    existing = session.scalar(select(Membership).where(
        Membership.org_id == invitation.org_id, Membership.user_id == user.id))
    if existing is not None:  # added meanwhile by another invitation: keep that role
        session.flush()
        return existing
    return add_membership(session, org=invitation.org, user=user,
                          role=invitation.role.value, actor=who, now=now)


def accept_as_user(
    session: Session,
    *,
    token: str,
    user_id: int,
    source_ip: str,
    now: datetime | None = None,
) -> Membership:
    """The signed-in holder of the invited email accepts: they become a member.

    Refused (:class:`WrongAccount`) for an account with another email, so a
    link can only ever add the account of the email the owner typed.
    """
    now = now or utcnow()
    invitation = get_pending(session, token, now=now, lock=True)
    user = session.scalar(select(User).where(User.id == user_id).with_for_update())
    if user is None:
        raise NotFound("no such user")
    if user.email != invitation.email:
        raise WrongAccount(
            f"this invitation is for {invitation.email}, and you are signed in as "
            f"{user.email}; sign out, then open the link again")
    return _accepted(session, invitation, user=user, source_ip=source_ip, now=now)


def accept_with_new_account(
    session: Session,
    *,
    token: str,
    password: PasswordHash,
    name: str = "",
    source_ip: str,
    now: datetime | None = None,
) -> Membership:
    """Create the invitee's account with the password they chose and make it a member.

    ``password`` is hashed before the transaction began. When the email already
    has an account this is :class:`AccountExists` (sign in and accept instead):
    a link never sets the password of an existing account.
    """
    now = now or utcnow()
    invitation = get_pending(session, token, now=now, lock=True)
    exists = AccountExists(
        f"an account with the email {invitation.email} already exists: sign in to it "
        "to accept the invitation")
    if session.scalar(select(User.id).where(User.email == invitation.email)) is not None:
        raise exists
    try:
        # A savepoint: another org's invitation for the same email may create the
        # account at the same moment; the unique email then refuses this one.
        with session.begin_nested():
            # The account is recorded without an org: the org's audit log then
            # cannot tell whether the invited email had an account before.
            user = create_user(session, email=invitation.email, password=password,
                               name=name, org=None,
                               actor=Actor(f"user:{invitation.email}", source_ip), now=now)
    except IntegrityError as e:
        raise exists from e
    return _accepted(session, invitation, user=user, source_ip=source_ip, now=now)
