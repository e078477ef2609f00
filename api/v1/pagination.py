"""Cursor pagination: ``limit`` and an opaque ``next_cursor`` (keyset on the row id)."""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from portal.core.errors import ValidationFailed

T = TypeVar("T")


def encode_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The row id a cursor continues after (``ValidationFailed`` on ``cursor`` otherwise)."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = text.partition(":")
        row_id = int(value)
        if prefix != "id" or row_id < 1 or row_id > 2**62:
            raise ValueError(cursor)
    except (ValueError, UnicodeDecodeError, binascii.Error) as e:
        raise ValidationFailed("not a cursor this API returned", field="cursor") from e
    return row_id


def page(session: Session, stmt: Select[Any], id_column: Any, *, limit: int,
         cursor: str | None) -> tuple[list[Any], str | None]:
    """One page of ``stmt`` newest (highest id) first, and the cursor of the next page."""
    stmt = stmt.order_by(None).order_by(id_column.desc())
    if cursor:
        stmt = stmt.where(id_column < decode_cursor(cursor))
    rows = list(session.scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1].id) if more and rows else None)
