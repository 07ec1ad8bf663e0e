"""The benchmark, end to end but tiny, so the harness never rots.

Runs ``python -m bench.run --smoke``: fresh databases, migrations, seeding, the floor app and the service
under gunicorn (2 workers), the load generator in its own process for every step, stored-event
verification, query capture and the report. On PostgreSQL it uses its own sibling databases
(``<test db>_bench_smoke*``), never the shared test database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

pytest.importorskip("security.risk.views", reason="the risk endpoints are not merged yet")

from bench.run import TARGET_P99_MS, main  # noqa: E402
from bench.stats import percentile, summarize  # noqa: E402
from bench.workload import FULL_MIX, PATHS, Workload, parse_mix  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SMOKE_TIMEOUT_S = 300


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    summary = summarize([0.003, 0.001, 0.002])
    assert summary["p50_ms"] == 2.0
    assert summary["max_ms"] == 3.0


def test_workload_is_deterministic_and_follows_the_mix() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def draw() -> list[tuple[str, str]]:
        work = Workload(seed=3, accounts=50, mix=FULL_MIX, run_tag="t")
        return [(r.op, json.dumps(r.body, sort_keys=True)) for r in (work.next(at) for _ in range(2000))]

    first = draw()
    assert first == draw()
    shares = {op: sum(1 for o, _ in first if o == op) / len(first) for op in PATHS}
    assert shares["tx"] == pytest.approx(0.70, abs=0.04)
    assert shares["login_event"] == pytest.approx(0.25, abs=0.04)
    assert shares["login_check"] == pytest.approx(0.05, abs=0.02)
    assert parse_mix("tx=1,login_check=3") == {"tx": 1, "login_check": 3}
    with pytest.raises(ValueError, match="bad mix item"):
        parse_mix("tx=1,bogus=2")


def test_bodies_validate_against_the_endpoint_models() -> None:
    from datetime import UTC, datetime

    from security.risk.schemas import LoginCheckIn, LoginEventIn, TransactionEventIn

    models = {"tx": TransactionEventIn, "login_event": LoginEventIn, "login_check": LoginCheckIn}
    work = Workload(seed=1, accounts=20, mix=FULL_MIX, run_tag="v")
    for _ in range(300):
        request = work.next(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        models[request.op].model_validate(request.body)


def _backend_args() -> list[str]:
    url = os.environ.get("FOXGUARD_TEST_DATABASE_URL", "")
    if url.startswith("postgresql"):
        parsed = make_url(url)
        sibling = parsed.set(database=f"{parsed.database}_bench").render_as_string(hide_password=False)
        return ["--backend", "postgresql", "--pg-url", sibling]
    return ["--backend", "sqlite"]


def test_smoke_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOXGUARD_")}
    completed = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", *_backend_args(), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S, check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    head, steps = results["headline"], results["steps"]

    # Both apps served traffic, and nothing failed on the way.
    assert min(head["floor_events_per_s"]) > 0
    assert min(head["service_events_per_s"]) > 0
    assert head["login_checks_per_s"] > 0
    assert head["argon2_parallel_per_s"] > 0
    load_steps = {name: s for name, s in steps.items() if isinstance(s, dict) and "by_op" in s}
    assert {"floor_events_max_0", "floor_open_50", "service_events_max_0", "service_events_max_small", "events_open_50",
            "events_open_80", "full_max", "full_open_50", "full_open_80", "logins_max", "long_run"} <= set(load_steps)
    for name, step in load_steps.items():
        assert step["requests"] > 0, name
        assert set(step["status"]) == {"200"}, (name, step["status"])
        assert step["latency"]["p99_ms"] >= step["latency"]["p50_ms"] > 0
        # The generator's connections were spread evenly over the workers before the load began.
        held = step["balance"]["connections_per_worker"]
        assert len(held) == results["plan"]["workers"] and len(set(held)) == 1 and held[0] > 0, (name, held)
    # The full mix sends all three operations (a one-second smoke step may draw no login check: 5%).
    full_ops = {op for name in ("full_max", "full_open_50", "full_open_80", "long_run")
                for op in load_steps[name]["by_op"]}
    assert {"tx", "login_event"} <= full_ops <= {"tx", "login_event", "login_check"}
    assert set(load_steps["logins_max"]["by_op"]) == {"login_check"}
    # The scored events' own latency: the event mix alone, open loop, at half and 80% of its measured max.
    events_max = head["service_events_per_s"][0]
    event_ops = {op for share in (50, 80) for op in load_steps[f"events_open_{share}"]["by_op"]}
    assert event_ops == {"tx", "login_event"}  # (a one-second step on a slow machine may draw no login event)
    for share in (50, 80):
        step = load_steps[f"events_open_{share}"]
        assert step["config"]["mode"] == "open"
        assert step["config"]["rate"] == pytest.approx(events_max * share / 100, abs=0.01)
    assert head["events_latency_at_50"] == load_steps["events_open_50"]["latency"]
    assert head["events_p99_at_50_met"] is (head["events_latency_at_50"]["p99_ms"] <= TARGET_P99_MS)
    # The floor's own latency at half its measured max, the reference for the service's.
    floor = load_steps["floor_open_50"]
    assert floor["config"]["mode"] == "open"
    assert floor["config"]["rate"] == pytest.approx(head["floor_events_per_s"][0] / 2, abs=0.01)
    assert head["floor_latency_at_50"] == floor["latency"]
    assert head["floor_achieved_at_50_per_s"] == floor["ok_per_s"]
    assert load_steps["long_run"]["rss"]["workers"], "worker RSS was sampled"
    assert len(load_steps["long_run"]["rss"]["workers"]) == results["plan"]["workers"]

    # Every event the service acknowledged is stored once, with its assessment.
    verification = steps["verification"]
    assert verification and all(v["ok"] and v["acknowledged"] > 0 for v in verification.values())
    assert head["verification_ok"] is True

    # The floor's rows were removed before the service ran.
    assert all(n > 0 for n in steps["floor_rows_deleted"])

    # The real request path was captured with its statements and plans.
    for op in ("tx", "login_event", "login_check"):
        assert steps["explain"][op]["status"] == 200
        assert steps["explain"][op]["statements"] > 0
        assert all(q["plan"] for q in steps["explain"][op]["queries"])

    report = (out / "report.md").read_text()
    assert "| Service / floor (medians) |" in report
    assert "| Event mix alone (scored events, no login checks) at 50%" in report
    assert "## Latency by operation in the open-loop steps" in report
    assert "| Floor, event mix at 50% of its max" in report
    assert "| events_open_50 |" in report and "| full_open_50 |" in report and "| floor_open_50 |" in report
    assert "gunicorn" in report


def test_sizes_only_smoke_compares_databases_that_start_alike(tmp_path: Path) -> None:
    """``--sizes-only``: a fresh small database and the big one as seeded (restored from its snapshot, or
    seeded when there is none), alternating; each step records the recent history it started from."""
    out = tmp_path / "sizes"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOXGUARD_")}
    completed = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--sizes-only", "--repeats", "2", *_backend_args(),
         "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S, check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    head, steps, plan = results["headline"], results["steps"], results["plan"]

    assert head["verification_ok"] is True
    assert head["stored_small"] == plan["small_events"] and head["stored_big"] == plan["events"]
    assert len(head["events_per_s_small"]) == len(head["events_per_s_big"]) == 2
    assert min(head["events_per_s_small"] + head["events_per_s_big"]) > 0
    # The big database is as seeded: restored from its snapshot (a full smoke run saved one), or seeded now.
    big = steps["seed_big"]
    assert ("restore_s" in big) != ("snapshot_s" in big), big
    # Before its first step it holds only the seeded history: nothing from an earlier run in the last hour
    # beyond the few seeded events that may fall there (600 events over 180 days).
    first_big = steps["history"]["sizes_big_0"]
    assert first_big["stored_events"] == plan["events"]
    assert first_big["per_account_last_hour"] < 1
    # Each later step starts with the traffic of the earlier ones on the same database.
    assert steps["history"]["sizes_big_1"]["stored_events"] > plan["events"]
    assert head["per_account_last_day_big"][1] > head["per_account_last_day_big"][0]
    # The service's CPU per event over the load generator's, per step, and the big database's against the
    # small one's (a quotient of positive medians).
    for label in ("small", "big"):
        costs = head[f"cpu_per_event_vs_loadgen_{label}"]
        assert len(costs) == 2 and all(c > 0 for c in costs), costs
    assert head["cpu_per_event_drift"] > -1


@pytest.mark.parametrize("flag", ["--compare-only", "--sizes-only", "--logins-only"])
def test_render_refuses_a_partial_run_by_name(tmp_path: Path, flag: str) -> None:
    # Such runs write results.json only; --render used to stop on a KeyError for a step they never ran.
    (tmp_path / "results.json").write_text(json.dumps({"meta": {
        "command": f".venv/bin/python -m bench.run --backend postgresql {flag} --duration 30"}}))
    with pytest.raises(SystemExit, match=f"holds a {flag} run: report.md is written for full runs only"):
        main(["--render", str(tmp_path)])
    assert not (tmp_path / "report.md").exists()
