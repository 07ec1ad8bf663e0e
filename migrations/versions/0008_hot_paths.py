"""Hot paths: covering account-history index, HOT-friendly familiarity counters (PostgreSQL).

* ``ix_risk_events_account_kind_time`` also carries the columns the feature queries read (amount,
  currency, outcome, coordinates, change), so a transaction's amount history and the travel and
  sensitive-change probes are index-only scans instead of one heap fetch per stored event.
* ``risk_familiarity_counts`` is rewritten on every successful login (a few rows per login, the global
  shard rows by every login of their shard). Half-empty pages let PostgreSQL update them in place (HOT:
  no new index entries) and a low autovacuum threshold keeps the version chains short.

SQLite has neither INCLUDE nor fillfactor; nothing changes there.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_risk_events_account_kind_time"
KEY = ["account_id", "kind", "occurred_at"]
COVERED = ["amount", "currency", "outcome", "lat", "lon", "change"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(INDEX, table_name="risk_events")
    op.create_index(INDEX, "risk_events", KEY, postgresql_include=COVERED)
    op.execute("ALTER TABLE risk_familiarity_counts SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, "
               "autovacuum_vacuum_threshold = 5000)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE risk_familiarity_counts RESET (fillfactor, autovacuum_vacuum_scale_factor, "
               "autovacuum_vacuum_threshold)")
    op.drop_index(INDEX, table_name="risk_events")
    op.create_index(INDEX, "risk_events", KEY)
