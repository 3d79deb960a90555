"""Users, roles and API keys.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

A user's scope is an area code (district 6, street 9, community 12 or grid 15 digits): since
codes nest by prefix, "inside my area" is ``code LIKE scope || '%'``.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ROLES = ["resident", "grid_worker", "department_staff", "planner", "commander", "admin"]


def upgrade() -> None:
    op.create_table(
        "app_user",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("username", sa.Text, nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("area_code", sa.String(15)),
        sa.Column("department_id", sa.Integer, sa.ForeignKey("department.id")),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.CheckConstraint("role IN (" + ", ".join(repr(r) for r in ROLES) + ")",
                           name="app_user_role_known"),
        sa.CheckConstraint("area_code IS NULL OR area_code ~ '^[0-9]{6}([0-9]{3}){0,3}$'",
                           name="app_user_area_code_rule"),
        sa.CheckConstraint(
            "role NOT IN ('grid_worker', 'planner', 'commander') OR area_code IS NOT NULL",
            name="app_user_scoped_roles_have_area",
        ),
        sa.CheckConstraint("role <> 'department_staff' OR department_id IS NOT NULL",
                           name="app_user_staff_have_department"),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("key_prefix", sa.String(12), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", postgresql.ARRAY(sa.Text), nullable=False,
                  server_default="{lookup,open311}"),
        sa.Column("rate_per_minute", sa.Integer, nullable=False, server_default="6000"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("api_key")
    op.drop_table("app_user")
