"""Familiarity counters: a partial index over the global shards' rows, by (level, value).

A login reads ~20 (level, value) keys, each summed over the 16 global shards. Through the primary key
(scope, level, value) that is one index descent per key and shard (~350, ~1 ms on PostgreSQL); through
this index, one per key. Only the shard rows are indexed (scope starts with "*"), so the index stays
small and updating a counter's count (the hot write) still touches no indexed column.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_risk_familiarity_counts_shards"


def upgrade() -> None:
    op.create_index(INDEX, "risk_familiarity_counts", ["level", "value", "scope"],
                    postgresql_where=sa.text("left(scope, 1) = '*'"),
                    sqlite_where=sa.text("substr(scope, 1, 1) = '*'"))


def downgrade() -> None:
    op.drop_index(INDEX, table_name="risk_familiarity_counts")
