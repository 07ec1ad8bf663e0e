"""The familiarity counter read: exact keys, the account's own rows and the global shards summed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from security.risk.feature_store import (
    GLOBAL_SCOPE,
    TOTAL_ROW,
    USER_LEVEL,
    Context,
    FeatureStore,
    Tally,
    _count_key_params,
    _counts_statement,
    counter_keys,
    global_shard,
)
from security.risk.rules import BruteForceConfig

HOME = Context(ip="10.1.2.3", device_id="phone-1", country="DE", asn="AS3320")
OTHER = Context(ip="192.0.2.9", device_id="laptop-7", country="FR", asn="AS3215")


def store(session: Session) -> FeatureStore:
    return FeatureStore(session, brute_force=BruteForceConfig.model_construct())


def logins(session: Session, accounts: list[str], *first_account: Context) -> None:
    """A login from HOME for every account, then the first account's logins from ``first_account``."""
    writer = store(session)
    for account in accounts:
        writer.record_successful_login(account, HOME)
    for ctx in first_account:
        writer.record_successful_login(accounts[0], ctx)
    session.flush()


def test_reads_own_rows_and_sums_the_shards(db_session: Session) -> None:
    # Accounts spread over different shards, some sharing the IP: the global figures are sums over shards.
    accounts = [f"acct-{n}" for n in range(12)]
    assert len({global_shard(a) for a in accounts}) > 1
    logins(db_session, accounts, HOME, OTHER)

    me = accounts[0]
    counts = store(db_session)._counts(me, counter_keys(me, HOME))

    assert counts[(me, "ip", "10.1.2.3")] == Tally(2, 0)  # this account's own logins from the IP
    assert counts[(GLOBAL_SCOPE, "ip", "10.1.2.3")].count == len(accounts) + 1  # every shard, summed
    assert counts[(GLOBAL_SCOPE, USER_LEVEL, TOTAL_ROW)].count == len(accounts) + 2
    assert counts[(GLOBAL_SCOPE, USER_LEVEL, me)].count == 3
    assert counts[(me, "device", "phone-1")].count == 2
    assert (me, "device", "laptop-7") not in counts  # not asked for: exact keys only
    # Presence in the account's own shard (the counter update needs it), with zero tallies.
    assert counts[(global_shard(me), "ip", "10.1.2.3")] == Tally(0, 0)

    stranger = "acct-never-seen"
    fresh = store(db_session)._counts(stranger, counter_keys(stranger, OTHER))
    assert all(scope != stranger for scope, _, _ in fresh)  # no rows of its own yet
    assert fresh[(GLOBAL_SCOPE, "ip", "192.0.2.9")].count == 1  # but the population's


@pytest.mark.postgres
def test_shard_rows_are_read_through_the_partial_index(db_session: Session) -> None:
    """The counter read repeats the partial index's predicate word for word, so PostgreSQL can use it
    (also in the generic plan of the prepared statement); through the primary key it would need one
    descent per shard and key."""
    shape, params = _count_key_params("acct-1", counter_keys("acct-1", HOME))
    statement = _counts_statement(shape, sqlite=False).statement.compile(bind=db_session.get_bind())
    db_session.execute(text("SET LOCAL enable_seqscan = off"))  # the test table is tiny
    plan = "\n".join(db_session.connection().exec_driver_sql(f"EXPLAIN {statement}", params).scalars())
    assert "ix_risk_familiarity_counts_shards" in plan
    assert "pk_risk_familiarity_counts" in plan  # the account's own rows


@pytest.mark.parametrize("ctx", [
    HOME, OTHER, Context(device_id="phone-1"), Context(country="de"),
    Context(ip="10.1.2.3", user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
], ids=["home", "other", "device-only", "country-only", "ip-and-browser"])
def test_the_login_probe_reads_the_same_counters_in_its_round_trip(db_session: Session, ctx: Context) -> None:
    """A login's feature probe carries the counter read as a JSON column (one round trip less); it must
    give exactly what the read of its own gives, for the account and for one never seen."""
    accounts = [f"acct-{n}" for n in range(6)]
    logins(db_session, accounts, OTHER, ctx)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    for account in (accounts[0], "acct-never-seen"):
        expected = store(db_session)._counts(account, counter_keys(account, ctx))
        assert expected  # the global rows at least
        reader = FeatureStore(db_session, brute_force=BruteForceConfig.model_construct(ip_window_seconds=900))
        reader.login_probe(account_id=account, ctx=ctx, occurred_at=now, received_at=now)
        assert reader._read[(account, ctx)] == expected, account
        # ... and the features use it without another read.
        assert reader.familiarity_features(account, ctx)[2] is reader._read[(account, ctx)]
