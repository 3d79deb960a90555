"""Buildings answer the grid in force now: the view ``building_now``.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02

A planning change moves buildings (``building.grid_code``) when it is saved, also when it is
scheduled (``effective_from`` in the future), and logs each move in ``building_move``. Planning
builds on that latest state; every other reader of a building's grid (layers, maps, statistics,
OGC collections, coverage by level) reads ``building_now``: the same columns as ``building``,
with ``grid_code`` the grid in force now. A building with moves in generations not yet in force
(id > ``generation_at(clock_timestamp())``, the rule ``area_current`` uses) is in the grid it
left in the earliest of them (NULL if it had none): a later change is never dated before a scheduled one, so that
``from_grid`` is the grid in force. Nothing pending: an index range scan of
``ix_building_move_generation`` finds no row and the view reads ``building`` as it is.
At the instant a change takes effect the view answers its grids, without a restart. A column
later added to ``building`` must be added here too (CREATE OR REPLACE VIEW, appended last).
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

VIEW = """
CREATE VIEW building_now AS
WITH pending AS (
    SELECT DISTINCT ON (m.building_code) m.building_code, m.from_grid
    FROM building_move m
    WHERE m.generation_id > coalesce((SELECT generation_at(clock_timestamp())), 0)
    ORDER BY m.building_code, m.generation_id, m.id
)
SELECT b.id, b.code, b.name, b.compound_id, b.location, b.footprint, b.households,
       b.residents, b.floors, CASE WHEN p.building_code IS NULL THEN b.grid_code
            ELSE p.from_grid END::varchar(15) AS grid_code,
       b.source, b.properties, b.address, b.district_code
FROM building b LEFT JOIN pending p ON p.building_code = b.code
"""


def upgrade() -> None:
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW building_now")
