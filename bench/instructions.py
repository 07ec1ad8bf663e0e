"""Instructions per request: the app's own cost per operation, counted by callgrind (deterministic).

CPU milliseconds on a shared 2-core machine drift by 10-20% within minutes; instruction counts do not
depend on what else the machine is doing, so two versions of the code compare exactly. For every
operation this runs ``bench.profile`` (in-process, Flask's test client, no gunicorn) under ``valgrind
--tool=callgrind`` twice, with N and 2N requests, at the same time, and reports ``(I(2N) - I(N)) / N``:
start-up, imports and warm-up cancel out. Only the app's process is counted (PostgreSQL's work is not).

    .venv/bin/python -m bench.instructions --url postgresql+psycopg://postgres@127.0.0.1:5432/fg_bench --op tx

Needs valgrind (Debian package ``valgrind``) and a database a full run (or ``bench.profile --seed-events``)
left. Each request stores an event, so every run grows the history a little (~0.06 events per account
per 600 requests with 10,000 accounts).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.run import Plan
from bench.workload import PATHS

ROOT = Path(__file__).resolve().parent.parent
COLLECTED = re.compile(r"Collected : (\d+)")


def parse(stdout: str, stderr: str) -> int:
    """The instruction total of a callgrind run of ``bench.profile``, after checking that every request it
    sent was answered 2xx (a run of error answers would count the wrong work)."""
    found = COLLECTED.search(stderr)
    measured = [line for line in stdout.splitlines() if line.startswith("{'op'")]
    if found is None or not measured:
        raise RuntimeError(f"no callgrind total or no measurement in the output: {stderr[-2000:]}")
    statuses = ast.literal_eval(measured[-1])["status"]
    if any(not 200 <= status < 300 for status in statuses):  # noqa: PLR2004 - the 2xx range
        raise RuntimeError(f"requests failed: {statuses}")
    return int(found.group(1))


def count(url: str, op: str, requests: int, accounts: int) -> int:
    """Instructions callgrind counted for one ``bench.profile`` process sending ``requests`` of ``op``."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m",
               "bench.profile", "--url", url, "--op", op, "--requests", str(requests), "--accounts", str(accounts)]
    # A fixed hash seed: set and dict orders, and so the work, are the same in every run.
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"callgrind run failed ({done.returncode}): {done.stderr[-2000:]}")
    return parse(done.stdout, done.stderr)


def per_request(url: str, op: str, requests: int, accounts: int) -> dict[str, object]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        single, double = pool.map(lambda n: count(url, op, n, accounts), (requests, 2 * requests))
    return {"op": op, "requests": requests, "instructions_n": single, "instructions_2n": double,
            "instructions_per_request": round((double - single) / requests)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="database URL (PostgreSQL or SQLite)")
    parser.add_argument("--op", action="append", choices=sorted(PATHS), help="operation(s); default tx, login_event")
    parser.add_argument("--requests", type=int, default=300, help="N (the runs send N and 2N)")
    parser.add_argument("--accounts", type=int, default=Plan.accounts, help="accounts the database was seeded with")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    for op in args.op or ("tx", "login_event"):
        print(json.dumps(per_request(args.url, op, args.requests, args.accounts)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
