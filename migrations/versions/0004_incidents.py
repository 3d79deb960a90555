"""Incident workflow, history, SLAs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Placeholder owned by the incidents work; it changes nothing yet.
"""

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
