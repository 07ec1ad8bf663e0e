"""Exact latency percentiles and /proc readings (no sampling, no histogram buckets)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

PERCENTILES = (50, 95, 99)


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of an already sorted sequence (the value at rank ceil(p/100 * n)).

    Nearest rank never interpolates, so the reported p99 is a latency some request really had.
    """
    if not sorted_values:
        return None
    if not 0 < pct <= 100:  # noqa: PLR2004 - percent bounds
        raise ValueError("percentile must be in (0, 100]")
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(latencies_s: Iterable[float]) -> dict[str, Any]:
    """Count, mean, p50/p95/p99 and max of latencies given in seconds, reported in milliseconds."""
    values = sorted(latencies_s)
    if not values:
        return {"count": 0}
    out: dict[str, Any] = {"count": len(values), "mean_ms": round(sum(values) / len(values) * 1000, 3)}
    for pct in PERCENTILES:
        out[f"p{pct}_ms"] = round(percentile(values, pct) * 1000, 3)  # type: ignore[operator]
    out["max_ms"] = round(values[-1] * 1000, 3)
    return out


def processes() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command name, the fields of /proc/<pid>/stat after the name) of every process.

    The command name (field 2) may contain spaces and parentheses, so the line is split after its last
    ')': in the returned fields, [1] is the parent pid, [11] and [12] the user and system CPU ticks.
    """
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        head, _, rest = stat.rpartition(")")
        yield int(entry.name), head.partition("(")[2], rest.split()


def children_of(parent_pid: int) -> list[int]:
    """Pids whose parent is ``parent_pid`` (gunicorn's workers), read from /proc."""
    return sorted(pid for pid, _, fields in processes() if int(fields[1]) == parent_pid)


def cpu_seconds(server_pid: int) -> tuple[dict[str, float], dict[int, float]]:
    """CPU seconds (user + system) used so far by the app under test (gunicorn's master and workers) and
    by the local PostgreSQL server (all its processes; SQLite runs inside the app), and by each of
    gunicorn's workers (the master's children), from one reading of /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    workers = set(children_of(server_pid))
    used = {"app": 0.0, "postgres": 0.0}
    per_worker: dict[int, float] = {}
    for pid, name, fields in processes():
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if pid in workers:
            per_worker[pid] = seconds
        if pid == server_pid or pid in workers:
            used["app"] += seconds
        elif name.startswith("postgres"):
            used["postgres"] += seconds
    return used, per_worker


def memory_kib(pid: int) -> dict[str, int] | None:
    """VmRSS (resident now) and VmHWM (peak resident so far) of ``pid`` in KiB, or None if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0])
    return out


def machine() -> dict[str, Any]:
    """Cores and load averages now (recorded with every result: the machine is shared)."""
    load1, load5, load15 = os.getloadavg()
    return {"nproc": os.cpu_count(), "loadavg": [round(load1, 2), round(load5, 2), round(load15, 2)]}
