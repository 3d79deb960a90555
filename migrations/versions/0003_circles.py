"""Service-circle runs, circles, coverage and siting results.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

``analysis_run`` records every run (its kind, parameters, the generation it read, when it
started and finished, and its status); the result tables hang off it and are read by run id.
Circles are MultiPolygons in EPSG:4326; tiers are network distances in metres.
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analysis_run",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("params", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column("generation_id", sa.Integer, sa.ForeignKey("generation.id")),
        sa.Column("source_run_id", sa.BigInteger, sa.ForeignKey("analysis_run.id")),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.Text, nullable=False, server_default="running"),
        sa.Column("summary", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.CheckConstraint("kind IN ('circles', 'coverage', 'siting')", name="run_kind_known"),
        sa.CheckConstraint("status IN ('running', 'done', 'failed')", name="run_status_known"),
    )
    op.create_index("ix_analysis_run_kind", "analysis_run", ["kind", "id"])

    op.create_table(
        "service_circle",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("run_id", sa.BigInteger, sa.ForeignKey("analysis_run.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("station_id", sa.BigInteger, nullable=False),
        sa.Column("tier_m", sa.Float, nullable=False),
        sa.Column("tier_min", sa.Float, nullable=False),
        sa.Column("reached_pieces", sa.Integer, nullable=False, server_default="0"),
        sa.Column("geom", Geometry("MULTIPOLYGON", srid=4326, spatial_index=False),
                  nullable=False),
    )
    op.create_index("ix_service_circle_run", "service_circle", ["run_id", "tier_m", "station_id"])
    op.create_index("ix_service_circle_geom", "service_circle", ["geom"], postgresql_using="gist")

    op.create_table(
        "building_coverage",
        sa.Column("run_id", sa.BigInteger, sa.ForeignKey("analysis_run.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("building_id", sa.BigInteger, primary_key=True),
        sa.Column("covered", sa.Boolean, nullable=False),
        sa.Column("station_ids", postgresql.ARRAY(sa.BigInteger), nullable=False,
                  server_default="{}"),
        sa.Column("kinds", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
    )
    op.execute(
        "CREATE INDEX ix_building_coverage_uncovered ON building_coverage (run_id) "
        "WHERE NOT covered"
    )

    op.create_table(
        "site_suggestion",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("run_id", sa.BigInteger, sa.ForeignKey("analysis_run.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("node_id", sa.BigInteger),
        sa.Column("building_id", sa.BigInteger),
        sa.Column("gain_residents", sa.Float, nullable=False),
        sa.Column("cumulative_residents", sa.Float, nullable=False),
        sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
        sa.CheckConstraint("method IN ('mclp', 'greedy')", name="site_method_known"),
    )
    op.create_index("ix_site_suggestion_run", "site_suggestion", ["run_id", "method", "rank"])


def downgrade() -> None:
    for table in ("site_suggestion", "building_coverage", "service_circle", "analysis_run"):
        op.drop_table(table)
