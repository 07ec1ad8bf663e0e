"""Haversine, travel speed and robust statistics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from security.risk.geo import GeoPoint, haversine_km, travel_speed_kmh
from security.risk.stats import mad, median, p95, percentile, robust_z

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
BERLIN = (52.52, 13.405)
PARIS = (48.8566, 2.3522)
LAGOS = (6.5244, 3.3792)


def test_haversine_known_distances() -> None:
    assert haversine_km(*BERLIN, *PARIS) == pytest.approx(878, abs=5)
    assert haversine_km(*BERLIN, *BERLIN) == 0
    assert haversine_km(0, 0, 0, 180) == pytest.approx(20015, abs=5)


def test_travel_speed() -> None:
    berlin = GeoPoint(*BERLIN, T0)
    # Berlin -> Paris in 2 hours: ~440 km/h (a flight), below the 900 km/h rule.
    assert travel_speed_kmh(berlin, GeoPoint(*PARIS, T0 + timedelta(hours=2))) == pytest.approx(439, abs=3)
    # Berlin -> Lagos (~5,300 km) in 1 hour: impossible.
    assert travel_speed_kmh(berlin, GeoPoint(*LAGOS, T0 + timedelta(hours=1))) > 5000


def test_travel_speed_out_of_order_and_short_spans() -> None:
    berlin = GeoPoint(*BERLIN, T0)
    earlier_paris = GeoPoint(*PARIS, T0 - timedelta(hours=2))
    assert travel_speed_kmh(berlin, earlier_paris) == pytest.approx(439, abs=3)
    # Same instant: floored at one minute, not a division by zero.
    assert travel_speed_kmh(berlin, GeoPoint(*PARIS, T0)) == pytest.approx(878 * 60, rel=0.01)
    # Within geolocation noise: no travel at all.
    assert travel_speed_kmh(berlin, GeoPoint(52.40, 13.06, T0 + timedelta(seconds=1))) == 0.0


def test_geo_point_validates() -> None:
    with pytest.raises(ValueError, match="invalid coordinates"):
        GeoPoint(91, 0, T0)


def d(*values: str | int) -> list[Decimal]:
    return [Decimal(str(v)) for v in values]


def test_percentiles_are_decimal_and_interpolated() -> None:
    values = d(*range(1, 21))  # 1..20
    assert p95(values) == Decimal("19.05")
    assert median(d(1, 2, 3, 4)) == Decimal("2.5")
    assert percentile(d("10.10"), Decimal("0.95")) == Decimal("10.10")
    with pytest.raises(ValueError, match="empty"):
        p95([])
    with pytest.raises(ValueError, match="outside"):
        percentile(values, Decimal("1.5"))


def test_robust_z() -> None:
    history = d(10, 12, 11, 13, 9, 10, 12)
    assert median(history) == 11
    assert mad(history) == 1
    assert robust_z(Decimal(11), history) == 0
    assert robust_z(Decimal(31), history) == Decimal("0.6745") * 20
    assert robust_z(Decimal(5), history) < 0


def test_robust_z_without_spread() -> None:
    # MAD is 0 (mostly identical amounts): fall back to the mean absolute deviation.
    history = d(10, 10, 10, 10, 20)
    z = robust_z(Decimal(30), history)
    assert z is not None
    assert z == Decimal(20) / (Decimal("1.253314") * Decimal(2))
    # No spread at all: nothing to measure against.
    assert robust_z(Decimal(30), d(10, 10, 10)) is None
