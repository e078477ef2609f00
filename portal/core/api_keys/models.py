"""Org API keys for the management API and introspection."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.core.db import Base
from portal.core.types import CreatedAt, UTCDateTime


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)  # HMAC-SHA256
    hint: Mapped[str] = mapped_column(String(4))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[CreatedAt]
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    SENSITIVE = frozenset({"key_hash"})

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
