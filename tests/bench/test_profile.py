"""``bench.profile`` (one operation at a time, in-process) still runs against a fresh database."""

from __future__ import annotations

import ast

from bench.profile import main


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
    # The floor inserts one row (SQLite also counts its BEGIN IMMEDIATE); the service does far more.
    assert measured[("floor", "tx")]["statements"] <= 2 < measured[("service", "tx")]["statements"]
