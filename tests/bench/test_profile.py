"""``bench.profile`` (one operation at a time, in-process) still runs against a fresh database."""

from __future__ import annotations

import ast
import gc

from bench.profile import GcPauses, main


def test_profile_measures_every_operation_and_the_floor(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/profile.sqlite3"
    assert main(["--url", url, "--seed-events", "300", "--accounts", "20", "--requests", "4", "--floor"]) == 0
    lines = [ast.literal_eval(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    measured = {(line.get("app", "service"), line["op"]): line for line in lines}
    assert set(measured) == {("floor", "tx"), ("floor", "login_event"),
                             ("service", "tx"), ("service", "login_event"), ("service", "login_check")}
    for line in measured.values():
        assert line["status"] == {200: 4}, line
        assert line["statements"] >= 1
        assert line["cpu_ms"] > 0
        assert set(line["gc"]) == {"gen0", "gen1", "gen2"}
    # The floor inserts one row (SQLite also counts its BEGIN IMMEDIATE); the service does far more.
    assert measured[("floor", "tx")]["statements"] <= 2 < measured[("service", "tx")]["statements"]


def test_gc_pauses_counts_the_passes_while_installed_and_only_then() -> None:
    with GcPauses() as pauses:
        gc.collect(0)
        gc.collect()
    gc.collect()  # after the block: not counted
    summary = pauses.summary()
    assert summary["gen0"][0] >= 1 and summary["gen2"][0] == 1
    assert summary["gen2"][1] > 0  # a full pass takes some time
    assert pauses._callback not in gc.callbacks
