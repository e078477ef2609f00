"""Column types shared by the models."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any

from sqlalchemy import DateTime, Dialect, Enum, func
from sqlalchemy.orm import mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored and returned in UTC on every backend.

    SQLite has no timezone type and hands back naive values; this type refuses
    naive datetimes on the way in and attaches UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


CreatedAt = Annotated[
    datetime, mapped_column(UTCDateTime, default=utcnow, server_default=func.now())
]


def text_enum(cls: type[enum.StrEnum], length: int = 20) -> Enum:
    """A string enum stored as its values in a VARCHAR on every backend.

    No native enum types: adding a member needs no ALTER TYPE on PostgreSQL.
    """
    return Enum(cls, native_enum=False, length=length,
                values_callable=lambda members: [m.value for m in members])
