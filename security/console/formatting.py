"""Small display helpers for console templates. Pure: no Flask, no SQLAlchemy."""

from __future__ import annotations

from datetime import datetime

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def humanize_age(seconds: int) -> str:
    """``42 s``, ``5 min``, ``3 h 20 min``, ``2 d 4 h``: precise enough to compare cases at a glance."""
    seconds = max(0, int(seconds))
    if seconds < MINUTE:
        return f"{seconds} s"
    if seconds < HOUR:
        return f"{seconds // MINUTE} min"
    if seconds < DAY:
        hours, rest = divmod(seconds, HOUR)
        return f"{hours} h {rest // MINUTE} min" if rest >= MINUTE else f"{hours} h"
    days, rest = divmod(seconds, DAY)
    return f"{days} d {rest // HOUR} h" if rest >= HOUR else f"{days} d"


def utc(at: datetime | None) -> str:
    """``2026-03-02 09:00 UTC`` (operators in several time zones read one clock)."""
    return at.strftime("%Y-%m-%d %H:%M UTC") if at is not None else "—"
