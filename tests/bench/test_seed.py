"""The seeder's familiarity counters equal what the service's own code writes to a real database."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.seed import familiarity_rows, generate_events
from security.risk.feature_store import Context, FeatureStore
from security.risk.models import FamiliarityCount
from security.risk.rules import BruteForceConfig

ANCHOR = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_seeded_counters_match_the_service_writing_to_the_database(db_session: Session) -> None:
    rows = list(generate_events(seed=5, accounts=30, events=600, anchor=ANCHOR, client_id=None))  # type: ignore[arg-type]
    logins = [(r["occurred_at"], r["account_id"], r["payload"]["context"]) for r in rows
              if r["kind"] == "login" and r["outcome"] == "success"]
    assert len(logins) > 100

    store = FeatureStore(db_session, brute_force=BruteForceConfig.model_construct())
    for _, account, ctx in sorted(logins, key=lambda login: login[0]):
        store.record_successful_login(account, Context(
            ip=ctx["ip"], device_id=ctx["device_id"], user_agent=ctx["user_agent"], country=ctx["country"],
            lat=ctx["lat"], lon=ctx["lon"], asn=ctx["asn"]))
    db_session.flush()
    in_database = {(r.scope, r.level, r.value): (r.count, r.children)
                   for r in db_session.scalars(select(FamiliarityCount))}

    seeded = {(r["scope"], r["level"], r["value"]): (r["count"], r["children"]) for r in familiarity_rows(logins)}
    assert seeded == in_database
