"""A record of every access token issued."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.core.db import Base
from portal.core.types import UTCDateTime, text_enum


class TokenSource(enum.StrEnum):
    TOKEN_ENDPOINT = "token_endpoint"
    PORTAL = "portal"
    API = "api"


class IssuedToken(Base):
    __tablename__ = "issued_tokens"
    __table_args__ = (
        Index("ix_issued_tokens_client_expires", "client_id", "expires_at"),
        Index("ix_issued_tokens_org_issued", "org_id", "issued_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    jti: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(200))
    audience: Mapped[list[str]] = mapped_column(JSON)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    kid: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    source: Mapped[TokenSource] = mapped_column(
        text_enum(TokenSource, 20)
    )
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(200))

    def is_active(self, now: datetime) -> bool:
        return token_is_active(self.revoked_at, self.expires_at, now)


class UsedAssertion(Base):
    """A ``private_key_jwt`` assertion already used, kept until it expires (replay guard)."""

    __tablename__ = "used_assertions"
    __table_args__ = (UniqueConstraint("client_ref", "jti"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client_ref: Mapped[str] = mapped_column(String(64))
    jti: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


def token_is_active(revoked_at: datetime | None, expires_at: datetime, now: datetime) -> bool:
    """A token's record is live until it is revoked or expires."""
    return revoked_at is None and expires_at > now
