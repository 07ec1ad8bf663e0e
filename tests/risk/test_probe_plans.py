"""SQLite answers the feature probes from its indexes, with the statistics of a big history.

With a year of history per account (1M stored events over 10k accounts in the benchmark) a probe that
visits one table row per stored event costs several times one that reads an index alone: the amount
history was 0.33 of the transaction probe's 0.50 ms, and the planner answered "paid this address
before?" through the history index, reading the account's transactions one by one. These run on a
scratch SQLite database whatever the test backend is; PostgreSQL's plans are in bench/README.md and its
covering columns are checked in tests/test_migrations.py.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects import sqlite

from security.migrate import upgrade
from security.risk.feature_store import PROBE_IP_FAILURES, PROBE_STORED_ANSWER, PROBE_TRANSACTION, probe_statement

# sqlite_stat1 of the benchmark's SQLite database after a full run (1,024,543 events, 10k accounts):
# rows per distinct key prefix, as ANALYZE wrote them.
BIG_HISTORY_STATS = {
    "ix_risk_events_account_kind_time": "1024543 103 36 1 1 1 1 1 1 1 1",
    "ix_risk_events_account_destination": "1024543 103 9 8 1",
    "ix_risk_events_ip_outcome_received": "1024543 51 22 1",
    "ix_risk_events_account_outcome_received": "1024543 103 40 1",
    "sqlite_autoindex_risk_events_2": "1024543 170758 1",
    "sqlite_autoindex_risk_events_1": "1024543 1",
}


@pytest.fixture(scope="module")
def big_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    """A migrated, empty SQLite database whose planner statistics are those of a big history."""
    path = Path(tmp_path_factory.mktemp("plans")) / "plans.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    connection = sqlite3.connect(path)
    connection.execute("ANALYZE")  # creates sqlite_stat1
    connection.execute("DELETE FROM sqlite_stat1 WHERE tbl = 'risk_events'")
    connection.executemany("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('risk_events', ?, ?)",
                           BIG_HISTORY_STATS.items())
    connection.commit()
    connection.execute("ANALYZE sqlite_schema")  # re-reads the statistics
    yield connection
    connection.close()


def plan(connection: sqlite3.Connection, *parts: str) -> list[str]:
    """The EXPLAIN QUERY PLAN lines of the probe with ``parts`` that read ``risk_events`` (alias ``e``)."""
    sql = str(probe_statement(*parts, sqlite=True).compile(dialect=sqlite.dialect()))
    rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", [None] * sql.count("?")).fetchall()
    return [row[3] for row in rows if re.match(r"(SEARCH|SCAN) e\b", row[3])]


def test_the_statistics_are_the_big_history_s(big_history: sqlite3.Connection) -> None:
    stored = dict(big_history.execute("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'risk_events'").fetchall())
    assert stored == BIG_HISTORY_STATS  # every index of the table has its line, none is left over


@pytest.mark.parametrize("parts", [
    (PROBE_TRANSACTION, PROBE_STORED_ANSWER), (PROBE_IP_FAILURES, PROBE_STORED_ANSWER), (),
], ids=["transaction", "login", "bare"])
def test_history_reads_never_visit_the_table(big_history: sqlite3.Connection, parts: tuple[str, ...]) -> None:
    """Travel neighbours, the latest sensitive change, the amount history and the last day are read from
    the history index alone (it carries their columns)."""
    lines = plan(big_history, *parts)
    assert lines, "the probe reads risk_events"
    assert not [line for line in lines if line.startswith("SCAN")]
    history = [line for line in lines if "ix_risk_events_account_kind_time" in line]
    assert len(history) == (5 if PROBE_TRANSACTION in parts else 2)  # before, after (+ change, amounts, day)
    assert all("USING COVERING INDEX" in line for line in history), history


def test_paid_before_is_one_probe_of_the_destination_index(big_history: sqlite3.Connection) -> None:
    lines = plan(big_history, PROBE_TRANSACTION)
    destination = [line for line in lines if "destination_address" in line]
    assert destination == ["SEARCH e USING INDEX ix_risk_events_account_destination "
                           "(account_id=? AND destination_address=? AND kind=? AND occurred_at<?)"]


def test_the_stored_answer_and_ip_failures_use_their_own_keys(big_history: sqlite3.Connection) -> None:
    lines = plan(big_history, PROBE_IP_FAILURES, PROBE_STORED_ANSWER)
    assert "SEARCH e USING INDEX sqlite_autoindex_risk_events_2 (client_id=? AND event_id=?)" in lines
    assert any(line.startswith("SEARCH e USING INDEX ix_risk_events_ip_outcome_received (ip=? AND outcome=?")
               for line in lines)
