"""Audit entries: every change made by an admin, an API key or the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.core.db import Base
from portal.core.types import UTCDateTime


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    __table_args__ = (Index("ix_audit_entries_org_time", "org_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(200))  # "user:<email>", "api_key:<hint>", "cli"
    action: Mapped[str] = mapped_column(String(64))  # e.g. "client:secret:added"
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_ip: Mapped[str] = mapped_column(String(45), default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
