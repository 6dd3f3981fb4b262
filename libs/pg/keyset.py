"""Keyset pagination: a page ends at a (time, id) key and the next starts strictly after it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

__all__ = ["Cursor", "page_of"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ends, newest-first order on ``(created_at, id)``."""

    created_at: datetime
    id: str

    def token(self) -> str:
        return f"{self.created_at.isoformat()}|{self.id}"

    @classmethod
    def parse(cls, token: str) -> Cursor:
        """The cursor a page link carries; ValueError for anything else."""
        at, sep, ident = token.partition("|")
        if not sep or not ident or len(token) > 200:
            raise ValueError(f"not a page cursor: {token[:60]!r}")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("a page cursor's time carries its time zone")
        return cls(when, ident)


def page_of(
    rows: Sequence[T], limit: int, key: Callable[[T], tuple[datetime, str]]
) -> tuple[list[T], Cursor | None]:
    """A page from ``limit + 1`` fetched rows: the first ``limit``, and the cursor of the next
    page when there was one more row (None: this is the last page)."""
    page = list(rows[:limit])
    if len(rows) <= limit or not page:
        return page, None
    return page, Cursor(*key(page[-1]))
