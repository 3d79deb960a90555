"""Per-building walking distances per coverage run; analysis runs queue with progress.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

``building_coverage`` gains, for coverage runs computed from network distances, each
building's walking distance (m) to the nearest station of every kind and that station's id,
as arrays aligned with the run's ``params.kinds`` (NULL: none within the run's distance limit).
``analysis_run`` becomes the job queue of long analyses: status ``queued`` (waiting for a
runner), ``running`` (with ``progress`` in [0, 1] and ``heartbeat_at``), ``done`` or
``failed`` (the reason in ``summary.error``); ``requested_by`` names who asked.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("building_coverage", sa.Column("distance_m", postgresql.ARRAY(sa.Float(24))))
    op.add_column("building_coverage",
                  sa.Column("nearest_station_ids", postgresql.ARRAY(sa.BigInteger)))
    op.add_column("analysis_run", sa.Column("progress", sa.Float, nullable=False,
                                            server_default="0"))
    op.add_column("analysis_run", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))
    op.add_column("analysis_run", sa.Column("requested_by", sa.Text))
    op.drop_constraint("run_status_known", "analysis_run", type_="check")
    op.create_check_constraint("run_status_known", "analysis_run",
                               "status IN ('queued', 'running', 'done', 'failed')")
    op.execute("CREATE INDEX ix_analysis_run_waiting ON analysis_run (id) "
               "WHERE status IN ('queued', 'running')")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_analysis_run_waiting")
    op.execute("DELETE FROM analysis_run WHERE status = 'queued'")
    op.drop_constraint("run_status_known", "analysis_run", type_="check")
    op.create_check_constraint("run_status_known", "analysis_run",
                               "status IN ('running', 'done', 'failed')")
    for col in ("requested_by", "heartbeat_at", "progress"):
        op.drop_column("analysis_run", col)
    op.drop_column("building_coverage", "nearest_station_ids")
    op.drop_column("building_coverage", "distance_m")
