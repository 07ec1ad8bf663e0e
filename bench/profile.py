"""Where one request's time goes: in-process, one operation at a time, with statement counts.

    .venv/bin/python -m bench.profile --url postgresql+psycopg://postgres@127.0.0.1:5432/fg_bench --seed-events 1000000
    .venv/bin/python -m bench.profile --url postgresql+psycopg://postgres@127.0.0.1:5432/fg_bench   # reuse the data
    .venv/bin/python -m bench.profile --url ... --op tx --requests 300 --cprofile 25

``--seed-events`` also saves the seeded database's snapshot (bench/snapshot.py), which ``bench.run``'s
``--sizes-only``, ``--compare-only``, ``--logins-only`` and ``--reuse-big`` restore before they measure.

For every operation of the mix it sends ``--requests`` requests through Flask's test client (no HTTP, no
gunicorn: the application's own cost), and reports wall and CPU milliseconds per request, the CPU the
local PostgreSQL server used per request (all its processes), the SQL statements per request and the time
spent inside the database driver, and the garbage collector's passes during the measured requests per
generation (how many, and the longest in ms: a pass holds the GIL, so a long one is a pause for every
request of that process). ``--cprofile N`` adds the N most expensive functions (cumulative). A load run
tells the throughput; this tells what to change.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import time
from typing import Any

from sqlalchemy import event

from bench.run import Plan, make_bench_engine, prepare, service_env, settings_env
from bench.stats import processes
from bench.workload import PATHS, Workload


def postgres_cpu_seconds() -> float:
    """CPU seconds used so far by every PostgreSQL process on this machine (0 with none: SQLite).

    Run nothing else against the server meanwhile: background work (checkpoints, autovacuum) counts too.
    """
    tick = os.sysconf("SC_CLK_TCK")
    return sum((int(fields[11]) + int(fields[12])) / tick for _, name, fields in processes()
               if name.startswith("postgres"))


class GcPauses:
    """The garbage collector's passes while installed: per generation, how many and the longest (ms)."""

    def __init__(self) -> None:
        self.passes: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.passes[info["generation"]].append((time.perf_counter() - self._started) * 1000)

    def summary(self) -> dict[str, list[float]]:
        """``{"gen0": [passes, longest ms], ...}``."""
        return {f"gen{generation}": [len(passes), round(max(passes, default=0.0), 2)]
                for generation, passes in self.passes.items()}


def measure(app: Any, key: str, op: str, requests: int, seed: int, accounts: int,
            profile: cProfile.Profile | None) -> dict[str, Any]:
    from bench.dataset import utc_now
    from security.runtime import runtime

    engine = app.extensions["bench_engine"] if "bench_engine" in app.extensions else runtime(app).engine
    stats = {"statements": 0, "db_s": 0.0}
    started_at: list[float] = []

    def before(*_: Any) -> None:
        started_at.append(time.perf_counter())

    def after(*_: Any) -> None:
        stats["statements"] += 1
        stats["db_s"] += time.perf_counter() - started_at.pop()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    client = app.test_client()
    work = Workload(seed=seed, accounts=accounts, mix={op: 1}, run_tag=f"profile-{op}-{time.time_ns()}")
    headers = {"Authorization": f"Bearer {key}"}
    statuses: dict[int, int] = {}
    for _ in range(5):  # warm caches and compiled statements
        request = work.next(utc_now())
        client.post(request.path, json=request.body, headers=headers)
    stats["statements"], stats["db_s"] = 0, 0.0
    server_cpu = postgres_cpu_seconds()
    wall, cpu = time.perf_counter(), time.process_time()
    if profile:
        profile.enable()
    with GcPauses() as pauses:
        for _ in range(requests):
            request = work.next(utc_now())
            status = client.post(request.path, json=request.body, headers=headers).status_code
            statuses[status] = statuses.get(status, 0) + 1
    if profile:
        profile.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server_cpu = postgres_cpu_seconds() - server_cpu
    event.remove(engine, "before_cursor_execute", before)
    event.remove(engine, "after_cursor_execute", after)
    return {"op": op, "requests": requests, "status": statuses,
            "wall_ms": round(wall * 1000 / requests, 2), "cpu_ms": round(cpu * 1000 / requests, 2),
            "postgres_cpu_ms": round(server_cpu * 1000 / requests, 2),
            "statements": round(stats["statements"] / requests, 1),
            "db_ms": round(stats["db_s"] * 1000 / requests, 2), "gc": pauses.summary()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="database URL (PostgreSQL or SQLite)")
    parser.add_argument("--seed-events", type=int, default=None,
                        help="re-create the database with this many stored events first")
    parser.add_argument("--accounts", type=int, default=Plan.accounts)
    parser.add_argument("--op", action="append", choices=sorted(PATHS), help="operation(s); default all")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="show the N top functions")
    parser.add_argument("--sort", default="cumulative", help="cProfile sort key (cumulative, tottime)")
    parser.add_argument("--floor", action="store_true", help="also measure the floor app (bench/floor_app.py)")
    args = parser.parse_args(argv)

    plan = Plan(accounts=args.accounts)
    env = service_env(args.url, plan)
    if args.seed_events is not None:
        from bench.run import Context

        ctx = Context(args=args, plan=plan, out=None, env=env, seed=args.seed)  # type: ignore[arg-type]
        key = prepare(ctx, args.url, args.seed_events, snapshot=True).key
    else:
        from bench import seed

        key, _ = seed.create_client(make_bench_engine(env), name=f"profile-{time.time_ns()}")
    from security import create_app

    with settings_env(dict(env, FOXGUARD_APP__LOG_LEVEL="WARNING")):
        app = create_app()
    profile = cProfile.Profile() if args.cprofile else None
    if args.floor:
        from bench.floor_app import create_floor_app
        from bench.run import delete_floor_rows

        with settings_env(env):
            floor = create_floor_app()
        for op in ("tx", "login_event"):
            print({"app": "floor", **measure(floor, key, op, args.requests, args.seed, args.accounts, None)})
        delete_floor_rows(make_bench_engine(env))
    for op in args.op or ("tx", "login_event", "login_check"):
        print(measure(app, key, op, args.requests, args.seed, args.accounts, profile), flush=True)
    if profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(args.sort).print_stats(args.cprofile)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
