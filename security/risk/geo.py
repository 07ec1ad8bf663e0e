"""Great-circle distance and travel speed between geo-located events (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Final

EARTH_RADIUS_KM: Final = 6371.0088
#: IP geolocation is coarse: distances below this are noise, not travel.
GEO_NOISE_KM: Final = 100.0
#: Shortest time span used for a speed, so two events a few seconds apart do not divide by ~0.
MIN_SPAN_SECONDS: Final = 60.0
SECONDS_PER_HOUR: Final = 3600.0


@dataclass(frozen=True)
class GeoPoint:
    """A geo-located event."""

    lat: float
    lon: float
    at: datetime

    def __post_init__(self) -> None:
        if not (-90 <= self.lat <= 90 and -180 <= self.lon <= 180):  # noqa: PLR2004 - degrees
            raise ValueError(f"invalid coordinates {self.lat}, {self.lon}")


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Return the great-circle distance in km between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def travel_speed_kmh(previous: GeoPoint, current: GeoPoint) -> float:
    """Return the speed in km/h needed to get from ``previous`` to ``current``.

    Events may arrive out of order, so the absolute time difference is used. Distances within the
    geolocation noise give 0; very short spans are floored at ``MIN_SPAN_SECONDS``.
    """
    distance = haversine_km(previous.lat, previous.lon, current.lat, current.lon)
    if distance < GEO_NOISE_KM:
        return 0.0
    span = max(abs((current.at - previous.at).total_seconds()), MIN_SPAN_SECONDS)
    return distance / (span / SECONDS_PER_HOUR)
