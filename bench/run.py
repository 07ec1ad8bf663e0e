"""One command for the whole benchmark: databases, seeding, floor and service under gunicorn, load, report.

    .venv/bin/python -m bench.run --backend postgresql            # full run (see bench/README.md)
    .venv/bin/python -m bench.run --backend sqlite
    .venv/bin/python -m bench.run --smoke --backend sqlite        # a few seconds, tiny data

Steps (each load step is a separate ``bench.loadgen`` process; results land in ``--out``):

1. *small*: a database with the same accounts but only ``--small-events`` stored events; the service's
   maximum throughput on the scored-event mix (the "10k stored events" reference).
2. *big*: a fresh database with ``--events`` stored events (1,000,000 by default), saved as a snapshot
   (``bench/snapshot.py``) that the runs reusing it (``--sizes-only`` and the other ``--*-only`` modes,
   ``--reuse-big``) restore, so they all start from the seeded history.
3. floor vs service, ``--repeats`` times alternating (the machine is shared; alternating spreads the
   noise over both): maximum throughput on the scored-event mix (70% transactions, 25% login events);
   then the floor open-loop at 50% of its maximum (its own latency: the reference for the service's);
   then the service alone on that mix, open-loop at 50% and 80% of its maximum (the scored events' own
   latency, with no password hashing in the way).
4. the full mix (70/25/5 with password login checks): maximum rate, then open-loop at 50% and 80% of it.
5. password login checks alone (maximum rate) vs the raw argon2id verify rate.
6. a long open-loop run at 50% of the full-mix maximum with worker RSS sampled every second.
7. PostgreSQL only: EXPLAIN (ANALYZE, BUFFERS) of every feature query the service runs.

After each service step the run checks that every event the service acknowledged (2xx) is stored
exactly once with an assessment (the generator records the ids; the database is asked).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any, Final

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from bench.balance import wait_for_every_worker
from bench.stats import children_of, cpu_seconds
from bench.workload import PATHS

ROOT: Final = Path(__file__).absolute().parent.parent
VENV_BIN: Final = Path(sys.executable).parent
GUNICORN_CONF: Final = ROOT / "bench" / "gunicorn_conf.py"
SERVICE_APP: Final = "app:app"
FLOOR_APP: Final = "bench.floor_app:create_floor_app()"
START_TIMEOUT_S: Final = 60.0
PG_DEFAULT: Final = "postgresql+psycopg://postgres@127.0.0.1:5432/fg_bench"
SQLITE_DIR: Final = Path("/tmp/fg_bench")  # noqa: S108 - benchmark scratch files, never in the repository
#: Issue targets.
TARGET_RATIO: Final = 0.60
TARGET_P99_MS: Final = 25.0
TARGET_LOGIN_SHARE: Final = 0.90
TARGET_SIZE_DRIFT: Final = 0.10


@dataclass
class Plan:
    """How big and how long; ``--smoke`` shrinks everything."""

    accounts: int = 10_000
    events: int = 1_000_000
    small_events: int = 10_000
    duration: float = 30.0
    warmup: float = 5.0
    long_run: float = 600.0
    repeats: int = 2
    concurrency: int = 8
    workers: int = 2
    threads: int = 4
    argon2_seconds: float = 10.0
    production_argon2: bool = True


SMOKE = Plan(accounts=60, events=600, small_events=100, duration=1.0, warmup=0.5, long_run=1.5, repeats=1,
             concurrency=4, workers=2, threads=2, argon2_seconds=0.3, production_argon2=False)


@dataclass
class Context:
    args: argparse.Namespace
    plan: Plan
    out: Path
    env: dict[str, str]
    seed: int
    steps: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    log_dir: Path = SQLITE_DIR
    # The database under load (PostgreSQL: its sessions' wait events are sampled during every step).
    engine: Engine | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(database_url: str, plan: Plan) -> dict[str, str]:
    """Environment for every child: production settings with fresh random secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOXGUARD_")}
    env.update({
        "FOXGUARD_DATABASE_URL": database_url,
        "FOXGUARD_DATABASE__AUTO_MIGRATE": "false",
        "PYTHONPATH": str(ROOT),
    })
    if plan.production_argon2:
        env.update({
            "FOXGUARD_ENV": "production",
            "FOXGUARD_SECRET_KEY": secrets.token_urlsafe(32),
            "FOXGUARD_IDENTITY_HMAC_KEY": secrets.token_urlsafe(32),
            "FOXGUARD_ENCRYPTION_KEYS": json.dumps([base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()]),
            # Production refuses to start without a webhook receiver. Webhooks are written to the outbox in
            # the request's transaction (measured); no dispatcher runs, so nothing is sent (not measured).
            "FOXGUARD_WEBHOOKS__ENDPOINTS": '[{name="bench", url="http://127.0.0.1:9/webhooks", secrets=["whsec_'
            + base64.b64encode(secrets.token_bytes(32)).decode() + '"]}]',
        })
    else:  # smoke: development config with cheap argon2 (the code path is the same, only the cost differs)
        env.update({"FOXGUARD_ENV": "development", "FOXGUARD_PASSWORDS__TIME_COST": "1",
                    "FOXGUARD_PASSWORDS__MEMORY_COST_KIB": "64", "FOXGUARD_APP__LOG_LEVEL": "WARNING"})
    return env


@contextmanager
def settings_env(env: dict[str, str]) -> Iterator[None]:
    """Make this process read the same FOXGUARD_* settings as the children."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def make_bench_engine(env: dict[str, str]) -> Engine:
    from security.config import load_settings
    from security.db import make_engine

    with settings_env(env):
        return make_engine(load_settings())


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of ``url`` if it does not exist (SQLite needs nothing)."""
    from bench.snapshot import admin_session, database_exists, quote

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        SQLITE_DIR.mkdir(parents=True, exist_ok=True)
        return
    with admin_session(parsed) as conn:
        if not database_exists(conn, str(parsed.database)):
            conn.execute(text(f"CREATE DATABASE {quote(str(parsed.database))}"))


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def gunicorn(ctx: Context, app: str, name: str) -> Iterator[Server]:
    """Start ``app`` under the shared gunicorn settings; stop it (SIGTERM to the master) afterwards."""
    port = free_port()
    env = dict(ctx.env, BENCH_BIND=f"127.0.0.1:{port}", BENCH_WORKERS=str(ctx.plan.workers),
               BENCH_THREADS=str(ctx.plan.threads))
    command = [str(VENV_BIN / "gunicorn"), "-c", str(GUNICORN_CONF), app]
    ctx.commands.append(f"BENCH_WORKERS={ctx.plan.workers} BENCH_THREADS={ctx.plan.threads} "
                        + " ".join(shlex.quote(c) for c in command))
    log = ctx.log_dir / f"{name}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server, workers=ctx.plan.workers)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(server: Server, *, workers: int) -> None:
    """Until the server answers, then until every one of its ``workers`` has answered on its own."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited; log:\n{server.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(server.base_url + "/healthz", timeout=2) as response:  # noqa: S310
                if response.status == 200:  # noqa: PLR2004 - HTTP OK
                    break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        raise RuntimeError(f"gunicorn did not answer within {START_TIMEOUT_S} s; log:\n"
                           f"{server.log.read_text()[-3000:]}")
    port = int(server.base_url.rpartition(":")[2])
    try:
        wait_for_every_worker(port, lambda: children_of(server.pid), workers,
                              timeout_s=max(deadline - time.monotonic(), 1.0))
    except TimeoutError as exc:
        raise RuntimeError(f"{exc}; log:\n{server.log.read_text()[-3000:]}") from exc


def loadgen(ctx: Context, server: Server, name: str, *, mode: str, mix: str, key: str = "",
            rate: float = 0.0, duration: float | None = None, rss: bool = True) -> dict[str, Any]:
    """Run one load step in a separate process and return its summary."""
    plan = ctx.plan
    command = [
        sys.executable, "-m", "bench.loadgen", "--base-url", server.base_url, "--mode", mode, "--mix", mix,
        "--accounts", str(plan.accounts), "--seed", str(ctx.seed), "--concurrency", str(plan.concurrency),
        "--duration", str(duration if duration is not None else plan.duration), "--warmup", str(plan.warmup),
        "--run-tag", f"{name}-{int(time.time())}", "--out", str(ctx.out / name),
    ]
    if mode == "open":
        command += ["--rate", f"{rate:.2f}"]
    if rss:
        command += ["--gunicorn-pid", str(server.pid)]
    if not ctx.args.unbalanced:
        command += ["--balance-pid", str(server.pid)]
    shown = [*command]
    if key:
        command += ["--key", key]
        shown += ["--key", "$BENCH_KEY"]
    ctx.commands.append(" ".join(shlex.quote(c) for c in shown))
    cpu_before, workers_before = cpu_seconds(server.pid)
    with pg_waits(ctx.engine) as waits:
        subprocess.run(command, cwd=ROOT, env=ctx.env, check=True, stdout=subprocess.DEVNULL)
    cpu_after, workers_after = cpu_seconds(server.pid)
    summary: dict[str, Any] = json.loads((ctx.out / f"{name}.json").read_text())
    if waits:
        summary["pg_sessions"] = waits
    # Every request of the step (warm-up included: the CPU counters cover it too), from the request log.
    with (ctx.out / f"{name}.requests.csv").open() as log:
        sent = sum(1 for _ in log) - 1
    if sent > 0:
        summary["cpu_ms_per_request"] = {
            role: round(1000 * (cpu_after[role] - cpu_before[role]) / sent, 3) for role in cpu_after}
        summary["cpu_ms_per_request"]["loadgen"] = round(1000 * summary["loadgen_cpu_s"] / sent, 3)
    # How the work split between the workers: keep-alive connections stay with the worker that accepted
    # them, and one worker's Python runs one thread at a time (the GIL), so an uneven split caps the rate.
    used = {pid: workers_after[pid] - workers_before.get(pid, 0.0) for pid in workers_after}
    total = sum(used.values())
    summary["worker_cpu_share"] = sorted((round(u / total, 2) for u in used.values()), reverse=True) if total else []
    (ctx.out / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str))
    ctx.steps[name] = summary
    print(f"  {name}: {summary['ok_per_s']} ok/s, p50/p99 {summary['latency'].get('p50_ms')}/"
          f"{summary['latency'].get('p99_ms')} ms, status {summary['status']}, workers' CPU split "
          f"{summary['worker_cpu_share']}, connections {(summary.get('balance') or {}).get('connections_per_worker')}, "
          f"load {summary['machine_after']}",
          flush=True)
    return summary


#: How often PostgreSQL's session states are sampled during a load step.
PG_SAMPLE_INTERVAL_S: Final = 0.5


@contextmanager
def pg_waits(engine: Engine | None) -> Iterator[dict[str, Any]]:
    """Sample what the database's sessions are doing (PostgreSQL only) while the block runs.

    Yields a dict filled on exit: for each (state, wait event) the mean number of sessions in it. Many
    sessions in ``Lock`` waits point at hot rows; many ``idle in transaction`` at time spent in the app
    between statements (Python CPU, GIL) while the transaction stays open.
    """
    result: dict[str, Any] = {}
    if engine is None or engine.dialect.name != "postgresql":
        yield result
        return
    import threading

    stop = threading.Event()
    tallies: dict[str, int] = {}
    blocked: dict[str, int] = {}
    samples = 0

    def sample() -> None:
        nonlocal samples
        with engine.connect() as conn:
            while not stop.is_set():
                rows = conn.execute(text(
                    "SELECT state, coalesce(wait_event_type || ':' || wait_event, 'running') AS wait, count(*) "
                    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND state <> 'idle' GROUP BY 1, 2")).all()
                # Which statements wait for a lock (the hot rows are what they try to write).
                waiting = conn.execute(text(
                    "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 160), count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock' GROUP BY 1")).all()
                conn.rollback()
                samples += 1
                for state, wait, count in rows:
                    key = f"{state} / {wait}"
                    tallies[key] = tallies.get(key, 0) + int(count)
                for query, count in waiting:
                    blocked[query] = blocked.get(query, 0) + int(count)
                stop.wait(PG_SAMPLE_INTERVAL_S)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        if samples:
            result.update({
                "samples": samples,
                "mean_sessions": {k: round(v / samples, 2) for k, v in sorted(tallies.items(), key=lambda kv: -kv[1])},
                "lock_waiters_by_statement": {
                    k: round(v / samples, 2) for k, v in sorted(blocked.items(), key=lambda kv: -kv[1])[:8]},
            })


def acknowledged_ids(ctx: Context, name: str) -> dict[str, list[str]]:
    """Event ids the service answered 2xx for during step ``name`` (warm-up included)."""
    import csv

    ids: dict[str, list[str]] = {}
    with (ctx.out / f"{name}.requests.csv").open() as handle:
        for row in csv.DictReader(handle):
            if 200 <= int(row["status"]) < 300 and row["op"] != "login_check":  # noqa: PLR2004 - 2xx
                ids.setdefault(row["op"], []).append(row["id"])
    return ids


def verify_stored(ctx: Context, engine: Engine, name: str, client_id: Any) -> dict[str, Any]:
    """Every acknowledged event is stored exactly once, with exactly one assessment."""
    from sqlalchemy import func, select

    from security.risk.models import Assessment, RiskEvent

    ids = [i for values in acknowledged_ids(ctx, name).values() for i in values]
    stored = assessed = 0
    with engine.connect() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            mine = (RiskEvent.client_id == client_id) & RiskEvent.event_id.in_(chunk)
            stored += conn.execute(select(func.count()).select_from(RiskEvent).where(mine)).scalar_one()
            assessed += conn.execute(
                select(func.count()).select_from(Assessment).join(RiskEvent, Assessment.event_pk == RiskEvent.id)
                .where(mine)).scalar_one()
    result = {"acknowledged": len(ids), "stored": stored, "assessed": assessed,
              "ok": len(ids) == stored == assessed}
    ctx.steps.setdefault("verification", {})[name] = result
    if not result["ok"]:
        print(f"  VERIFY FAILED for {name}: {result}", flush=True)
    return result


@dataclass
class Prepared:
    engine: Engine
    key: str
    client_id: Any
    timings: dict[str, Any]


def prepare(ctx: Context, url: str, events: int, *, snapshot: bool = False) -> Prepared:
    """A fresh, migrated database with the accounts, ``events`` stored events and a client key.

    With ``snapshot`` the seeded database is also copied (:mod:`bench.snapshot`) for the runs that reuse
    it; without, an older copy is discarded (it would describe another seed).
    """
    from bench import seed
    from bench import snapshot as snapshots
    from bench.dataset import BENCH_PASSWORD, utc_now
    from security.config import load_settings

    env = ctx.env = dict(ctx.env, FOXGUARD_DATABASE_URL=url)  # servers started from now on use this database
    ensure_database(url)
    engine = make_bench_engine(env)
    started = time.monotonic()
    seed.reset(engine)
    engine.dispose()  # its sessions would keep PostgreSQL from copying the database (snapshot below)
    engine = make_bench_engine(env)  # SQLite: the file was replaced
    key, client_id = seed.create_client(engine)
    with settings_env(env):
        password_hash = seed.shared_password_hash(load_settings(), BENCH_PASSWORD)
    anchor = utc_now()
    seed.seed_accounts(engine, seed=ctx.seed, accounts=ctx.plan.accounts, anchor=anchor, password_hash=password_hash)
    timings = seed.seed_events(engine, seed=ctx.seed, accounts=ctx.plan.accounts, events=events, anchor=anchor,
                               client_id=client_id)
    timings["total_s"] = round(time.monotonic() - started, 1)
    engine.dispose()  # PostgreSQL copies a database only while no session is open on it
    if snapshot:
        timings["snapshot_s"] = snapshots.save(url)
    else:
        snapshots.discard(url)
    timings["history"] = seed.history_profile(engine, accounts=ctx.plan.accounts, now=utc_now())
    timings["stored_events"] = timings["history"]["stored_events"]
    print(f"  seeded {url.split('@')[-1]}: {timings}", flush=True)
    ctx.engine = engine
    return Prepared(engine, key, client_id, timings)


def delete_floor_rows(engine: Engine) -> int:
    """The floor's rows must not become history the service scores against."""
    from bench.floor_app import FLOOR_CLIENT_ID
    from bench.seed import analyze
    from security.risk.models import RiskEvent

    with engine.begin() as conn:
        deleted = conn.execute(RiskEvent.__table__.delete().where(RiskEvent.client_id == FLOOR_CLIENT_ID)).rowcount
    analyze(engine)
    return int(deleted)


def explain_requests(ctx: Context, db: Prepared) -> dict[str, Any]:
    """Send one request of each kind in-process and record every SQL statement it ran, with its plan.

    On PostgreSQL each SELECT is re-run under EXPLAIN (ANALYZE, BUFFERS) with the same parameters; on
    SQLite under EXPLAIN QUERY PLAN. The statement count per request is the number of round trips.
    """
    from sqlalchemy import event

    from bench.dataset import utc_now
    from bench.workload import Workload
    from security import create_app
    from security.runtime import runtime

    with settings_env(dict(ctx.env, FOXGUARD_DATABASE_URL=db.engine.url.render_as_string(hide_password=False))):
        app = create_app()
    engine = runtime(app).engine
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    client = app.test_client()
    out: dict[str, Any] = {}
    try:
        for op in ("tx", "login_event", "login_check"):
            work = Workload(seed=ctx.seed, accounts=ctx.plan.accounts, mix={op: 1}, run_tag=f"explain-{op}")
            request = work.next(utc_now())
            captured.clear()
            response = client.post(request.path, json=request.body, headers={"Authorization": f"Bearer {db.key}"})
            statements = list(captured)
            selects = [(s, p) for s, p in statements if s.lstrip().upper().startswith("SELECT")]
            out[op] = {"status": response.status_code, "statements": len(statements),
                       "queries": [_plan(engine, s, p) for s, p in selects]}
    finally:
        event.remove(engine, "before_cursor_execute", capture)
        engine.dispose()
    return out


def _plan(engine: Engine, statement: str, parameters: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        cursor = raw.cursor()  # type: ignore[union-attr]
        if engine.dialect.name == "postgresql":
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        lines = [" | ".join(str(c) for c in row) for row in cursor.fetchall()]
        conn.rollback()
    return {"sql": " ".join(statement.split()), "plan": lines}


def database_urls(backend: str, smoke: bool, pg_url: str) -> tuple[str, str]:
    """(big, small) database URLs for ``backend``."""
    tag = "smoke" if smoke else "run"
    if backend == "postgresql":
        parsed = make_url(pg_url)
        big = parsed.set(database=f"{parsed.database}_smoke" if smoke else parsed.database)
        small = parsed.set(database=f"{big.database}_small")
        return big.render_as_string(hide_password=False), small.render_as_string(hide_password=False)
    return f"sqlite:///{SQLITE_DIR}/bench-{tag}.sqlite3", f"sqlite:///{SQLITE_DIR}/bench-{tag}-small.sqlite3"


def run_backend(ctx: Context) -> None:
    from bench.argon2_rate import measure

    plan = ctx.plan
    big_url, small_url = database_urls(ctx.args.backend, ctx.args.smoke, ctx.args.pg_url)
    steps = ctx.steps

    print(f"[1/7] {plan.small_events} stored events: service max on the event mix", flush=True)
    small = prepare(ctx, small_url, plan.small_events)
    steps["seed_small"] = small.timings
    with gunicorn(ctx, SERVICE_APP, "service-small") as server:
        loadgen(ctx, server, "service_events_max_small", mode="closed", mix="events", key=small.key)
    verify_stored(ctx, small.engine, "service_events_max_small", small.client_id)
    small.engine.dispose()

    print(f"[2/7] {plan.events} stored events", flush=True)
    big = attach(ctx, big_url) if ctx.args.reuse_big else prepare(ctx, big_url, plan.events, snapshot=True)
    steps["seed_big"] = big.timings

    # Both apps stay up (idle while the other is measured), so each starts once and the long run sees
    # workers that have already served every step before it, as a long-lived deployment would.
    with gunicorn(ctx, FLOOR_APP, "floor") as floor, gunicorn(ctx, SERVICE_APP, "service") as server:
        print("[3/7] floor vs service on the event mix (alternating), then the floor at 50% and the service at "
              "50% and 80% of their max on it (open loop)", flush=True)
        for n in range(plan.repeats):
            loadgen(ctx, floor, f"floor_events_max_{n}", mode="closed", mix="events")
            steps.setdefault("floor_rows_deleted", []).append(delete_floor_rows(big.engine))
            loadgen(ctx, server, f"service_events_max_{n}", mode="closed", mix="events", key=big.key)
            verify_stored(ctx, big.engine, f"service_events_max_{n}", big.client_id)
        # The floor's own latency at half its measured maximum: what Flask, gunicorn, the load generator and
        # one committed INSERT give on this machine, the reference for the service's p99 at half load.
        loadgen(ctx, floor, "floor_open_50", mode="open", mix="events",
                rate=median(event_mix_maxima(steps, "floor", plan.repeats)) / 2)
        steps["floor_rows_deleted"].append(delete_floor_rows(big.engine))
        # The scored events' own latency: the event mix alone (no login checks, so no argon2 in the way)
        # at 50% and 80% of the service's measured maximum on it.
        events_max = median(event_mix_maxima(steps, "service", plan.repeats))
        for share in (50, 80):
            loadgen(ctx, server, f"events_open_{share}", mode="open", mix="events", key=big.key,
                    rate=events_max * share / 100)
            verify_stored(ctx, big.engine, f"events_open_{share}", big.client_id)

        print("[4/7] full mix: max, then 50% and 80% of it (open loop)", flush=True)
        full = loadgen(ctx, server, "full_max", mode="closed", mix="full", key=big.key)
        for share in (50, 80):
            loadgen(ctx, server, f"full_open_{share}", mode="open", mix="full", key=big.key,
                    rate=full["ok_per_s"] * share / 100)
        for name in ("full_max", "full_open_50", "full_open_80"):
            verify_stored(ctx, big.engine, name, big.client_id)

        print("[5/7] password login checks alone, and the raw argon2id rate", flush=True)
        loadgen(ctx, server, "logins_max", mode="closed", mix="logins", key=big.key)
        with settings_env(ctx.env):
            steps["argon2"] = measure(plan.workers, plan.argon2_seconds)
        print(f"  argon2: {steps['argon2']['single_process_per_s']}/s single, "
              f"{steps['argon2']['parallel_per_s']}/s with {plan.workers} processes", flush=True)

        if plan.long_run > 0:
            print(f"[6/7] long run: {plan.long_run:.0f} s at 50% of the full-mix max", flush=True)
            loadgen(ctx, server, "long_run", mode="open", mix="full", key=big.key,
                    rate=full["ok_per_s"] * 0.5, duration=plan.long_run)
            verify_stored(ctx, big.engine, "long_run", big.client_id)

    print("[7/7] query plans", flush=True)
    steps["explain"] = explain_requests(ctx, big)
    steps["stored_events_after"] = __import__("bench.seed").seed.count_rows(big.engine, "risk_events")
    big.engine.dispose()


def attach(ctx: Context, url: str) -> Prepared:
    """The big database as it was seeded: restored from its snapshot, or seeded afresh if it has none.

    Restoring puts back the history exactly as seeded (the earlier runs' traffic is gone), so runs that
    reuse the database compare with each other and with a freshly seeded small database. The client key is
    new either way.
    """
    from bench import seed
    from bench import snapshot as snapshots
    from bench.dataset import utc_now
    from security.migrate import upgrade

    restored = snapshots.restore(url)
    if restored is None:
        print(f"  {url.split('@')[-1]} has no snapshot of its seeded state: seeding it", flush=True)
        return prepare(ctx, url, ctx.plan.events, snapshot=True)
    ctx.env = dict(ctx.env, FOXGUARD_DATABASE_URL=url)
    engine = make_bench_engine(ctx.env)
    upgrade(engine)  # a snapshot taken before a newer migration gets it now, as a deployment would
    history = seed.history_profile(engine, accounts=ctx.plan.accounts, now=utc_now())
    accounts = seed.count_rows(engine, "accounts")
    if (history["stored_events"], accounts) != (ctx.plan.events, ctx.plan.accounts):
        print(f"  its snapshot holds {history['stored_events']} events of {accounts} accounts, not "
              f"{ctx.plan.events} of {ctx.plan.accounts}: seeding it", flush=True)
        engine.dispose()
        return prepare(ctx, url, ctx.plan.events, snapshot=True)
    key, client_id = seed.create_client(engine, name=f"bench-{int(time.time())}")
    ctx.engine = engine
    print(f"  restored {url.split('@')[-1]} from its snapshot in {restored} s: {history}", flush=True)
    return Prepared(engine, key, client_id, {"stored_events": history["stored_events"], "reused": True,
                                             "restore_s": restored, "history": history})


def attach_big(ctx: Context) -> Prepared:
    """:func:`attach` to the backend's big database, restored as seeded (the ``--*-only`` modes)."""
    big_url, _ = database_urls(ctx.args.backend, ctx.args.smoke, ctx.args.pg_url)
    return attach(ctx, big_url)


def verified(ctx: Context) -> bool:
    """Whether every step's acknowledged events were found stored (see :func:`verify_stored`)."""
    return all(v["ok"] for v in ctx.steps.get("verification", {}).values())


def relative_cost(ctx: Context, name: str) -> float | None:
    """Step ``name``'s service CPU per request (gunicorn, plus the PostgreSQL server on that backend) over
    the load generator's: the generator's work per request does not depend on the database, so the quotient
    takes out most of the machine's drift from step to step (it understates a slowdown a little, as the
    generator also spends more per request when answers come slower)."""
    cpu = ctx.steps[name].get("cpu_ms_per_request")
    if not cpu or not cpu.get("loadgen"):
        return None
    service = cpu["app"] + (cpu["postgres"] if ctx.args.backend == "postgresql" else 0.0)
    return round(service / cpu["loadgen"], 2)


def run_sizes(ctx: Context) -> dict[str, Any]:
    """``--sizes-only``: the stored-history size effect alone, small and big databases alternating.

    Re-seeds the small database and restores the big one from its snapshot (:func:`attach`), so both
    start with their seeded history and take the same traffic from then on. Alternating spreads a shared
    machine's noise over both sizes. Before every step the recent history of its database is recorded
    (``steps["history"]``): the features read it, so it must match between the sizes. Next to the
    throughput (the issue's target), ``cpu_per_event_drift`` compares the service's CPU per event with the
    machine's speed divided out (:func:`relative_cost`).
    """
    from bench import seed
    from bench.dataset import utc_now

    plan = ctx.plan
    big_url, small_url = database_urls(ctx.args.backend, ctx.args.smoke, ctx.args.pg_url)
    small = prepare(ctx, small_url, plan.small_events)
    ctx.steps["seed_small"] = small.timings
    big = attach(ctx, big_url)
    ctx.steps["seed_big"] = big.timings
    rates: dict[str, list[float]] = {"small": [], "big": []}
    for n in range(plan.repeats):
        for label, db, url in (("small", small, small_url), ("big", big, big_url)):
            ctx.env = dict(ctx.env, FOXGUARD_DATABASE_URL=url)
            ctx.engine = db.engine
            ctx.steps.setdefault("history", {})[f"sizes_{label}_{n}"] = seed.history_profile(
                db.engine, accounts=plan.accounts, now=utc_now())
            with gunicorn(ctx, SERVICE_APP, f"service-{label}-{n}") as server:
                rates[label].append(loadgen(ctx, server, f"sizes_{label}_{n}", mode="closed", mix="events",
                                            key=db.key)["ok_per_s"])
            verify_stored(ctx, db.engine, f"sizes_{label}_{n}", db.client_id)
    history = ctx.steps["history"]
    small_rate, big_rate = median(rates["small"]), median(rates["big"])
    drift = (big_rate - small_rate) / small_rate if small_rate else None
    cost = {label: [relative_cost(ctx, f"sizes_{label}_{n}") for n in range(plan.repeats)] for label in rates}
    known = {label: [c for c in values if c is not None] for label, values in cost.items()}
    cost_drift = (median(known["big"]) / median(known["small"]) - 1
                  if known["small"] and known["big"] else None)
    return {"events_per_s_small": rates["small"], "events_per_s_big": rates["big"],
            "size_drift": round(drift, 3) if drift is not None else None,
            "size_met": drift is not None and abs(drift) <= TARGET_SIZE_DRIFT,
            "cpu_per_event_vs_loadgen_small": cost["small"], "cpu_per_event_vs_loadgen_big": cost["big"],
            "cpu_per_event_drift": round(cost_drift, 3) if cost_drift is not None else None,
            "stored_small": small.timings["stored_events"], "stored_big": big.timings["stored_events"],
            "per_account_last_day_small": [h["per_account_last_day"] for k, h in history.items() if "small" in k],
            "per_account_last_day_big": [h["per_account_last_day"] for k, h in history.items() if "big" in k],
            "verification_ok": verified(ctx)}


def run_compare(ctx: Context) -> dict[str, Any]:
    """``--compare-only``: floor and service on the event mix, alternating, on the restored big database
    (a quick check of the throughput ratio after a change; the full run records the numbers)."""
    plan = ctx.plan
    big = attach_big(ctx)
    rates: dict[str, list[float]] = {"floor": [], "service": []}
    with gunicorn(ctx, FLOOR_APP, "floor") as floor, gunicorn(ctx, SERVICE_APP, "service") as server:
        for n in range(plan.repeats):
            rates["floor"].append(loadgen(ctx, floor, f"floor_events_max_{n}", mode="closed",
                                          mix="events")["ok_per_s"])
            delete_floor_rows(big.engine)
            rates["service"].append(loadgen(ctx, server, f"service_events_max_{n}", mode="closed", mix="events",
                                            key=big.key)["ok_per_s"])
            verify_stored(ctx, big.engine, f"service_events_max_{n}", big.client_id)
    ratio = median(rates["service"]) / median(rates["floor"]) if median(rates["floor"]) else None
    return {"floor_per_s": rates["floor"], "service_per_s": rates["service"],
            "ratio_service_to_floor": round(ratio, 3) if ratio is not None else None,
            "ratio_met": ratio is not None and ratio >= TARGET_RATIO,
            "verification_ok": verified(ctx)}


def run_logins(ctx: Context) -> dict[str, Any]:
    """``--logins-only``: password login checks alone and the raw argon2id rate, alternating, on the
    restored big database (a quick check of the login-check share after a change)."""
    from bench.argon2_rate import measure

    plan = ctx.plan
    big = attach_big(ctx)
    rates: dict[str, list[float]] = {"logins": [], "argon2": []}
    with gunicorn(ctx, SERVICE_APP, "service") as server:
        for n in range(plan.repeats):
            rates["logins"].append(loadgen(ctx, server, f"logins_max_{n}", mode="closed", mix="logins",
                                           key=big.key)["ok_per_s"])
            verify_stored(ctx, big.engine, f"logins_max_{n}", big.client_id)
            with settings_env(ctx.env):
                rates["argon2"].append(measure(plan.workers, plan.argon2_seconds)["parallel_per_s"])
            print(f"  argon2: {rates['argon2'][-1]}/s with {plan.workers} processes", flush=True)
    share = median(rates["logins"]) / median(rates["argon2"]) if median(rates["argon2"]) else None
    return {"login_checks_per_s": rates["logins"], "argon2_parallel_per_s": rates["argon2"],
            "login_share_of_argon2": round(share, 3) if share is not None else None,
            "login_met": share is not None and share >= TARGET_LOGIN_SHARE,
            "verification_ok": verified(ctx)}


def event_mix_maxima(steps: dict[str, Any], app: str, repeats: int) -> list[float]:
    """``app``'s (``floor`` or ``service``) closed-loop maxima on the event mix, one per repeat of step 3."""
    return [steps[f"{app}_events_max_{n}"]["ok_per_s"] for n in range(repeats)]


def headline(ctx: Context) -> dict[str, Any]:
    """The numbers the issue asks for, with the targets and whether each is met."""
    steps = ctx.steps
    plan = ctx.plan
    floors = event_mix_maxima(steps, "floor", plan.repeats)
    services = event_mix_maxima(steps, "service", plan.repeats)
    ratio = median(services) / median(floors) if median(floors) else None
    argon2 = steps["argon2"]
    logins = steps["logins_max"]["ok_per_s"]
    login_share = logins / argon2["parallel_per_s"] if argon2["parallel_per_s"] else None
    small, big = steps["service_events_max_small"]["ok_per_s"], median(services)
    drift = (big - small) / small if small else None
    p99_50 = steps["full_open_50"]["latency"].get("p99_ms")
    # Results of runs before round 13 have no open-loop steps on the event mix (``--render`` reads them).
    events_50, events_80 = steps.get("events_open_50"), steps.get("events_open_80")
    events_p99_50 = events_50["latency"].get("p99_ms") if events_50 else None
    floor_50 = steps.get("floor_open_50")  # (since round 14)
    rss = rss_verdict(steps.get("long_run", {}).get("rss"))
    return {
        "floor_events_per_s": floors,
        "service_events_per_s": services,
        "ratio_service_to_floor": round(ratio, 3) if ratio is not None else None,
        "ratio_met": ratio is not None and ratio >= TARGET_RATIO,
        "full_mix_max_per_s": steps["full_max"]["ok_per_s"],
        "latency_at_50": steps["full_open_50"]["latency"],
        "latency_at_80": steps["full_open_80"]["latency"],
        "achieved_at_50_per_s": steps["full_open_50"]["ok_per_s"],
        "achieved_at_80_per_s": steps["full_open_80"]["ok_per_s"],
        "p99_at_50_met": p99_50 is not None and p99_50 <= TARGET_P99_MS,
        "events_latency_at_50": events_50["latency"] if events_50 else None,
        "events_latency_at_80": events_80["latency"] if events_80 else None,
        "events_achieved_at_50_per_s": events_50["ok_per_s"] if events_50 else None,
        "events_achieved_at_80_per_s": events_80["ok_per_s"] if events_80 else None,
        "events_p99_at_50_met": events_p99_50 is not None and events_p99_50 <= TARGET_P99_MS,
        "floor_latency_at_50": floor_50["latency"] if floor_50 else None,
        "floor_achieved_at_50_per_s": floor_50["ok_per_s"] if floor_50 else None,
        "login_checks_per_s": logins,
        "argon2_parallel_per_s": argon2["parallel_per_s"],
        "argon2_single_per_s": argon2["single_process_per_s"],
        "login_share_of_argon2": round(login_share, 3) if login_share is not None else None,
        "login_met": login_share is not None and login_share >= TARGET_LOGIN_SHARE,
        "events_per_s_small": small,
        "events_per_s_big": round(big, 2),
        "size_drift": round(drift, 3) if drift is not None else None,
        "size_met": drift is not None and abs(drift) <= TARGET_SIZE_DRIFT,
        "rss": rss,
        "verification_ok": verified(ctx),
    }


#: RSS counts as flat when the mean of the last fifth of the run is within this of the first fifth's.
RSS_FLAT_TOLERANCE: Final = 0.05


def rss_verdict(rss: dict[str, Any] | None) -> dict[str, Any] | None:
    if not rss or not rss.get("workers"):
        return None
    workers = {}
    for pid, w in rss["workers"].items():
        growth = (w["rss_mean_last_fifth_kib"] - w["rss_mean_first_fifth_kib"]) / w["rss_mean_first_fifth_kib"]
        workers[pid] = {"first_fifth_mib": round(w["rss_mean_first_fifth_kib"] / 1024, 1),
                        "last_fifth_mib": round(w["rss_mean_last_fifth_kib"] / 1024, 1),
                        "peak_mib": round(w["rss_peak_kib"] / 1024, 1), "growth": round(growth, 4)}
    return {"workers": workers, "flat": all(abs(w["growth"]) <= RSS_FLAT_TOLERANCE for w in workers.values())}


def _yes(flag: bool) -> str:
    return "**met**" if flag else "**not met**"


def _lat(summary: dict[str, Any]) -> str:
    return f"{summary.get('p50_ms')} / {summary.get('p95_ms')} / {summary.get('p99_ms')}"


def markdown(ctx: Context, head: dict[str, Any], meta: dict[str, Any]) -> str:
    plan = ctx.plan
    long_run = ctx.steps.get("long_run")
    lines = [
        f"# Foxguard benchmark: {ctx.args.backend}{' (smoke)' if ctx.args.smoke else ''}",
        "",
        f"- started {meta['started_at']}, finished {meta['finished_at']}; nproc {meta['machine_before']['nproc']}; "
        f"load averages before {meta['machine_before']['loadavg']}, after {meta['machine_after']['loadavg']}",
        f"- {plan.accounts} accounts; {ctx.steps['seed_big']['stored_events']} stored events (small database: "
        f"{ctx.steps['seed_small']['stored_events']}); gunicorn gthread {plan.workers} workers x {plan.threads} "
        f"threads; closed loop {plan.concurrency} clients; {plan.duration:g} s measured after {plan.warmup:g} s "
        "warm-up",
        "",
        "| Measure | Result | Target | |",
        "|---|---|---|---|",
        f"| Floor, event mix (req/s, each run) | {head['floor_events_per_s']} | | |",
        f"| Service, event mix (scored events/s, each run) | {head['service_events_per_s']} | | |",
        f"| Service / floor (medians) | {head['ratio_service_to_floor']} | >= {TARGET_RATIO} | "
        f"{_yes(head['ratio_met'])} |",
        f"| Full mix max (req/s) | {head['full_mix_max_per_s']} | | |",
    ]
    if head.get("events_latency_at_50"):
        lines += [
            f"| Event mix alone (scored events, no login checks) at 50% of the service's max: achieved req/s; "
            f"p50/p95/p99 ms | {head['events_achieved_at_50_per_s']}; {_lat(head['events_latency_at_50'])} | "
            f"p99 <= {TARGET_P99_MS:g} ms | {_yes(head['events_p99_at_50_met'])} |",
            f"| Event mix alone at 80%: achieved req/s; p50/p95/p99 ms | {head['events_achieved_at_80_per_s']}; "
            f"{_lat(head['events_latency_at_80'])} | | |",
        ]
    if head.get("floor_latency_at_50"):
        lines.append(f"| Floor, event mix at 50% of its max (the reference, no target): achieved req/s; "
                     f"p50/p95/p99 ms | {head['floor_achieved_at_50_per_s']}; {_lat(head['floor_latency_at_50'])} "
                     "| | |")
    lines += [
        f"| Full mix at 50%: achieved req/s; p50/p95/p99 ms | {head['achieved_at_50_per_s']}; "
        f"{_lat(head['latency_at_50'])} | p99 <= {TARGET_P99_MS:g} ms | {_yes(head['p99_at_50_met'])} |",
        f"| Full mix at 80%: achieved req/s; p50/p95/p99 ms | {head['achieved_at_80_per_s']}; "
        f"{_lat(head['latency_at_80'])} | | |",
        f"| Login checks/s vs raw argon2 verify/s ({plan.workers} processes; 1 process: "
        f"{head['argon2_single_per_s']}) | {head['login_checks_per_s']} vs {head['argon2_parallel_per_s']} = "
        f"{head['login_share_of_argon2']} | >= {TARGET_LOGIN_SHARE} | {_yes(head['login_met'])} |",
        f"| Events/s at {ctx.steps['seed_small']['stored_events']} vs {ctx.steps['seed_big']['stored_events']} "
        f"stored | {head['events_per_s_small']} vs {head['events_per_s_big']} (change {head['size_drift']}) | "
        f"within {TARGET_SIZE_DRIFT:.0%} | {_yes(head['size_met'])} |",
    ]
    if head["rss"]:
        growth = ", ".join(f"{w['first_fifth_mib']} -> {w['last_fifth_mib']} MiB (peak {w['peak_mib']})"
                           for w in head["rss"]["workers"].values())
        lines.append(f"| Worker RSS over {long_run['window_s']:g} s at 50% (first fifth -> last fifth) | {growth} | "
                     f"flat (within {RSS_FLAT_TOLERANCE:.0%}) | {_yes(head['rss']['flat'])} |")
    lines.append(f"| Every acknowledged event stored once with an assessment | {head['verification_ok']} | | |")
    lines += ["", "## Per step", "", "CPU ms per request: the app's gunicorn processes / the PostgreSQL server / the "
              "load generator (warm-up included).", "",
              "| Step | ok/s | statuses | p50 / p95 / p99 ms | load avg after | generator CPU | CPU ms per request |",
              "|---|---|---|---|---|---|---|"]
    for name, s in ctx.steps.items():
        if isinstance(s, dict) and "ok_per_s" in s and "latency" in s:
            cpu = s.get("cpu_ms_per_request")
            split = f"{cpu['app']} / {cpu['postgres']} / {cpu['loadgen']}" if cpu else ""
            lines.append(f"| {name} | {s['ok_per_s']} | {s['status']} | {_lat(s['latency'])} | "
                         f"{s['machine_after']['loadavg']} | {s['loadgen_cpu_share']} | {split} |")
    open_loop = {name: s for name, s in ctx.steps.items()
                 if isinstance(s, dict) and s.get("config", {}).get("mode") == "open" and s.get("by_op")}
    if open_loop:
        lines += ["", "## Latency by operation in the open-loop steps (p50 / p95 / p99 ms, requests)", "",
                  "| Step | " + " | ".join(PATHS) + " |", "|---|" + "---|" * len(PATHS)]
        for name, s in open_loop.items():
            cells = [f"{_lat(s['by_op'][op]['latency'])} ({s['by_op'][op]['requests']})" if op in s["by_op"] else ""
                     for op in PATHS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    waits = {name: s["pg_sessions"] for name, s in ctx.steps.items() if isinstance(s, dict) and s.get("pg_sessions")}
    if waits:
        lines += ["", "## PostgreSQL sessions during each step (mean number of sessions per state / wait)", ""]
        for name, w in waits.items():
            top = ", ".join(f"{k}: {v}" for k, v in list(w["mean_sessions"].items())[:4])
            lines.append(f"- {name}: {top}")
            for statement, n in list(w.get("lock_waiters_by_statement", {}).items())[:2]:
                lines.append(f"  - waiting for a lock ({n} sessions on average): `{statement[:110]}...`")
    explain = ctx.steps.get("explain", {})
    if explain:
        lines += ["", "## SQL statements per request", ""]
        lines += [f"- {op}: {e['statements']} statements (HTTP {e['status']})" for op, e in explain.items()]
        lines += ["", "## Plans of the SELECTs one request of each kind ran", ""]
        seen: set[str] = set()
        for op, e in explain.items():
            for query in e["queries"]:
                shape = query["sql"].split(" WHERE ")[0] + " WHERE " + query["sql"].split(" WHERE ")[-1][:80]
                if shape in seen:
                    continue
                seen.add(shape)
                lines += [f"{op}: `{query['sql'][:400]}`", "", "```", *query["plan"], "```", ""]
    lines += ["", "## Commands", "", "```", meta["command"], *ctx.commands, "```", ""]
    return "\n".join(lines)


PARTIAL_RUNS: Final = ("--sizes-only", "--compare-only", "--logins-only")
"""Runs of some steps only, which write ``results.json`` and no ``report.md``."""


def render(directory: Path, args: argparse.Namespace) -> int:
    """Re-write ``report.md`` from a finished run's ``results.json`` (e.g. after the report format changed)."""
    data = json.loads((directory / "results.json").read_text())
    saved = data["meta"]["command"].split(" -m bench.run ", 1)[-1].split()
    partial = [flag for flag in PARTIAL_RUNS if flag in saved]
    if partial:
        raise SystemExit(f"{directory} holds a {partial[0]} run: report.md is written for full runs only; "
                         "its numbers are in results.json")
    args.backend = "sqlite" if "sqlite" in saved else "postgresql"
    args.smoke = "--smoke" in saved
    ctx = Context(args=args, plan=Plan(**data["plan"]), out=directory, env={}, seed=args.seed,
                  steps=data["steps"], commands=data["commands"])
    (directory / "report.md").write_text(markdown(ctx, data["headline"], data["meta"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--pg-url", default=PG_DEFAULT, help="PostgreSQL URL of the big database")
    parser.add_argument("--smoke", action="store_true", help="tiny data, seconds-long steps")
    parser.add_argument("--out", default=None, help="results directory (default bench/results/<backend>-<time>)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--render", default=None, metavar="DIR",
                        help="only re-write DIR/report.md from DIR/results.json")
    parser.add_argument("--reuse-big", action="store_true",
                        help="restore the big database from the snapshot taken when it was seeded instead of "
                             "seeding it again (seeds it if there is no snapshot; see bench/snapshot.py)")
    parser.add_argument("--sizes-only", action="store_true",
                        help="only the 10k-vs-1M comparison, alternating, on the restored big database")
    parser.add_argument("--compare-only", action="store_true",
                        help="only floor vs service on the event mix, alternating, on the restored big database")
    parser.add_argument("--unbalanced", action="store_true",
                        help="let the workers' accept race place the load generator's connections (the default "
                             "opens them evenly over the workers, see bench/balance.py)")
    parser.add_argument("--logins-only", action="store_true",
                        help="only login checks and the raw argon2 rate, alternating, on the restored big "
                             "database")
    for name, default in vars(Plan()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=None)
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else Plan()
    for name in vars(Plan()):
        if getattr(args, name) is not None:
            setattr(plan, name, getattr(args, name))
    if args.render:
        return render(Path(args.render), args)
    stamp = datetime.now().astimezone().strftime("%Y%m%dT%H%M%S")  # noqa: DTZ005 - a file name
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"{args.backend}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    SQLITE_DIR.mkdir(parents=True, exist_ok=True)
    ctx = Context(args=args, plan=plan, out=out, env=service_env("", plan), seed=args.seed, log_dir=out)
    from bench.stats import machine

    meta: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, "-m", "bench.run", *(argv or sys.argv[1:])]),
        "started_at": datetime.now().astimezone().isoformat(), "machine_before": machine(),
        "uptime": Path("/proc/uptime").read_text().split()[0],
    }
    if args.sizes_only or args.compare_only or args.logins_only:
        head = (run_sizes(ctx) if args.sizes_only else run_compare(ctx) if args.compare_only
                else run_logins(ctx))
        meta.update(finished_at=datetime.now().astimezone().isoformat(), machine_after=machine())
        (out / "results.json").write_text(json.dumps({"meta": meta, "plan": vars(plan), "headline": head,
                                                      "commands": ctx.commands, "steps": ctx.steps}, indent=2,
                                                     default=str))
        print(json.dumps(head, indent=2, default=str))
        return 0 if head["verification_ok"] else 1
    run_backend(ctx)
    meta.update(finished_at=datetime.now().astimezone().isoformat(), machine_after=machine())
    head = headline(ctx)
    (out / "results.json").write_text(json.dumps({"meta": meta, "plan": vars(plan), "headline": head,
                                                  "commands": ctx.commands, "steps": ctx.steps}, indent=2,
                                                 default=str))
    (out / "report.md").write_text(markdown(ctx, head, meta))
    print(json.dumps(head, indent=2, default=str))
    print(f"results: {out}")
    return 0 if head["verification_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
