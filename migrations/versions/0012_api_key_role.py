"""API keys that carry a role (and an area or department), for GIS clients.

Revision ID: 0012
Revises: 0008
Create Date: 2026-12-02

A key with a role acts as a user of that role (same area scope rules): QGIS or GDAL can then
read the layers with an API key sent as the HTTP Basic password. Keys without a role keep
their scopes only.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_key", sa.Column("role", sa.Text))
    op.add_column("api_key", sa.Column("area_code", sa.String(15)))
    op.add_column("api_key", sa.Column("department_id", sa.Integer,
                                       sa.ForeignKey("department.id")))
    op.create_check_constraint(
        "api_key_role_known", "api_key",
        "role IS NULL OR role IN ('resident', 'grid_worker', 'department_staff', 'planner', "
        "'commander', 'admin')")


def downgrade() -> None:
    op.drop_constraint("api_key_role_known", "api_key")
    op.drop_column("api_key", "department_id")
    op.drop_column("api_key", "area_code")
    op.drop_column("api_key", "role")
