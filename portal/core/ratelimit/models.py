"""Counters of the rate limits shared by every worker and machine of a deployment."""

from __future__ import annotations

from sqlalchemy import Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.core.db import Base


class RateLimitCounter(Base):
    """Hits of one limit's key in its current fixed window (``expires_at``: epoch seconds)."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
