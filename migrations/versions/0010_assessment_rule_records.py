"""Rule results move into their assessment: ``risk_assessments.rules`` (a JSON array) replaces the
``risk_rule_results`` table.

Every scored event wrote 13 rule rows with two index entries each, 13 of its 15 rows; the records are
only ever read with their assessment (timeline, console, review) or counted for the dashboard. Existing
rows are copied in rule order (by their id), so nothing recorded is lost; the downgrade unpacks them again.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from security.types import JSONType

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIELDS = ("rule_id", "outcome", "mode", "points", "detail")

PACK_POSTGRESQL = f"""
UPDATE risk_assessments a SET rules = coalesce((
    SELECT jsonb_agg(jsonb_build_object({", ".join(f"'{f}', r.{f}" for f in FIELDS)}) ORDER BY r.id)
    FROM risk_rule_results r WHERE r.assessment_id = a.id), '[]'::jsonb)
"""
PACK_SQLITE = f"""
UPDATE risk_assessments SET rules = coalesce((
    SELECT json_group_array(json_object({", ".join(f"'{f}', r.{f}" for f in FIELDS)}))
    FROM (SELECT * FROM risk_rule_results WHERE assessment_id = risk_assessments.id ORDER BY id) r), '[]')
"""
UNPACK_POSTGRESQL = f"""
INSERT INTO risk_rule_results (assessment_id, {", ".join(FIELDS)})
SELECT a.id, r.value->>'rule_id', r.value->>'outcome', r.value->>'mode', (r.value->>'points')::integer,
       r.value->>'detail'
FROM risk_assessments a CROSS JOIN LATERAL jsonb_array_elements(a.rules) WITH ORDINALITY AS r(value, n)
ORDER BY a.created_at, a.id, r.n
"""
UNPACK_SQLITE = f"""
INSERT INTO risk_rule_results (assessment_id, {", ".join(FIELDS)})
SELECT a.id, {", ".join(f"json_extract(r.value, '$.{f}')" for f in FIELDS)}
FROM risk_assessments a JOIN json_each(a.rules) r
ORDER BY a.created_at, a.id, r.key
"""


def upgrade() -> None:
    # Plain ALTER TABLE statements (no batch mode): SQLite adds and drops a column in place, where a batch
    # would copy the whole assessment table.
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.add_column("risk_assessments", sa.Column("rules", JSONType, nullable=False, server_default="[]"))
    op.execute(PACK_POSTGRESQL if postgresql else PACK_SQLITE)
    if postgresql:  # the application always writes the records; SQLite cannot drop a default in place
        op.alter_column("risk_assessments", "rules", server_default=None)
    op.drop_index(op.f("ix_risk_rule_results_assessment_id"), table_name="risk_rule_results")
    op.drop_table("risk_rule_results")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "risk_rule_results",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("assessment_id", sa.Uuid(), nullable=False),
        sa.Column("rule_id", sa.String(length=80), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["assessment_id"], ["risk_assessments.id"],
                                name=op.f("fk_risk_rule_results_assessment_id_risk_assessments")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_rule_results")),
    )
    op.create_index(op.f("ix_risk_rule_results_assessment_id"), "risk_rule_results", ["assessment_id"])
    op.execute(UNPACK_POSTGRESQL if postgresql else UNPACK_SQLITE)
    op.drop_column("risk_assessments", "rules")
