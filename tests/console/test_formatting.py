from __future__ import annotations

from datetime import UTC, datetime

import pytest

from security.console.formatting import humanize_age, utc


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "0 s"), (42, "42 s"), (300, "5 min"), (3600, "1 h"), (12_000, "3 h 20 min"), (86_400, "1 d"),
    (187_200, "2 d 4 h"),
])
def test_humanize_age(seconds, text):
    assert humanize_age(seconds) == text


def test_utc():
    assert utc(datetime(2026, 3, 2, 9, 5, tzinfo=UTC)) == "2026-03-02 09:05 UTC"
    assert utc(None) == "—"
