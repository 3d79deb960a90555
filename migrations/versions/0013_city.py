"""A city, not a district: province and city areas, per-district imports, the city level.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

* ``area.level`` gains ``province`` (2 digits) and ``city`` (4 digits: 市, 州, 盟) above the
  district (GB/T 2260). A city's parent is its province, a district's its city (both may stay
  NULL: the hierarchy is the code prefix). Province and city rows need no ``metric_srid``.
* ``generation.districts``: the 6-digit district codes a generation changed (NULL: unknown,
  generations written before this migration).
* ``district_code`` on building, station, walk_edge and barrier: the district a row belongs to,
  so that importing district B replaces only B's rows (backfilled from codes, else spatially).
* ``app_user.area_code`` may be a province (2) or city (4) code; departments and incident
  escalation gain the ``city`` level (市级部门, 市委督单).
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

LEVELS = ["province", "city", "district", "street", "community", "grid"]
DISTRICT_TABLES = ("building", "station", "walk_edge", "barrier")
CURRENT_DISTRICT = (
    "(SELECT a.code FROM area a WHERE a.level = 'district' AND a.generation_high IS NULL "
    "AND ST_Intersects(a.geom, {point}) ORDER BY a.code LIMIT 1)"
)


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.drop_constraint("area_level_known", "area", type_="check")
    op.drop_constraint("area_code_rule", "area", type_="check")
    op.drop_constraint("area_parent_is_prefix", "area", type_="check")
    op.create_check_constraint("area_level_known", "area", _in("level", LEVELS))
    op.create_check_constraint(
        "area_code_rule", "area",
        "(level = 'province' AND length(code) = 2)"
        " OR (level = 'city' AND length(code) = 4)"
        " OR (level = 'district' AND length(code) = 6 AND metric_srid IS NOT NULL)"
        " OR (level = 'street' AND length(code) = 9"
        "   AND substr(code, 7, 3)::int BETWEEN 1 AND 399)"
        " OR (level = 'community' AND length(code) = 12 AND substr(code, 10, 3)::int >= 1)"
        " OR (level = 'grid' AND length(code) = 15 AND substr(code, 13, 3)::int >= 1"
        "   AND responsible_body IS NOT NULL)",
    )
    op.create_check_constraint(
        "area_parent_is_prefix", "area",
        "(level = 'province' AND parent_code IS NULL)"
        " OR (level IN ('city', 'district') AND (parent_code IS NULL"
        "     OR parent_code = left(code, length(code) - 2)))"
        " OR (level IN ('street', 'community', 'grid')"
        "     AND parent_code = left(code, length(code) - 3))",
    )
    op.add_column("generation", sa.Column("districts", sa.ARRAY(sa.String(6))))
    for table in DISTRICT_TABLES:
        op.add_column(table, sa.Column("district_code", sa.String(6)))
        op.create_index(f"ix_{table}_district_code", table, ["district_code"])
    op.execute("UPDATE building SET district_code = left(grid_code, 6) "
               "WHERE grid_code IS NOT NULL")
    op.execute("UPDATE station SET district_code = left(community_code, 6) "
               "WHERE community_code IS NOT NULL")
    for table, point in (
        ("building", "building.location"),
        ("station", "station.location"),
        ("walk_edge", "ST_LineInterpolatePoint(ST_GeometryN(walk_edge.geom, 1), 0.5)"),
        ("barrier", "ST_PointOnSurface(barrier.geom)"),
    ):
        op.execute(f"UPDATE {table} SET district_code = {CURRENT_DISTRICT.format(point=point)} "
                   "WHERE district_code IS NULL")

    op.drop_constraint("app_user_area_code_rule", "app_user", type_="check")
    op.create_check_constraint(
        "app_user_area_code_rule", "app_user",
        "area_code IS NULL OR area_code ~ '^[0-9]{2}([0-9]{2}){0,2}([0-9]{3}){0,3}$' "
        "AND length(area_code) IN (2, 4, 6, 9, 12, 15)",
    )
    op.drop_constraint("department_level_known", "department", type_="check")
    op.create_check_constraint(
        "department_level_known", "department",
        _in("level", ["grid", "community", "street", "district", "city"]))
    op.drop_constraint("incident_level_known", "incident", type_="check")
    op.create_check_constraint(
        "incident_level_known", "incident",
        _in("escalation_level", ["grid", "street", "district", "city"]))


def downgrade() -> None:
    op.execute("DELETE FROM area WHERE level IN ('province', 'city')")
    op.drop_constraint("incident_level_known", "incident", type_="check")
    op.execute("UPDATE incident SET escalation_level = 'district' "
               "WHERE escalation_level = 'city'")
    op.create_check_constraint("incident_level_known", "incident",
                               _in("escalation_level", ["grid", "street", "district"]))
    op.drop_constraint("department_level_known", "department", type_="check")
    op.execute("UPDATE department SET level = 'district' WHERE level = 'city'")
    op.create_check_constraint("department_level_known", "department",
                               _in("level", ["grid", "community", "street", "district"]))
    op.drop_constraint("app_user_area_code_rule", "app_user", type_="check")
    op.create_check_constraint("app_user_area_code_rule", "app_user",
                               "area_code IS NULL OR area_code ~ '^[0-9]{6}([0-9]{3}){0,3}$'")
    for table in DISTRICT_TABLES:
        op.drop_index(f"ix_{table}_district_code", table_name=table)
        op.drop_column(table, "district_code")
    op.drop_column("generation", "districts")
    op.drop_constraint("area_parent_is_prefix", "area", type_="check")
    op.drop_constraint("area_code_rule", "area", type_="check")
    op.drop_constraint("area_level_known", "area", type_="check")
    op.create_check_constraint("area_level_known", "area",
                               _in("level", ["district", "street", "community", "grid"]))
    op.create_check_constraint(
        "area_code_rule", "area",
        "(level = 'district' AND length(code) = 6 AND parent_code IS NULL"
        "   AND metric_srid IS NOT NULL)"
        " OR (level = 'street' AND length(code) = 9"
        "   AND substr(code, 7, 3)::int BETWEEN 1 AND 399)"
        " OR (level = 'community' AND length(code) = 12 AND substr(code, 10, 3)::int >= 1)"
        " OR (level = 'grid' AND length(code) = 15 AND substr(code, 13, 3)::int >= 1"
        "   AND responsible_body IS NOT NULL)")
    op.create_check_constraint(
        "area_parent_is_prefix", "area",
        "level = 'district' OR parent_code = left(code, length(code) - 3)")
