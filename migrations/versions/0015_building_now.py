"""Buildings answer the grid in force now: the view ``building_now``.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

A planning change moves buildings (``building.grid_code``) when it is saved, also when it is
scheduled (``effective_from`` in the future), and logs each move in ``building_move``. Planning
builds on that latest state; every other reader of a building's grid (layers, maps, statistics,
OGC collections, coverage by level) reads ``building_now``: the same columns as ``building``,
with ``grid_code`` the grid in force now.

* A building with moves in generations not yet in force (id > ``generation_at(clock_timestamp())``,
  the rule ``area_current`` uses) is in the grid it left in the earliest of them (NULL if it had
  none): a later change is never dated before a scheduled one, so that ``from_grid`` is the grid
  in force. At the instant a change takes effect the view answers its grids, without a restart.
* Two branches (UNION ALL): the buildings with nothing pending keep ``b.grid_code``, so a
  condition on ``grid_code`` (scoping by code range) still uses ``ix_building_grid_code``; the
  pending moves are one index range scan of ``ix_building_move_generation``, empty when nothing
  is scheduled (then the view costs an anti-join against no row).
* A column later added to ``building`` must be added to ``COLUMNS`` (CREATE OR REPLACE VIEW,
  appended last).
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

COLUMNS = ("b.id, b.code, b.name, b.compound_id, b.location, b.footprint, b.households,\n"
           "       b.residents, b.floors, {g}, b.source, b.properties, b.address, b.district_code")
VIEW = f"""
CREATE VIEW building_now AS
WITH pending AS MATERIALIZED (
    SELECT DISTINCT ON (m.building_code) m.building_code, m.from_grid
    FROM building_move m
    WHERE m.generation_id > coalesce((SELECT generation_at(clock_timestamp())), 0)
    ORDER BY m.building_code, m.generation_id, m.id
)
SELECT {COLUMNS.format(g="b.grid_code")}
FROM building b WHERE NOT EXISTS (SELECT 1 FROM pending p WHERE p.building_code = b.code)
UNION ALL
SELECT {COLUMNS.format(g="p.from_grid")}
FROM pending p JOIN building b ON b.code = p.building_code
"""


def upgrade() -> None:
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW building_now")
