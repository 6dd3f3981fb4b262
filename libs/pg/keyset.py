"""Keyset pagination: a page ends at a (time, id) key and the next starts strictly after it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Cursor"]


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
