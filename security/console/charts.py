"""Server-side SVG charts for the console. Pure: no Flask, no SQLAlchemy, no clock.

A chart is a title and ``(label, value)`` pairs, so any table can feed one (audit entries per day today;
locks, decisions, queue age and rule hits once those slices exist). The SVG needs no script and no
inline style (the console's CSP forbids both): bars carry CSS classes styled by ``console.css``, and each
bar has a ``<title>`` so its exact value is available to pointer and screen-reader users.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from html import escape

WIDTH = 640
HEIGHT = 240
MARGIN_LEFT = 44
MARGIN_RIGHT = 12
MARGIN_TOP = 16
MARGIN_BOTTOM = 48
MAX_X_LABELS = 8
"""At most this many category labels on the x axis; the others stay in each bar's tooltip and the table."""
CHAR_WIDTH = 7.5
"""Approximate width of one axis-label character (12-13 px sans-serif) in SVG units."""
MIN_LABEL_CHARS = 4
BAR_GAP_RATIO = 0.25
"""Share of each slot left empty between bars."""


@dataclass(frozen=True, slots=True)
class Chart:
    """Data for one chart: what it shows and its points in display order."""

    key: str
    title: str
    points: Sequence[tuple[str, float]]
    unit: str = ""
    note: str = ""

    @property
    def total(self) -> float:
        return sum(value for _, value in self.points)


def per_day(instants: Iterable[datetime], *, last_day: date, days: int) -> list[tuple[str, float]]:
    """Count ``instants`` per UTC day for the ``days`` days ending with ``last_day`` (empty days are 0)."""
    if days < 1:
        raise ValueError("days must be at least 1")
    first_day = last_day - timedelta(days=days - 1)
    counts = Counter(at.date() for at in instants if first_day <= at.date() <= last_day)
    return [
        ((first_day + timedelta(days=i)).isoformat(), float(counts[first_day + timedelta(days=i)]))
        for i in range(days)
    ]


def window_start(now: datetime, days: int) -> datetime:
    """Midnight of the first of the ``days`` days ending on ``now``'s day (same timezone as ``now``)."""
    return datetime.combine(now.date() - timedelta(days=days - 1), time.min, tzinfo=now.tzinfo)


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def nice_ceiling(value: float) -> float:
    """Round ``value`` up to 1, 2 or 5 times a power of ten, for a readable axis maximum (>= 1)."""
    if value <= 1:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)  # pragma: no cover - the loop always returns


def bar_chart_svg(chart: Chart, *, element_id: str) -> str:
    """Render ``chart`` as a self-contained, accessible SVG bar chart (escaped; safe to embed as HTML)."""
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    base_y = MARGIN_TOP + plot_h
    top = nice_ceiling(max((v for _, v in chart.points), default=0.0))
    n = max(len(chart.points), 1)
    slot = plot_w / n
    bar_w = slot * (1 - BAR_GAP_RATIO)
    label_every = max(1, -(-n // MAX_X_LABELS))  # ceil(n / MAX_X_LABELS)
    title_id, desc_id = f"{element_id}-title", f"{element_id}-desc"
    unit = f" {chart.unit}" if chart.unit else ""
    parts = [
        f'<svg class="chart" id="{escape(element_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{escape(title_id)} {escape(desc_id)}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(title_id)}">{escape(chart.title)}</title>',
        f'<desc id="{escape(desc_id)}">{len(chart.points)} bars, total {_format(chart.total)}{escape(unit)}, '
        f"maximum {_format(top)} on the axis.</desc>",
        f'<line class="axis" x1="{MARGIN_LEFT}" y1="{base_y}" x2="{WIDTH - MARGIN_RIGHT}" y2="{base_y}"/>',
        f'<line class="axis" x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" y2="{base_y}"/>',
        f'<line class="grid" x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{WIDTH - MARGIN_RIGHT}" y2="{MARGIN_TOP}"/>',
        f'<text class="tick" x="{MARGIN_LEFT - 6}" y="{MARGIN_TOP + 4}" text-anchor="end">{_format(top)}</text>',
        f'<text class="tick" x="{MARGIN_LEFT - 6}" y="{base_y + 4}" text-anchor="end">0</text>',
    ]
    for index, (label, value) in enumerate(chart.points):
        height = plot_h * (max(value, 0.0) / top)
        x = MARGIN_LEFT + index * slot + (slot - bar_w) / 2
        y = base_y - height
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{height:.1f}">'
            f"<title>{escape(label)}: {_format(value)}{escape(unit)}</title></rect>"
        )
        if index % label_every == 0:
            parts.append(
                f'<text class="tick" x="{x + bar_w / 2:.1f}" y="{base_y + 16}" text-anchor="middle">'
                f"{escape(_short(label, max_chars=max(MIN_LABEL_CHARS, int(slot * label_every / CHAR_WIDTH))))}"
                "</text>"
            )
    if not chart.points:
        parts.append(
            f'<text class="empty" x="{WIDTH / 2}" y="{MARGIN_TOP + plot_h / 2}" text-anchor="middle">No data</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _short(label: str, *, max_chars: int) -> str:
    """ISO dates become ``MM-DD`` on the axis (the year is in the table); other labels are cut to fit."""
    if len(label) == len("2026-03-02") and label[4] == "-" and label[7] == "-":
        return label[5:]
    return label if len(label) <= max_chars else label[: max_chars - 1] + "…"


AGE_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("< 1 h", timedelta(hours=1)),
    ("1-6 h", timedelta(hours=6)),
    ("6-24 h", timedelta(hours=24)),
    ("1-3 d", timedelta(days=3)),
    ("3-7 d", timedelta(days=7)),
    ("> 7 d", None),
)
"""Queue-age histogram buckets: upper bounds (exclusive), the last one open-ended."""


def age_histogram(ages: Iterable[timedelta]) -> list[tuple[str, float]]:
    """Count ``ages`` into :data:`AGE_BUCKETS` (every bucket listed, empty ones as 0)."""
    counts = [0] * len(AGE_BUCKETS)
    for age in ages:
        for index, (_, upper) in enumerate(AGE_BUCKETS):
            if upper is None or age < upper:
                counts[index] += 1
                break
    return [(label, float(count)) for (label, _), count in zip(AGE_BUCKETS, counts, strict=True)]


def top_counts(counts: Iterable[tuple[str, int]], *, limit: int) -> list[tuple[str, float]]:
    """The ``limit`` largest counts, largest first (ties by label, so the order is stable)."""
    ranked = sorted(counts, key=lambda item: (-item[1], item[0]))[:limit]
    return [(label, float(count)) for label, count in ranked]
