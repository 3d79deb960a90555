"""Who reported: the signed-in user behind a report, for residents' "my reports".

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

``incident.reporter_user_id`` (nullable: Open311 systems and anonymous intake have no user)
with a partial index, so that a resident's list is an index scan however many cases exist.

Area scopes (grid worker, commander) need no new index: a code prefix is queried as the range
``grid_code >= p AND grid_code < next(p)``, which the existing btree indexes on
``(grid_code, reported_at)`` and ``(grid_code, resolve_due) WHERE is_open`` serve (the
database's C.UTF-8 collation is not "C" to the planner, so ``LIKE 'p%'`` alone could not use
them). A department is a tenth of all cases: its newest-first list and its overdue list are
served by walking a btree in order and stopping at the limit, so two are added:
``(reported_at)`` (the BRIN of 0004 cannot give order; the unscoped list gains too) and
``(resolve_due) WHERE is_open``. Measured at 2 M cases: docs/sections/security.md.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("incident", sa.Column("reporter_user_id", sa.BigInteger,
                                        sa.ForeignKey("app_user.id"), nullable=True))
    op.execute("CREATE INDEX ix_incident_reporter_user ON incident (reporter_user_id, reported_at)"
               " WHERE reporter_user_id IS NOT NULL")
    op.execute("CREATE INDEX ix_incident_reported_at ON incident (reported_at)")
    op.execute("CREATE INDEX ix_incident_open_due ON incident (resolve_due) WHERE is_open")


def downgrade() -> None:
    op.execute("DROP INDEX ix_incident_open_due")
    op.execute("DROP INDEX ix_incident_reported_at")
    op.execute("DROP INDEX ix_incident_reporter_user")
    op.drop_column("incident", "reporter_user_id")
