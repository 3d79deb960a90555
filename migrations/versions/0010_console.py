"""The console's command map refreshes by "cases changed since": an index on updated_at.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_incident_updated ON incident (updated_at)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_incident_updated")
