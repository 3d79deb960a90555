"""Service-circle runs, circles, coverage and siting results.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Placeholder owned by the circles work; it changes nothing yet.
"""

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
