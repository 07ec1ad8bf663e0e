"""Runs that reuse the big benchmark database start from its seeded state (bench/snapshot.py).

A reused database used to carry every earlier run's traffic into the comparison (round 11: the same code
measured 45% slower on such a database than on a freshly seeded one). These tests seed a tiny database,
add "traffic" inside the features' recent windows, and check that ``attach`` gives back exactly the seeded
history, that a snapshot of another size is not used, and that seeding without a snapshot drops the old
one. On PostgreSQL they use their own sibling databases (``<test db>_bench_snapshot*``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.engine import make_url

from bench import snapshot
from bench.dataset import utc_now
from bench.run import SMOKE, Context, Plan, Prepared, attach, prepare, service_env
from bench.seed import generate_events, history_profile
from security.risk.models import RiskEvent

PLAN = replace(SMOKE, accounts=20, events=300)
TRAFFIC = 40


@pytest.fixture
def url(tmp_path: Path) -> str:
    test_url = os.environ.get("FOXGUARD_TEST_DATABASE_URL", "")
    if test_url.startswith("postgresql"):
        parsed = make_url(test_url)
        return parsed.set(database=f"{parsed.database}_bench_snapshot").render_as_string(hide_password=False)
    return f"sqlite:///{tmp_path}/big.sqlite3"


def context(tmp_path: Path, plan: Plan = PLAN) -> Context:
    return Context(args=argparse.Namespace(), plan=plan, out=tmp_path, env=service_env("", plan), seed=7)


def add_recent_traffic(engine: Engine, client_id: object) -> None:
    """What a load step leaves behind: events of the last minute (newer than any seeded event, which the
    seeder places at least a minute before its anchor)."""
    now = utc_now()
    rows = list(generate_events(seed=99, accounts=PLAN.accounts, events=TRAFFIC, anchor=now,
                                client_id=client_id))  # type: ignore[arg-type]
    for n, row in enumerate(rows):
        row.update(event_id=f"traffic-{n}", occurred_at=now - timedelta(seconds=30),
                   received_at=now - timedelta(seconds=30))
    with engine.begin() as conn:
        conn.execute(insert(RiskEvent.__table__), rows)


def stored(db: Prepared) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(RiskEvent)).scalar_one())


def test_attach_restores_the_seeded_history_without_the_traffic_since(tmp_path: Path, url: str) -> None:
    seeded = prepare(context(tmp_path), url, PLAN.events, snapshot=True)
    assert snapshot.exists(url)
    assert seeded.timings["stored_events"] == PLAN.events
    at = utc_now()  # every profile below is taken at this moment, so only the stored rows can differ
    before = history_profile(seeded.engine, accounts=PLAN.accounts, now=at)
    add_recent_traffic(seeded.engine, seeded.client_id)
    assert stored(seeded) == PLAN.events + TRAFFIC
    seeded.engine.dispose()

    again = attach(context(tmp_path), url)
    try:
        assert again.timings["reused"] is True and again.timings["restore_s"] is not None
        assert again.timings["history"]["stored_events"] == PLAN.events
        assert history_profile(again.engine, accounts=PLAN.accounts, now=at) == before
        # A new client key for this run.
        assert again.client_id != seeded.client_id
    finally:
        again.engine.dispose()
        snapshot.discard(url)


def test_history_profile_counts_the_recent_windows(tmp_path: Path, url: str) -> None:
    db = prepare(context(tmp_path), url, PLAN.events)
    try:
        at = utc_now()
        seeded = history_profile(db.engine, accounts=PLAN.accounts, now=at)
        add_recent_traffic(db.engine, db.client_id)
        profile = history_profile(db.engine, accounts=PLAN.accounts, now=at)
        assert profile["stored_events"] == PLAN.events + TRAFFIC
        for window in ("per_account_last_hour", "per_account_last_day"):
            assert profile[window] - seeded[window] == pytest.approx(TRAFFIC / PLAN.accounts)
        assert profile["newest_event_age_h"] == pytest.approx(30 / 3600, abs=0.005)
    finally:
        db.engine.dispose()


def test_a_database_without_a_snapshot_or_with_another_size_is_seeded_afresh(tmp_path: Path, url: str) -> None:
    db = prepare(context(tmp_path), url, PLAN.events, snapshot=True)
    add_recent_traffic(db.engine, db.client_id)
    db.engine.dispose()
    # Seeding without a snapshot drops the old one: it would describe another database.
    prepare(context(tmp_path), url, PLAN.events).engine.dispose()
    assert not snapshot.exists(url)

    first = attach(context(tmp_path), url)
    first.engine.dispose()
    assert "reused" not in first.timings and first.timings["snapshot_s"] is not None
    assert snapshot.exists(url)

    bigger = replace(PLAN, events=PLAN.events + 100)
    second = attach(context(tmp_path, bigger), url)
    try:
        assert "reused" not in second.timings
        assert stored(second) == bigger.events
    finally:
        second.engine.dispose()
        snapshot.discard(url)
