"""The transaction probe's amount history and last day, against the rules written out in Python.

The amount history is, of the account's newest ``TX_HISTORY_LIMIT`` transactions of the last year before
the event, those in the event's currency with an amount that went out (outcome not ``block``; no outcome
counts as executed), the newest ``AMOUNT_HISTORY_LIMIT``; the last day is the newest ``TX_HISTORY_LIMIT``
transactions of the 24 hours before the event, every currency and outcome. The database computes both
(only the amounts and the day's rows travel); these tests hold it to the definition on data that
crosses every limit.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from security.db import DriverStatement, table_of
from security.risk.feature_store import (
    AMOUNT_HISTORY_LIMIT,
    DAY,
    TX_HISTORY_LIMIT,
    Context,
    FeatureStore,
    TransactionInput,
    past_transactions,
)
from security.risk.models import RiskEvent
from security.risk.rules import BruteForceConfig

AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ACCOUNT = "history-1"
INSERT = DriverStatement(insert(table_of(RiskEvent)))


def rows(seed: int) -> list[dict[str, Any]]:
    """~800 transactions: older than a year, within it (EUR and USD, some blocked, some without outcome
    or amount), within the last day, and after the event (never history)."""
    rnd = random.Random(seed)
    made: list[dict[str, Any]] = []
    ages = ([timedelta(days=rnd.uniform(366, 500)) for _ in range(40)]
            + [timedelta(days=rnd.uniform(1.01, 360)) for _ in range(650)]
            + [timedelta(hours=rnd.uniform(0.01, 23.99)) for _ in range(60)]
            + [-timedelta(hours=rnd.uniform(0.01, 5)) for _ in range(20)])
    for n, age in enumerate(ages):
        row: dict[str, Any] = {column.name: None for column in table_of(RiskEvent).columns}
        row.update(
            id=uuid.uuid4(), event_id=f"h-{seed}-{n}", kind="transaction", account_id=ACCOUNT,
            occurred_at=AT - age, received_at=AT, payload={},
            currency=rnd.choice(("EUR", "EUR", "USD")),
            amount=None if rnd.random() < 0.03 else f"{rnd.uniform(1, 900):.2f}",
            outcome=rnd.choice(("allow", "allow", "review", "block", None)),
        )
        made.append(row)
    return made


Day = list[tuple[str | None, str, datetime]]


def expected(made: list[dict[str, Any]], currency: str) -> tuple[Counter[str], Day]:
    year = sorted((r for r in made if AT - DAY * 365 <= r["occurred_at"] < AT), key=lambda r: r["occurred_at"],
                  reverse=True)[:TX_HISTORY_LIMIT]
    amounts = [r["amount"] for r in year
               if r["currency"] == currency and r["amount"] is not None and r["outcome"] != "block"]
    day = sorted((r for r in made if AT - DAY < r["occurred_at"] < AT), key=lambda r: r["occurred_at"],
                 reverse=True)[:TX_HISTORY_LIMIT]
    return Counter(amounts[:AMOUNT_HISTORY_LIMIT]), [(r["amount"], r["currency"], r["occurred_at"]) for r in day]


def test_the_probe_reads_exactly_the_defined_history(db_session: Session) -> None:
    made = rows(seed=3)
    INSERT.execute(db_session, made)
    store = FeatureStore(db_session, brute_force=BruteForceConfig.model_construct())

    for currency in ("EUR", "USD", "GBP"):
        tx = TransactionInput(amount=Decimal("5"), currency=currency, destination_address="0xabc",
                              destination_country=None, balance_before=None)
        probe = store.transaction_probe(account_id=ACCOUNT, tx=tx, ctx=Context(), occurred_at=AT, received_at=AT,
                                        client_id=uuid.uuid4(), event_id="not-stored")
        amounts, day = expected(made, currency)

        assert Counter(probe.amounts) == amounts
        assert [(p.amount, p.currency, p.occurred_at) for p in past_transactions(probe.last_day)] == day
    # The data crosses every limit the definition has.
    year = [r for r in made if AT - DAY * 365 <= r["occurred_at"] < AT]
    assert len(year) > TX_HISTORY_LIMIT
    assert expected(made, "EUR")[0].total() == AMOUNT_HISTORY_LIMIT  # more EUR payments than it keeps
    assert 0 < expected(made, "USD")[0].total() < AMOUNT_HISTORY_LIMIT
