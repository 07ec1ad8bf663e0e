"""Load generator: a separate process driving the service (or the floor app) over HTTP.

Two modes:

* ``closed``: ``--concurrency`` clients send back to back (the next request leaves when the previous
  answer arrives). Measures maximum throughput.
* ``open``: requests *arrive* at ``--rate`` per second (Poisson arrivals from a seeded generator),
  whether or not earlier ones were answered. Latency is measured from the *scheduled* arrival time, not
  from when the request could actually be sent, so a stalled server shows up in the percentiles instead
  of silently slowing the generator down (no coordinated omission).

Every request is recorded (operation, scheduled/sent/done times, status, the id a 2xx answer confirms)
in ``<out>.requests.csv``; the summary (exact nearest-rank percentiles over the measurement window, i.e.
after ``--warmup``) goes to ``<out>.json``. With ``--gunicorn-pid`` the workers' resident memory is
sampled from /proc once per ``--rss-interval`` seconds.

    python -m bench.loadgen --base-url http://127.0.0.1:8000 --key fg_... --mode closed \
        --concurrency 8 --duration 30 --mix full --accounts 10000 --seed 7 --out bench/results/x
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import resource
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.balance import balanced
from bench.dataset import utc_now
from bench.rawhttp import HttpError, RawClient
from bench.stats import children_of, machine, memory_kib, summarize
from bench.workload import Request, Workload, parse_mix

REQUEST_TIMEOUT_S = 30.0
#: Upper bound on simultaneously open connections in open mode (arrivals beyond it wait in the client,
#: and that wait counts in their latency because it is measured from the scheduled time).
OPEN_MODE_MAX_CONNECTIONS = 64
#: Open mode with ``--balance-pid``: connections opened (evenly over the workers) before the first arrival;
#: more are opened, unbalanced, only when that many requests are in flight at once.
OPEN_MODE_BALANCED_CONNECTIONS = 16
ERROR_STATUS = 0  # recorded for transport errors and timeouts


@dataclass
class Record:
    op: str
    scheduled: float  # seconds since the run started
    sent: float
    done: float
    status: int
    ident: str

    @property
    def latency(self) -> float:
        return self.done - self.scheduled

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300  # noqa: PLR2004 - the 2xx range


@dataclass
class RssSampler:
    """Samples VmRSS/VmHWM of the gunicorn master's children from a background thread."""

    master_pid: int
    interval_s: float
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, pid, rss KiB)
    peak_hwm: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic() - self._t0
            for pid in children_of(self.master_pid):
                mem = memory_kib(pid)
                if mem:
                    self.samples.append((round(now, 2), pid, mem["VmRSS"]))
                    self.peak_hwm[pid] = max(self.peak_hwm.get(pid, 0), mem.get("VmHWM", 0))
            self._stop.wait(self.interval_s)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        per_worker: dict[int, list[tuple[float, int]]] = defaultdict(list)
        for t, pid, rss in self.samples:
            per_worker[pid].append((t, rss))
        workers = {}
        for pid, series in per_worker.items():
            rss_values = [rss for _, rss in series]
            # First vs last fifth of the run: a leak shows up as a steady rise, not as one spike.
            fifth = max(1, len(series) // 5)
            workers[str(pid)] = {
                "samples": len(series),
                "rss_first_kib": rss_values[0],
                "rss_last_kib": rss_values[-1],
                "rss_peak_kib": max(rss_values),
                "rss_mean_first_fifth_kib": round(sum(rss_values[:fifth]) / fifth),
                "rss_mean_last_fifth_kib": round(sum(rss_values[-fifth:]) / fifth),
                "vm_hwm_kib": self.peak_hwm.get(pid),
            }
        return {"interval_s": self.interval_s, "workers": workers, "timeline": self.samples}


class Client(Protocol):
    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """Send a JSON body; return (status, response body)."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...


class HttpxClient:
    """The same interface over httpx (``--client httpx``), to cross-check the raw client."""

    def __init__(self, base_url: str, *, headers: dict[str, str], max_connections: int) -> None:
        import httpx  # only when asked for: importing it costs every (short) generator process

        self._error = httpx.HTTPError
        self._client = httpx.AsyncClient(
            base_url=base_url, headers={**headers, "Content-Type": "application/json"}, timeout=REQUEST_TIMEOUT_S,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            response = await self._client.post(path, content=body)
        except self._error as exc:
            raise HttpError(repr(exc)) from exc
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._client.aclose()


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mix = parse_mix(args.mix)
        self.records: list[Record] = []
        self.http: Client | None = None
        self.t0 = 0.0
        self.clock_skew = 0.0
        self.balance: dict[str, Any] | None = None

    def workload(self, stream: int) -> Workload:
        return Workload(seed=self.args.seed, accounts=self.args.accounts, mix=self.mix,
                        run_tag=self.args.run_tag, stream=stream)

    async def send(self, client: Client, req: Request, scheduled: float) -> None:
        sent = time.monotonic() - self.t0
        try:
            status, payload = await client.post(req.path, json.dumps(req.body).encode())
            if status >= 500 and self.args.verbose:  # noqa: PLR2004 - server errors
                print(f"{status} {req.path}: {payload[:300]!r}", file=sys.stderr)
        except HttpError as exc:
            status = ERROR_STATUS
            if self.args.verbose:
                print(f"error {req.path}: {exc!r}", file=sys.stderr)
        done = time.monotonic() - self.t0
        self.records.append(Record(req.op, scheduled, sent, done, status, req.ident))

    @asynccontextmanager
    async def client(self, connections: int, *, balanced_connections: int) -> AsyncIterator[Client]:
        """The HTTP client; with ``--balance-pid``, holding ``balanced_connections`` connections spread
        evenly over that gunicorn master's workers (see :mod:`bench.balance`). The run's clock starts
        once the client is ready."""
        headers = {"Authorization": f"Bearer {self.args.key}"} if self.args.key else {}
        client: Client
        if self.args.client == "raw":
            raw = RawClient(self.args.base_url, headers=headers, max_connections=connections,
                            timeout=REQUEST_TIMEOUT_S)
            if self.args.balance_pid:
                found = await balanced(raw.connect_with_port, balanced_connections,
                                       children_of(self.args.balance_pid), raw.port)
                for spare in found.surplus:
                    spare.close()
                raw.adopt(found.connections)
                self.balance = found.report()
            client = raw
        else:
            if self.args.balance_pid:
                raise SystemExit("--balance-pid needs the raw client")
            client = HttpxClient(self.args.base_url, headers=headers, max_connections=connections)
        self.t0 = time.monotonic()
        try:
            yield client
        finally:
            await client.aclose()

    async def closed(self, end: float) -> None:
        async with self.client(self.args.concurrency, balanced_connections=self.args.concurrency) as client:
            self.http = client

            async def one_client(stream: int) -> None:
                work = self.workload(stream)
                while (now := time.monotonic() - self.t0) < end:
                    await self.send(client, work.next(utc_now()), now)

            await asyncio.gather(*(one_client(i) for i in range(self.args.concurrency)))

    async def open(self, end: float) -> None:
        rate = self.args.rate
        if rate <= 0:
            raise SystemExit("--rate must be positive in open mode")
        arrivals = random.Random(f"{self.args.seed}:{self.args.run_tag}:arrivals")
        work = self.workload(0)
        tasks: set[asyncio.Task[None]] = set()
        async with self.client(OPEN_MODE_MAX_CONNECTIONS,
                               balanced_connections=OPEN_MODE_BALANCED_CONNECTIONS) as client:
            self.http = client
            scheduled = 0.0
            while True:
                scheduled += arrivals.expovariate(rate)
                if scheduled >= end:
                    break
                delay = scheduled - (time.monotonic() - self.t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self.send(client, work.next(utc_now()), scheduled))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)

    def run(self) -> dict[str, Any]:
        args = self.args
        before = machine()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        sampler = RssSampler(args.gunicorn_pid, args.rss_interval) if args.gunicorn_pid else None
        if sampler:
            sampler.start()
        started = utc_now()
        end = args.warmup + args.duration
        asyncio.run(self.closed(end) if args.mode == "closed" else self.open(end))
        wall = time.monotonic() - self.t0
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        rss = sampler.stop() if sampler else None
        return self.summary(started, wall, before, usage1.ru_utime + usage1.ru_stime
                            - usage0.ru_utime - usage0.ru_stime, rss)

    def summary(self, started: Any, wall: float, before: dict[str, Any], cpu_s: float,
                rss: dict[str, Any] | None) -> dict[str, Any]:
        args = self.args
        lo, hi = args.warmup, args.warmup + args.duration
        # Closed mode: requests that *finished* inside the window; open mode: those *scheduled* in it.
        if args.mode == "closed":
            window = [r for r in self.records if lo <= r.done < hi]
        else:
            window = [r for r in self.records if lo <= r.scheduled < hi]
        ok = [r for r in window if r.ok]
        by_op: dict[str, Any] = {}
        for op in sorted({r.op for r in window}):
            mine = [r for r in window if r.op == op]
            mine_ok = [r for r in mine if r.ok]
            by_op[op] = {
                "requests": len(mine),
                "ok": len(mine_ok),
                "ok_per_s": round(len(mine_ok) / args.duration, 2),
                "status": dict(Counter(str(r.status) for r in mine)),
                "latency": summarize(r.latency for r in mine_ok),
            }
        late = [r.sent - r.scheduled for r in window] if args.mode == "open" else []
        return {
            "config": {k: v for k, v in vars(args).items() if k not in ("key",)},
            "started_at": started.isoformat(),
            "wall_s": round(wall, 2),
            "machine_before": before,
            "machine_after": machine(),
            "loadgen_cpu_s": round(cpu_s, 2),
            "stale_connection_retries": getattr(self.http, "stale_retries", None),
            "connections_opened_on_demand": getattr(self.http, "opened_on_demand", None),
            "balance": self.balance,
            "loadgen_cpu_share": round(cpu_s / wall, 3) if wall else None,
            "window_s": args.duration,
            "requests": len(window),
            "ok": len(ok),
            "ok_per_s": round(len(ok) / args.duration, 2),
            "offered_per_s": args.rate if args.mode == "open" else None,
            "status": dict(Counter(str(r.status) for r in window)),
            "latency": summarize(r.latency for r in ok),
            # How late the generator itself sent requests (open mode): large values mean the generator,
            # not the server, was the bottleneck; the latencies above include this delay anyway.
            "send_delay": summarize(late) if late else None,
            "by_op": by_op,
            "rss": {k: v for k, v in rss.items() if k != "timeline"} if rss else None,
            "rss_timeline": rss["timeline"] if rss else None,
        }

    def write(self, summary: dict[str, Any]) -> None:
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.with_suffix(".requests.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["op", "scheduled_s", "sent_s", "done_s", "status", "id"])
            for r in self.records:
                writer.writerow([r.op, f"{r.scheduled:.6f}", f"{r.sent:.6f}", f"{r.done:.6f}", r.status, r.ident])
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", default="", help="service-client API key (empty for the floor app)")
    parser.add_argument("--mode", choices=("closed", "open"), required=True)
    parser.add_argument("--concurrency", type=int, default=8, help="closed mode: simultaneous clients")
    parser.add_argument("--rate", type=float, default=0.0, help="open mode: arrivals per second")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds (after warm-up)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds run but not measured")
    parser.add_argument("--mix", default="full", help="full | events | logins | tx | op=weight,...")
    parser.add_argument("--accounts", type=int, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--run-tag", default=None, help="prefix of event ids (default: time-based)")
    parser.add_argument("--gunicorn-pid", type=int, default=0, help="sample RSS of this master's workers")
    parser.add_argument("--rss-interval", type=float, default=1.0)
    parser.add_argument("--balance-pid", type=int, default=0,
                        help="open the connections evenly over this gunicorn master's workers first")
    parser.add_argument("--out", required=True, help="output path without suffix")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="HTTP client: raw (lean keep-alive, default) or httpx")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.run_tag is None:
        args.run_tag = f"r{int(time.time() * 1000):x}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    driver = Driver(args)
    summary = driver.run()
    driver.write(summary)
    print(json.dumps({k: summary[k] for k in ("requests", "ok", "ok_per_s", "status", "latency",
                                               "loadgen_cpu_share")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
