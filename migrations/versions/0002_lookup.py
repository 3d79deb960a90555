"""Point-lookup index versioning.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

The in-process lookup index (geo/lookup.py) must be rebuilt when areas, generations or grid
teams change. Each write statement to those tables appends one row to ``lookup_change`` (a
statement-level trigger; inserts never block each other) and sends ``NOTIFY wangge_lookup``
(delivered at commit). The index's version is ``(count(*), max(id))`` of that log: visible to
other sessions only once the writing transaction commits, unchanged by rolled-back writes, and
different after any committed write, whatever the commit order.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("area", "generation", "grid_team_member")


def upgrade() -> None:
    op.execute(
        "CREATE TABLE lookup_change ("
        " id bigserial PRIMARY KEY,"
        " table_name text NOT NULL,"
        " changed_at timestamptz NOT NULL DEFAULT now())"
    )
    op.execute(
        """
        CREATE FUNCTION lookup_change_log() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO lookup_change (table_name) VALUES (TG_TABLE_NAME);
            PERFORM pg_notify('wangge_lookup', TG_TABLE_NAME);
            RETURN NULL;
        END
        $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_lookup_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION lookup_change_log()"
        )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_lookup_change ON {table}")
    op.execute("DROP FUNCTION IF EXISTS lookup_change_log()")
    op.execute("DROP TABLE IF EXISTS lookup_change")
