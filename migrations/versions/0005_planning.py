"""Grid editing: retired codes, change log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

Placeholder owned by the planning work; it changes nothing yet.
"""

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
