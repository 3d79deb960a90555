"""Open311 GeoReport v2 in full: a request's media_url, and building addresses.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

``incident.media_url`` keeps the photo URL an Open311 client posts (GeoReport ``media_url``);
``building.address`` is the postal address (门牌地址) that locates a request posted with an
``address_string`` and no lat/long. It is matched with case and white space ignored, through
an expression index on that normalised form.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("incident", sa.Column("media_url", sa.Text))
    op.create_check_constraint("incident_media_url_length", "incident",
                               "media_url IS NULL OR length(media_url) <= 2048")
    op.add_column("building", sa.Column("address", sa.Text))
    op.execute("CREATE INDEX ix_building_address_norm ON building"
               " (lower(regexp_replace(address, '\\s+', '', 'g'))) WHERE address IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX ix_building_address_norm")
    op.drop_column("building", "address")
    op.drop_constraint("incident_media_url_length", "incident")
    op.drop_column("incident", "media_url")
