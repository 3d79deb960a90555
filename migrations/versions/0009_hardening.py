"""Hardening: token revocation, roles on API keys, shared counters (rate limits, sign-in).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

``app_user.tokens_valid_after``: tokens issued before it are refused (disable, revoke).
``api_key.role``/``area_code``: a key that acts as a user of that role (a GIS client), and
``rotated_at``. ``rate_counter``: requests (and failed sign-ins) per key and time window, shared
by every worker; each worker adds its counts in batches.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

KEY_ROLES = ["grid_worker", "planner", "commander"]


def upgrade() -> None:
    op.add_column("app_user", sa.Column("tokens_valid_after", sa.DateTime(timezone=True)))
    op.add_column("app_user", sa.Column("disabled_at", sa.DateTime(timezone=True)))
    op.add_column("api_key", sa.Column("role", sa.Text))
    op.add_column("api_key", sa.Column("area_code", sa.String(15)))
    op.add_column("api_key", sa.Column("rotated_at", sa.DateTime(timezone=True)))
    op.create_check_constraint(
        "api_key_role_known", "api_key",
        "role IS NULL OR role IN (" + ", ".join(repr(r) for r in KEY_ROLES) + ")")
    op.create_check_constraint("api_key_role_has_area", "api_key",
                               "role IS NULL OR area_code ~ '^[0-9]{6}([0-9]{3}){0,3}$'")
    op.create_table(
        "rate_counter",
        sa.Column("bucket", sa.Text, nullable=False),
        sa.Column("window_start", sa.BigInteger, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("bucket", "window_start"),
    )


def downgrade() -> None:
    op.drop_table("rate_counter")
    op.drop_constraint("api_key_role_has_area", "api_key")
    op.drop_constraint("api_key_role_known", "api_key")
    for col in ("rotated_at", "area_code", "role"):
        op.drop_column("api_key", col)
    op.drop_column("app_user", "disabled_at")
    op.drop_column("app_user", "tokens_valid_after")
