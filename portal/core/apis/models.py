"""APIs (resource servers), their scopes, and what each client is granted of them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.core.db import Base
from portal.core.orgs.models import Organization
from portal.core.types import CreatedAt, UTCDateTime, utcnow

if TYPE_CHECKING:
    from portal.core.clients.models import Client

#: Prefix of an API's public id (the portal's URLs use it; the token's ``aud`` is the identifier).
API_ID_PREFIX = "api_"


class Api(Base):
    """A resource server: tokens for it carry its ``identifier`` as ``aud``.

    ``org_id`` is the owning org, or None for a deployment API: defined by the
    operator (CLI), visible to every org, told apart by the token's ``oid``.
    """

    __tablename__ = "apis"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    org_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    identifier: Mapped[str] = mapped_column(String(255), unique=True)  # the token's `aud`
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    default_ttl: Mapped[int | None] = mapped_column(Integer)  # seconds
    max_ttl: Mapped[int | None] = mapped_column(Integer)  # seconds
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    scopes: Mapped[list[ApiScope]] = relationship(
        back_populates="api", cascade="all, delete-orphan", order_by="ApiScope.id",
        lazy="selectin",
    )
    org: Mapped[Organization | None] = relationship()

    @property
    def is_deployment(self) -> bool:
        """Shared by every org (the operator's), not owned by one."""
        return self.org_id is None

    @property
    def scope_names(self) -> list[str]:
        return [s.name for s in self.scopes]

    def __repr__(self) -> str:
        return f"<Api {self.identifier}>"


class ApiScope(Base):
    """One scope an API defines (RFC 6749 §3.3 scope-token), with what it allows."""

    __tablename__ = "api_scopes"
    __table_args__ = (UniqueConstraint("api_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    api_id: Mapped[int] = mapped_column(ForeignKey("apis.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(500), default="")

    api: Mapped[Api] = relationship(back_populates="scopes")


class ClientGrant(Base):
    """A client may get tokens for ``api`` carrying any of ``scopes`` (a subset of the API's).

    One grant of each client with grants is its default (``is_default``): the
    audience of a token request that names none.
    """

    __tablename__ = "client_grants"
    __table_args__ = (
        UniqueConstraint("client_id", "api_id"),
        # At most one default per client.
        Index("ix_client_grants_default", "client_id", unique=True,
              sqlite_where=text("is_default"), postgresql_where=text("is_default")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    # No ON DELETE action: an API is deleted only once no client is granted it (the service
    # says so first). Checked at the end of the statement, so deleting an org, which
    # removes its clients' grants and its APIs together, still works.
    api_id: Mapped[int] = mapped_column(ForeignKey("apis.id"), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)  # names, in the API's order
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[CreatedAt]

    api: Mapped[Api] = relationship(lazy="joined")
    client: Mapped[Client] = relationship(back_populates="grants")
