"""Offset pagination for portal lists: fetch one row more than a page to know if there is a next."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from flask import request
from sqlalchemy import Select
from sqlalchemy.orm import Session

T = TypeVar("T")
PER_PAGE = 50
MAX_PAGE = 10_000


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    number: int
    per_page: int
    has_next: bool

    @property
    def has_prev(self) -> bool:
        return self.number > 1


def page_number() -> int:
    """``?page=`` as a number from 1; anything else is page 1."""
    raw = request.args.get("page", "1")
    return min(int(raw), MAX_PAGE) if raw.isdigit() and int(raw) >= 1 else 1


def paginate(session: Session, stmt: Select[Any], *, per_page: int = PER_PAGE) -> Page[Any]:
    number = page_number()
    rows = list(session.scalars(stmt.limit(per_page + 1).offset((number - 1) * per_page)))
    return Page(items=rows[:per_page], number=number, per_page=per_page,
                has_next=len(rows) > per_page)
