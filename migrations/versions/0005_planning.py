"""Grid editing: retired codes, building moves, change log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

* ``retired_code``: every area code a planning change retired (split, merge, import). A trigger
  on ``area`` refuses any new version carrying a retired code, so a code is never reused.
* ``building_move``: each change of ``building.grid_code`` made by a planning change
  (generation it happened in, from and to grid), so that a diff between generations lists the
  buildings moved even when the assignment, not the geometry, changed.
* ``planning_change``: one row per accepted change (operation, parameters, summary).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retired_code",
        sa.Column("code", sa.String(15), primary_key=True),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("generation_id", sa.Integer, sa.ForeignKey("generation.id"), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    op.execute(
        """
        CREATE FUNCTION area_refuse_retired_code() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM retired_code r WHERE r.code = NEW.code) THEN
                RAISE EXCEPTION 'area code % was retired and may not be reused', NEW.code
                    USING ERRCODE = 'unique_violation';
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER area_retired_code BEFORE INSERT ON area "
        "FOR EACH ROW EXECUTE FUNCTION area_refuse_retired_code()"
    )
    op.create_table(
        "building_move",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("generation_id", sa.Integer, sa.ForeignKey("generation.id"), nullable=False),
        sa.Column("building_code", sa.Text, nullable=False),
        sa.Column("from_grid", sa.String(15)),
        sa.Column("to_grid", sa.String(15)),
    )
    op.create_index("ix_building_move_generation", "building_move", ["generation_id"])
    op.create_table(
        "planning_change",
        sa.Column("generation_id", sa.Integer, sa.ForeignKey("generation.id"), primary_key=True),
        sa.Column("operation", sa.Text, nullable=False),
        sa.Column("params", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("summary", postgresql.JSONB, nullable=False, server_default="{}"),
    )


def downgrade() -> None:
    op.drop_table("planning_change")
    op.drop_table("building_move")
    op.execute("DROP TRIGGER IF EXISTS area_retired_code ON area")
    op.execute("DROP FUNCTION IF EXISTS area_refuse_retired_code()")
    op.drop_table("retired_code")
