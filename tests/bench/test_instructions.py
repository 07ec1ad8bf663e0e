"""bench.instructions: instructions per request from two callgrind runs (N and 2N requests)."""

from __future__ import annotations

import pytest

from bench import instructions

STDERR = "==1== Events    : Ir\n==1== Collected : {total}\n==1==\n==1== I   refs:      {total}\n"


def test_per_request_is_the_difference_of_the_two_runs_over_n(monkeypatch: pytest.MonkeyPatch) -> None:
    totals = {300: 8_500_000_000, 600: 11_000_000_000}  # start-up counted in both, so it cancels out
    seen: list[tuple[str, int, int]] = []

    def fake(url: str, op: str, requests: int, accounts: int) -> int:
        seen.append((op, requests, accounts))
        return totals[requests]

    monkeypatch.setattr(instructions, "count", fake)
    result = instructions.per_request("sqlite:///x", "tx", 300, 10_000)

    assert result["instructions_per_request"] == 8_333_333
    assert sorted(seen) == [("tx", 300, 10_000), ("tx", 600, 10_000)]


def test_a_run_is_read_only_when_every_request_succeeded() -> None:
    ok = "seeded\n{'op': 'tx', 'requests': 3, 'status': {200: 3}, 'cpu_ms': 80.1}\n"
    assert instructions.parse(ok, STDERR.format(total=123456789)) == 123456789

    failed = "{'op': 'tx', 'requests': 3, 'status': {200: 2, 404: 1}, 'cpu_ms': 80.1}\n"
    with pytest.raises(RuntimeError, match="requests failed"):
        instructions.parse(failed, STDERR.format(total=1))
    with pytest.raises(RuntimeError, match="no callgrind total"):
        instructions.parse(ok, "valgrind: command not found")
