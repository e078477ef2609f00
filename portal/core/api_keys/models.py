"""Org API keys for the management API and introspection."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.core.db import Base
from portal.core.types import CreatedAt, UTCDateTime, text_enum


class ApiKeyRole(enum.StrEnum):
    """What a key may do; cumulative, weakest first (``admin`` can do all a ``viewer`` can,
    a ``viewer`` all an ``introspect`` key can)."""

    INTROSPECT = "introspect"  # token introspection and revocation only
    VIEWER = "viewer"  # every GET of the management API
    ADMIN = "admin"  # every change of the management API (not members, not API keys)

    @property
    def rank(self) -> int:
        return list(ApiKeyRole).index(self)

    def allows(self, needed: ApiKeyRole) -> bool:
        """Whether this role includes ``needed``."""
        return self.rank >= needed.rank


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)  # HMAC-SHA256
    hint: Mapped[str] = mapped_column(String(4))
    role: Mapped[ApiKeyRole] = mapped_column(
        text_enum(ApiKeyRole, 20), default=ApiKeyRole.INTROSPECT,
        server_default=ApiKeyRole.INTROSPECT.value)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[CreatedAt]
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    SENSITIVE = frozenset({"key_hash"})

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def actor_label(self) -> str:
        """How audit entries name the key: ``api_key:<hint> <name>``."""
        return f"api_key:{self.hint} {self.name}"[:200]
