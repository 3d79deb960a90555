"""Store service-circle polygons uncompressed (``STORAGE EXTERNAL``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23

Circle polygons are arrays of doubles that pglz cannot shrink (measured on the bench city:
168.0 MB raw, 168.0 MB stored), yet PostgreSQL tries to compress every one of them on write:
with ``EXTERNAL`` (out of line, never compressed) a COPY of 1,500 circles takes 0.5 s instead
of 1.1-2.1 s, at no cost in space.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE service_circle ALTER COLUMN geom SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute("ALTER TABLE service_circle ALTER COLUMN geom SET STORAGE MAIN")
