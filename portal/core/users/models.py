"""Users (people who sign in to the portal), their memberships in orgs, and invitations."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.core.db import Base
from portal.core.orgs.models import Organization
from portal.core.types import CreatedAt, UTCDateTime, text_enum


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"  # manage clients, secrets, tokens, keys
    VIEWER = "viewer"  # read only


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)  # the `uid` claim
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-case
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id
    # Set when an owner reset the password: nothing but choosing a new one works until then.
    must_change_password: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # Embedded in each portal session; bumping it ends every session made before
    # (sign-out, password change or reset): Flask's session is only a signed cookie.
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[CreatedAt]
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    SENSITIVE = frozenset({"password_hash"})

    def __repr__(self) -> str:
        return f"<User {self.email}>"


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("org_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[Role] = mapped_column(
        text_enum(Role, 20)
    )
    created_at: Mapped[CreatedAt]

    user: Mapped[User] = relationship(back_populates="memberships")
    org: Mapped[Organization] = relationship()


class Invitation(Base):
    """An owner's invitation for an email to join the org with a role.

    Redeemed once through a link carrying a random secret, of which only a keyed
    hash is stored: the invitee sets their own password, or signs in to the
    account they already have, so the inviting owner never learns a credential.
    """

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320))  # stored lower-case
    role: Mapped[Role] = mapped_column(text_enum(Role, 20))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)  # HMAC-SHA256
    invited_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    org: Mapped[Organization] = relationship()

    SENSITIVE = frozenset({"token_hash"})

    def is_pending(self, now: datetime) -> bool:
        """Not yet accepted, revoked or expired: its link still works."""
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > now

    def __repr__(self) -> str:
        return f"<Invitation {self.email} to org {self.org_id}>"
