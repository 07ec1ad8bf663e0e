"""Robust statistics over an account's own transaction amounts (pure, Decimal throughout)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Final

#: Scales the MAD to the standard deviation of a normal distribution (Iglewicz and Hoaglin).
MAD_SCALE: Final = Decimal("0.6745")
#: Scales the mean absolute deviation when the MAD is zero (IBM SPSS convention: sqrt(pi / 2)).
MEAN_AD_SCALE: Final = Decimal("1.253314")
P95: Final = Decimal("0.95")


def percentile(values: Sequence[Decimal], q: Decimal) -> Decimal:
    """Return the ``q`` quantile (0..1) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not Decimal(0) <= q <= Decimal(1):
        raise ValueError(f"quantile {q} outside 0..1")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    fraction = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction


def p95(values: Sequence[Decimal]) -> Decimal:
    """Return the 95th percentile."""
    return percentile(values, P95)


def median(values: Sequence[Decimal]) -> Decimal:
    """Return the median."""
    return percentile(values, Decimal("0.5"))


def mad(values: Sequence[Decimal]) -> Decimal:
    """Return the median absolute deviation from the median."""
    centre = median(values)
    return median([abs(v - centre) for v in values])


def robust_z(value: Decimal, history: Sequence[Decimal]) -> Decimal | None:
    """Return the modified z-score of ``value`` against ``history``.

    ``0.6745 * (x - median) / MAD``; when the MAD is 0 (e.g. mostly identical amounts) the mean
    absolute deviation is used instead. ``None`` when history has no spread at all and ``value``
    equals it (nothing to compare); a different value then has an unbounded score, reported as
    ``None`` too so callers rely on the percentile rule instead of an infinite number.
    """
    centre = median(history)
    spread = mad(history)
    if spread > 0:
        return MAD_SCALE * (value - centre) / spread
    mean_ad = sum((abs(v - centre) for v in history), Decimal(0)) / len(history)
    if mean_ad > 0:
        return (value - centre) / (MEAN_AD_SCALE * mean_ad)
    return None
