"""Clients (machine identities) and their secrets."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.core.apis.grants import GrantedApi
from portal.core.apis.models import Api, ClientGrant
from portal.core.db import Base
from portal.core.orgs.models import Organization
from portal.core.types import CreatedAt, UTCDateTime, text_enum, utcnow
from portal.core.users.models import User

#: The length of a client's public id column.
PUBLIC_ID_LENGTH = 64


def is_usable_public_id(public_id: str) -> bool:
    """Whether ``public_id`` could be a client's: PostgreSQL refuses NUL in text, and an id
    longer than the column is nobody's (looking either up is a miss, never an error)."""
    return bool(public_id) and len(public_id) <= PUBLIC_ID_LENGTH and "\x00" not in public_id


class ClientKind(enum.StrEnum):
    ORG = "org"  # acts for the org; token carries `oid`
    USER = "user"  # acts for one user; token also carries `uid`
    SERVICE = "service"  # internal service; token carries the target service's `aud`


class AuthMethod(enum.StrEnum):
    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 (a method name)
    CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105
    PRIVATE_KEY_JWT = "private_key_jwt"


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    # The public, prefixed id (``lkc_…``): the OAuth ``client_id``. The column keeps
    # that name; the attribute is ``public_id`` because child tables' ``client_id``
    # is this row's integer key.
    public_id: Mapped[str] = mapped_column("client_id", String(PUBLIC_ID_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[ClientKind] = mapped_column(
        text_enum(ClientKind, 20)
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )  # the user a `user` client acts for
    auth_methods: Mapped[list[str]] = mapped_column(JSON, default=list)
    token_ttl: Mapped[int] = mapped_column(Integer, default=3600)
    custom_claims: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # public keys for private_key_jwt
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # "Revoke all": every token issued at or before this is revoked, its record written
    # yet or not (the token endpoint's records follow in batches, see tokens.store).
    tokens_revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    secrets: Mapped[list[ClientSecret]] = relationship(
        back_populates="client", cascade="all, delete-orphan", order_by="ClientSecret.id"
    )
    user: Mapped[User | None] = relationship()
    org: Mapped[Organization] = relationship()
    grants: Mapped[list[ClientGrant]] = relationship(
        back_populates="client", cascade="all, delete-orphan", order_by="ClientGrant.id",
        lazy="selectin",
    )

    @property
    def granted(self) -> dict[str, GrantedApi]:
        """Identifier -> what the client may get for that API (what token rules read)."""
        return {
            g.api.identifier: GrantedApi(identifier=g.api.identifier, scopes=tuple(g.scopes),
                                         default_ttl=g.api.default_ttl, max_ttl=g.api.max_ttl)
            for g in self.grants
        }

    @property
    def default_api(self) -> Api | None:
        """The API a token request without ``audience``/``resource`` gets."""
        return next((g.api for g in self.grants if g.is_default), None)

    @property
    def default_audience(self) -> str | None:
        """The identifier of :attr:`default_api`."""
        api = self.default_api
        return api.identifier if api is not None else None

    def active_secrets(self, now: datetime) -> list[ClientSecret]:
        return [s for s in self.secrets if s.is_active(now)]

    def __repr__(self) -> str:
        return f"<Client {self.public_id}>"


class ClientSecret(Base):
    __tablename__ = "client_secrets"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)  # HMAC-SHA256
    hint: Mapped[str] = mapped_column(String(4))  # last 4 characters
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    client: Mapped[Client] = relationship(back_populates="secrets")

    SENSITIVE = frozenset({"secret_hash"})

    def is_active(self, now: datetime) -> bool:
        return secret_is_active(self.revoked_at, self.expires_at, now)


def secret_is_active(revoked_at: datetime | None, expires_at: datetime | None,
                     now: datetime) -> bool:
    """A secret works until it is revoked or expires (no expiry: until revoked)."""
    if revoked_at is not None:
        return False
    return expires_at is None or expires_at > now
