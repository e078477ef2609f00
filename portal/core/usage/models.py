"""Usage events (token endpoint and introspection traffic) and their hourly summary."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.core.db import Base
from portal.core.types import UTCDateTime, text_enum


class UsageKind(enum.StrEnum):
    TOKEN_ISSUED = "token_issued"
    TOKEN_FAILED = "token_failed"
    TOKEN_INTROSPECTED = "token_introspected"
    TOKEN_REVOKED = "token_revoked"


_kind_type = text_enum(UsageKind, 30)


class UsageEvent(Base):
    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_org_time", "org_id", "occurred_at"),
        Index("ix_usage_events_client_time", "client_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # NULL for a failed request whose client id matched no client.
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id", ondelete="SET NULL"))
    client_ref: Mapped[str] = mapped_column(String(64), default="")  # client id as presented
    kind: Mapped[UsageKind] = mapped_column(_kind_type)
    reason: Mapped[str] = mapped_column(String(300), default="")  # error code: description
    jti: Mapped[str | None] = mapped_column(String(64))
    source_ip: Mapped[str] = mapped_column(String(45), default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class UsageHourly(Base):
    """Counts per org, client, kind and hour; kept after the raw events are pruned."""

    __tablename__ = "usage_hourly"
    __table_args__ = (UniqueConstraint("org_id", "client_id", "kind", "hour"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id", ondelete="SET NULL"))
    kind: Mapped[UsageKind] = mapped_column(_kind_type)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    count: Mapped[int] = mapped_column(Integer)
