"""Scheduled boundary changes answer from the generation in force now; an audit trail.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

* ``area_current`` becomes the areas of the generation *in force now* (``generation_at(now())``),
  not the latest versions: a change with a future ``effective_from`` is scheduled, and every
  reader of ``area_current`` (layers, maps, statistics, scoping, routing) keeps answering from
  today's grids until its instant. Planning writes still build on the latest versions
  (``generation_high IS NULL``), so a later change follows a scheduled one.
* ``planning_change.actor``: who made each accepted change (``generation.author`` is also set).
* ``audit_log``: who did what and when, for routing-table and SLA edits, user and key changes
  and 督办 (urges); ``detail`` holds the parameters (never secrets).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

IN_FORCE = (
    "CREATE OR REPLACE VIEW area_current AS SELECT a.* FROM area a "
    "WHERE a.generation_low <= (SELECT generation_at(clock_timestamp())) "
    "AND coalesce(a.generation_high, 2147483647) >= (SELECT generation_at(clock_timestamp()))"
)


def upgrade() -> None:
    op.execute(IN_FORCE)
    op.add_column("planning_change", sa.Column("actor", sa.Text))
    op.add_column("planning_change", sa.Column(
        "recorded_at", sa.DateTime(timezone=True), nullable=False,
        server_default=sa.text("clock_timestamp()")))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("clock_timestamp()")),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("detail", postgresql.JSONB, nullable=False, server_default="{}"),
    )
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"])
    op.create_index("ix_generation_effective_from", "generation", ["effective_from"])


def downgrade() -> None:
    op.drop_index("ix_generation_effective_from", "generation")
    op.drop_table("audit_log")
    op.drop_column("planning_change", "recorded_at")
    op.drop_column("planning_change", "actor")
    op.execute("CREATE OR REPLACE VIEW area_current AS SELECT * FROM area "
               "WHERE generation_high IS NULL")
