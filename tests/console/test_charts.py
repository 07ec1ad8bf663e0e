from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime

import pytest

from security.console.charts import Chart, bar_chart_svg, nice_ceiling, per_day

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    """Parse our own generated SVG (trusted input: no entity or DTD tricks possible here)."""
    return ET.fromstring(svg)  # noqa: S314


def test_per_day_counts_each_day_and_fills_gaps_with_zero():
    instants = [
        datetime(2026, 3, 1, 23, 59, tzinfo=UTC),
        datetime(2026, 3, 2, 0, 0, tzinfo=UTC),
        datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
        datetime(2026, 2, 20, 12, 0, tzinfo=UTC),  # outside the window
    ]
    points = per_day(instants, last_day=date(2026, 3, 2), days=3)
    assert points == [("2026-02-28", 0.0), ("2026-03-01", 1.0), ("2026-03-02", 2.0)]


def test_per_day_needs_a_positive_window():
    with pytest.raises(ValueError, match="days"):
        per_day([], last_day=date(2026, 3, 2), days=0)


@pytest.mark.parametrize(("value", "expected"), [(0, 1), (1, 1), (3, 5), (7, 10), (12, 20), (230, 500), (1000, 1000)])
def test_nice_ceiling(value, expected):
    assert nice_ceiling(value) == expected


def test_svg_has_one_bar_per_point_scaled_to_the_axis():
    chart = Chart(key="k", title="Locks per day", points=[("a", 5.0), ("b", 10.0), ("c", 0.0)], unit="locks")
    root = parse(bar_chart_svg(chart, element_id="c1"))
    bars = root.findall(f"{SVG}rect")
    assert [b.get("class") for b in bars] == ["bar"] * 3
    heights = [float(b.get("height")) for b in bars]
    assert heights[1] == pytest.approx(2 * heights[0])
    assert heights[2] == 0
    assert [b.find(f"{SVG}title").text for b in bars] == ["a: 5 locks", "b: 10 locks", "c: 0 locks"]
    assert root.get("role") == "img"
    assert root.find(f"{SVG}title").text == "Locks per day"


def test_svg_escapes_labels_and_has_no_script_or_style():
    chart = Chart(key="x", title="<script>alert(1)</script>", points=[("<b>&", 1.0)])
    svg = bar_chart_svg(chart, element_id="x")
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert "&lt;b&gt;&amp;" in svg
    assert "style=" not in svg
    parse(svg)  # still well-formed


def test_svg_without_points_says_so():
    root = parse(bar_chart_svg(Chart(key="e", title="Empty", points=[]), element_id="e"))
    assert root.findall(f"{SVG}rect") == []
    assert any(t.text == "No data" for t in root.findall(f"{SVG}text"))


def test_axis_labels_are_thinned_for_long_series():
    points = [(f"2026-03-{day:02d}", float(day)) for day in range(1, 29)]
    root = parse(bar_chart_svg(Chart(key="m", title="Month", points=points), element_id="m"))
    # 28 bars, at most 8 category labels plus the two y-axis ticks.
    assert len(root.findall(f"{SVG}rect")) == 28
    assert len(root.findall(f"{SVG}text")) <= 8 + 2


def test_category_labels_are_cut_to_the_space_they_have():
    few = parse(bar_chart_svg(Chart(key="r", title="Rules", points=[("tx.destination_deny_listed", 7.0),
                                                                    ("tx.new_payee", 3.0)]), element_id="r"))
    labels = [t.text for t in few.findall(f"{SVG}text") if t.get("class") == "tick"][2:]
    assert labels == ["tx.destination_deny_listed", "tx.new_payee"]
    many = [(f"rule.number_{n:02d}_with_a_long_name", 1.0) for n in range(12)]
    root = parse(bar_chart_svg(Chart(key="m", title="Many", points=many), element_id="m"))
    cut = [t.text for t in root.findall(f"{SVG}text") if t.get("class") == "tick"][2:]
    assert all(label.endswith("…") and len(label) < 20 for label in cut)
