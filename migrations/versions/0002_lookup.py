"""Point-lookup index versioning.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Placeholder owned by the lookup work; it changes nothing yet.
"""

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
