"""Create, migrate and fill a benchmark database fast and deterministically.

* ``reset`` drops everything (PostgreSQL: the public schema; SQLite: the file) and applies the project's
  Alembic migrations, exactly as a deployment would.
* ``create_client`` issues the benchmark's API key through the real ``ClientService`` (audited).
* ``seed_accounts`` writes N account profiles sharing one argon2id hash made with the configured
  (production) parameters.
* ``seed_events`` writes the pre-loaded history straight into ``risk_events`` (PostgreSQL: ``COPY`` with
  the secondary indexes dropped and rebuilt afterwards; SQLite: ``executemany`` in large transactions),
  plus the familiarity counters those successful logins imply, computed by the service's own
  ``FeatureStore.record_successful_login`` logic against an in-memory counter table.

Rows are generated chunk by chunk from ``random.Random(f"{seed}:events:{chunk}")``, so the same seed gives
the same history on both databases and in every run.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, Table, func, insert, select, text
from sqlalchemy.engine import make_url

from bench.dataset import HISTORY_SPAN, Person, amount_like, created_at, person
from security.accounts.models import Account
from security.audit.services import AuditLog
from security.clients.services import ClientService
from security.clock import SystemClock
from security.config import Settings
from security.credentials.passwords import PasswordHasher
from security.entropy import SystemEntropy
from security.migrate import upgrade
from security.permissions import ALL_SCOPES
from security.risk.feature_store import Context, FeatureStore, Tally
from security.risk.models import FamiliarityCount, RiskEvent
from security.risk.rules import BruteForceConfig

CHUNK: Final = 10_000
#: Shares of the stored history by kind (the account changes open "withdrawal after change" windows).
HISTORY_KINDS: Final = (("transaction", 0.70), ("login", 0.28), ("account_change", 0.02))
FAILED_LOGIN_SHARE: Final = 0.03
AWAY_SHARE: Final = 0.03
CHANGES: Final = ("email", "phone", "password", "mfa_enabled", "device_added")
SQLITE_BATCH: Final = 50_000


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def reset(engine: Engine) -> None:
    """Drop every table and migrate to head with the project's migrations."""
    if is_postgres(engine):
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    else:
        engine.dispose()
        database = make_url(str(engine.url)).database
        if database:
            for suffix in ("", "-wal", "-shm"):
                Path(database + suffix).unlink(missing_ok=True)
    upgrade(engine)


def create_client(engine: Engine, name: str = "bench") -> tuple[str, uuid.UUID]:
    """Issue an API key with every scope; return (key, client id)."""
    from sqlalchemy.orm import Session

    clock = SystemClock()
    with Session(engine) as session:
        service = ClientService(session, clock=clock, entropy=SystemEntropy(), audit=AuditLog(session, clock=clock))
        issued = service.create(name, ALL_SCOPES, actor="bench")
        client_id = issued.client.id
        session.commit()
    return issued.api_key, client_id


def shared_password_hash(settings: Settings, password: str) -> str:
    pw = settings.passwords
    hasher = PasswordHasher(time_cost=pw.time_cost, memory_cost_kib=pw.memory_cost_kib, parallelism=pw.parallelism)
    return hasher.hash(password)


def seed_accounts(engine: Engine, *, seed: int, accounts: int, anchor: datetime, password_hash: str) -> None:
    """Write ``accounts`` active profiles, all created before the history starts."""
    born = created_at(anchor)
    rows = []
    for index in range(accounts):
        who = person(seed, index)
        rows.append({
            "id": who.account_id, "email": who.email, "email_normalized": who.email.lower(), "phone": who.phone,
            "home_country": who.country, "identity_document_hmac": None, "status": "active",
            "password_hash": password_hash, "password_changed_at": born, "created_at": born, "updated_at": born,
            "version": 1,
        })
    with engine.begin() as conn:
        for start in range(0, len(rows), SQLITE_BATCH):
            conn.execute(insert(Account.__table__), rows[start:start + SQLITE_BATCH])


class _Present(Mapping[tuple[str, str, str], Tally]):
    """The counter rows seen so far, as ``FeatureStore._counts`` would return them (keyed by stored scope)."""

    def __init__(self, rows: dict[tuple[str, str, str], list[int]]) -> None:
        self._rows = rows

    def __getitem__(self, key: tuple[str, str, str]) -> Tally:
        count, children = self._rows[key]
        return Tally(count, children)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __iter__(self) -> Iterator[tuple[str, str, str]]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


class CountingStore(FeatureStore):
    """The service's own counter-update logic (``record_successful_login``), writing to a dict.

    Only the two points where it touches the database are replaced: reading which counter rows exist
    (``_counts``) and adding the deltas (``_add_to_counters``). ``tests/bench/test_seed.py`` checks the
    result against the real method writing to a real database.
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], list[int]] = {}
        # No database: the two methods below are the only ones that would use the session, and the
        # brute-force settings are never read by the counter logic.
        super().__init__(None, brute_force=BruteForceConfig.model_construct())  # type: ignore[arg-type]

    def _counts(self, account_id: str, keys: Iterable[tuple[str, str]]) -> Any:
        return _Present(self.rows)

    def _add_to_counters(self, ordered: Sequence[tuple[str, str, str, int, int]]) -> None:
        for scope, level, value, count, children in ordered:  # the upsert's count + excluded.count
            row = self.rows.setdefault((scope, level, value), [0, 0])
            row[0] += count
            row[1] += children


def _context(rng: random.Random, who: Person, serial: int) -> dict[str, Any]:
    away = rng.random() < AWAY_SHARE
    return {
        "ip": f"198.51.100.{rng.randrange(1, 255)}" if away else rng.choice(who.ips),
        "device_id": f"dev-old-{serial}" if away else rng.choice(who.devices),
        "user_agent": who.user_agent,
        "country": who.country,
        "lat": who.lat,
        "lon": who.lon,
        "asn": None,
        "occurred_at": None,
    }


def generate_events(
    *, seed: int, accounts: int, events: int, anchor: datetime, client_id: uuid.UUID
) -> Iterator[dict[str, Any]]:
    """Yield ``events`` history rows for ``risk_events`` (deterministic for a given seed)."""
    people: dict[int, Person] = {}
    kinds = [k for k, _ in HISTORY_KINDS]
    weights = [w for _, w in HISTORY_KINDS]
    span_s = HISTORY_SPAN.total_seconds()
    for chunk_start in range(0, events, CHUNK):
        rng = random.Random(f"{seed}:events:{chunk_start // CHUNK}")
        for serial in range(chunk_start, min(events, chunk_start + CHUNK)):
            index = rng.randrange(accounts)
            who = people.get(index) or people.setdefault(index, person(seed, index))
            kind = rng.choices(kinds, weights)[0]
            occurred = anchor - timedelta(seconds=rng.uniform(60, span_s))
            received = occurred + timedelta(milliseconds=rng.randrange(5, 2000))
            ctx = _context(rng, who, serial)
            event_id = f"seed-{serial}"
            row: dict[str, Any] = {
                "id": uuid.UUID(int=rng.getrandbits(128), version=4), "client_id": client_id,
                "event_id": event_id, "kind": kind, "account_id": who.account_id, "occurred_at": occurred,
                "received_at": received, "request_hash": f"{rng.getrandbits(256):064x}",
                "ip": ctx["ip"], "country": ctx["country"], "device_id": ctx["device_id"], "lat": ctx["lat"],
                "lon": ctx["lon"], "amount": None, "currency": None, "destination_address": None,
                "destination_country": None, "change": None,
            }
            body: dict[str, Any] = {"event_id": event_id, "account_id": who.account_id,
                                    "occurred_at": occurred.isoformat(), "context": ctx}
            if kind == "transaction":
                address = rng.choice(who.payees) if rng.random() < 0.9 else f"bc1qold{serial}"  # noqa: PLR2004
                amount = amount_like(rng, who)
                row.update(outcome="allow", amount=format(amount, "f"), currency=who.currency,
                           destination_address=address, destination_country=who.country)
                body.update(amount=str(amount), currency=who.currency,
                            destination={"address": address, "country": who.country, "label": None},
                            balance_before=None)
            elif kind == "login":
                outcome = "failure" if rng.random() < FAILED_LOGIN_SHARE else "success"
                row["outcome"] = outcome
                body.update(outcome=outcome, method="passkey")
            else:
                change = rng.choice(CHANGES)
                row.update(outcome="allow", change=change)
                body["change"] = change
            row["payload"] = body
            row["response"] = {
                "event_id": event_id, "decision": "allow", "risk": {"score": 0, "band": "low"}, "reasons": [],
                "account": {"status": "active"}, "lock": None, "assessment_id": str(uuid.UUID(int=serial)),
            }
            yield row


class CachedContext(Context):
    """A context whose familiarity hierarchies are computed once per distinct (ip, asn, country, agent).

    The history repeats the same few contexts per account thousands of times; parsing the user agent and
    the IP prefix again for each would dominate the seeding time. The values are the real ones.
    """

    def hierarchies(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        return _hierarchies(self.ip, self.asn, self.country, self.user_agent)


@lru_cache(maxsize=200_000)
def _hierarchies(ip: str | None, asn: str | None, country: str | None,
                 user_agent: str | None) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    return Context(ip=ip, asn=asn, country=country, user_agent=user_agent).hierarchies()


def familiarity_rows(logins: Sequence[tuple[datetime, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The counter rows the successful ``logins`` (occurred_at, account, context) imply, as the service
    would have kept them had it received them in time order."""
    store = CountingStore()
    for _, account, ctx in sorted(logins, key=lambda login: login[0]):
        store.record_successful_login(account, CachedContext(
            ip=ctx["ip"], device_id=ctx["device_id"], user_agent=ctx["user_agent"], country=ctx["country"],
            lat=ctx["lat"], lon=ctx["lon"], asn=ctx["asn"]))
    return [{"scope": s, "level": lvl, "value": v, "count": c, "children": ch}
            for (s, lvl, v), (c, ch) in store.rows.items()]


def _copy_rows(engine: Engine, table: Table, rows: Iterable[dict[str, Any]]) -> None:
    """PostgreSQL: COPY with the secondary indexes dropped first and rebuilt afterwards (bulk-load practice)."""
    from psycopg.types.json import Jsonb

    columns = [c.name for c in table.columns]
    json_columns = {"payload", "response", "data", "features", "reasons"} & set(columns)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
                    "(SELECT conname FROM pg_constraint)", (table.name,))
        indexes = cur.fetchall()
        for name, _ in indexes:
            cur.execute(f'DROP INDEX "{name}"')
        with cur.copy(f'COPY "{table.name}" ({", ".join(columns)}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([Jsonb(row[c]) if c in json_columns and row[c] is not None else row.get(c)
                                for c in columns])
        for _, definition in indexes:
            cur.execute(definition)
        raw.commit()
    finally:
        raw.close()


def _insert_rows(engine: Engine, table: Table, rows: Iterable[dict[str, Any]]) -> None:
    """SQLite: executemany in large transactions (one per batch)."""
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= SQLITE_BATCH:
            with engine.begin() as conn:
                conn.execute(insert(table), batch)
            batch = []
    if batch:
        with engine.begin() as conn:
            conn.execute(insert(table), batch)


def seed_events(engine: Engine, *, seed: int, accounts: int, events: int, anchor: datetime,
                client_id: uuid.UUID) -> dict[str, float]:
    """Write the history (streamed) and its familiarity counters; return timings in seconds."""
    started = time.monotonic()
    logins: list[tuple[datetime, str, dict[str, Any]]] = []

    def rows() -> Iterator[dict[str, Any]]:
        for row in generate_events(seed=seed, accounts=accounts, events=events, anchor=anchor,
                                   client_id=client_id):
            if row["kind"] == "login" and row["outcome"] == "success":
                logins.append((row["occurred_at"], row["account_id"], row["payload"]["context"]))
            yield row

    write = _copy_rows if is_postgres(engine) else _insert_rows
    write(engine, RiskEvent.__table__, rows())
    written = time.monotonic()
    counters = familiarity_rows(logins)
    counted = time.monotonic()
    write(engine, FamiliarityCount.__table__, counters)
    analyze_started = time.monotonic()
    analyze(engine)
    return {"events_s": round(written - started, 1), "familiarity_s": round(analyze_started - written, 1),
            "familiarity_count_s": round(counted - written, 1),
            "analyze_s": round(time.monotonic() - analyze_started, 1), "familiarity_rows": len(counters)}


def analyze(engine: Engine) -> None:
    """Refresh planner statistics (autovacuum would on PostgreSQL; nothing does on SQLite unless asked)."""
    if is_postgres(engine):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def history_profile(engine: Engine, *, accounts: int, now: datetime) -> dict[str, Any]:
    """How much stored history falls inside the features' recent windows at ``now``.

    The features read each account's last hour and last day, so two databases compare fairly only if
    these match: a database that has taken earlier runs' traffic scores against more recent history than
    a freshly seeded one of the same size (round 11, bench/README.md).
    """
    day, hour = now - timedelta(days=1), now - timedelta(hours=1)
    with engine.connect() as conn:
        stored, last_day, last_hour, newest = conn.execute(select(
            func.count(), func.count().filter(RiskEvent.occurred_at >= day),
            func.count().filter(RiskEvent.occurred_at >= hour), func.max(RiskEvent.occurred_at))).one()
    return {"stored_events": stored, "per_account_last_day": round(last_day / accounts, 2),
            "per_account_last_hour": round(last_hour / accounts, 2),
            "newest_event_age_h": round((now - newest).total_seconds() / 3600, 2) if newest else None}


def count_rows(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one())  # noqa: S608


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)
