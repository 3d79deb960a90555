"""Users, roles, API keys.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

Placeholder owned by the auth work; it changes nothing yet.
"""

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
