"""Raw argon2id verify rate on this machine with the configured (production) parameters.

The login check is compared to this: a check is one argon2 verification plus scoring, so on the same
number of processes it can at best reach this rate. Measured with 1 process and with ``--processes``
processes in parallel (default: one per gunicorn worker), each verifying the same correct password
against the same hash for ``--seconds``.

    FOXGUARD_ENV=production ... python -m bench.argon2_rate --processes 2 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from typing import Any

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type

from bench.dataset import BENCH_PASSWORD
from bench.stats import machine
from security.config import load_settings


def _hasher() -> Argon2Hasher:
    pw = load_settings().passwords
    return Argon2Hasher(time_cost=pw.time_cost, memory_cost=pw.memory_cost_kib, parallelism=pw.parallelism,
                        type=Type.ID)


def _verify_for(seconds: float, stored: str) -> float:
    """Verifications per second in this process (timed inside it, so process start-up is not counted)."""
    hasher = _hasher()
    hasher.verify(stored, BENCH_PASSWORD)  # warm-up: allocate the memory once
    done = 0
    started = time.monotonic()
    end = started + seconds
    while time.monotonic() < end:
        hasher.verify(stored, BENCH_PASSWORD)
        done += 1
    return done / (time.monotonic() - started)


def measure(processes: int, seconds: float) -> dict[str, Any]:
    """Verifications per second with 1 and with ``processes`` parallel processes."""
    pw = load_settings().passwords
    stored = _hasher().hash(BENCH_PASSWORD)
    before = machine()
    single = _verify_for(seconds, stored)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        rates = pool.starmap(_verify_for, [(seconds, stored)] * processes)
    return {
        "parameters": {"time_cost": pw.time_cost, "memory_cost_kib": pw.memory_cost_kib,
                       "parallelism": pw.parallelism},
        "seconds": seconds,
        "single_process_per_s": round(single, 2),
        "processes": processes,
        # Sum of the per-process rates: the processes run simultaneously for (almost) the same period.
        "parallel_per_s": round(sum(rates), 2),
        "machine_before": before,
        "machine_after": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.processes, args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
