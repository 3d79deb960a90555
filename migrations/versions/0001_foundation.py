"""Foundation schema: generations, the area hierarchy, buildings, stations, walking network.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

All geometry is WGS 84 (EPSG:4326) with a GiST index. Lengths and areas are measured in metres
in each district's metric CRS (``area.metric_srid``, a UTM zone) or on the spheroid.

Areas (district, street, community, grid) share one table, as mySociety MapIt keeps them: every
row is one *version* of an area, valid from ``generation_low`` to ``generation_high``
(inclusive; NULL = still current). A code identifies the area across its versions; an exclusion
constraint forbids two versions of one code in the same generation.
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATION_KINDS = [
    ("party_service_center", "党群服务中心", "Party-and-public service centre"),
    ("party_service_station", "党群服务站", "Party-and-public service station"),
    ("social_work_station", "社工站", "Social-work station"),
    ("elder_canteen", "长者食堂", "Elder canteen"),
    ("elderly_daycare", "养老服务照料中心", "Elderly day-care centre"),
    ("health_station", "卫生服务站", "Community health station"),
    ("rest_post", "暖心驿站", "Rest post for outdoor workers"),
]

TEAM_ROLES = [
    "grid_leader",  # 网格长
    "responsible_cadre",  # 包网干部
    "community_police",  # 社区民警
    "urban_management",  # 城管执法队员
    "market_supervisor",  # 市场监管员
    "judicial_mediator",  # 司法调解员
    "community_medic",  # 社区医生
    "grid_worker",  # 网格员
    "volunteer",  # 志愿者
]

ROAD_CLASSES = [
    "footway", "path", "pedestrian", "steps", "cycleway", "living_street", "residential",
    "service", "unclassified", "tertiary", "secondary", "primary", "trunk", "crossing",
    "bridge", "tunnel", "other",
]


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _gist(table: str, column: str) -> None:
    op.create_index(f"ix_{table}_{column}", table, [column], postgresql_using="gist")


def upgrade() -> None:
    for ext in ("postgis", "pgrouting", "btree_gist"):
        op.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")

    op.create_table(
        "generation",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("kind", sa.Text, nullable=False, server_default="import"),
        sa.Column("note", sa.Text),
        sa.Column("author", sa.Text),
    )

    op.create_table(
        "area",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("code", sa.String(15), nullable=False),
        sa.Column("parent_code", sa.String(12)),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("geom", Geometry("MULTIPOLYGON", srid=4326, spatial_index=False),
                  nullable=False),
        sa.Column("generation_low", sa.Integer, sa.ForeignKey("generation.id"), nullable=False),
        sa.Column("generation_high", sa.Integer, sa.ForeignKey("generation.id")),
        sa.Column("responsible_body", sa.Text),
        sa.Column("metric_srid", sa.Integer),
        sa.Column("properties", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.Column(
            "street_type",
            sa.Text,
            sa.Computed(
                "CASE WHEN level = 'street' THEN CASE "
                "WHEN substr(code, 7, 3)::int < 100 THEN 'street' "
                "WHEN substr(code, 7, 3)::int < 200 THEN 'town' ELSE 'township' END END",
                persisted=True,
            ),
        ),
        sa.CheckConstraint(_in("level", ["district", "street", "community", "grid"]),
                           name="area_level_known"),
        sa.CheckConstraint("code ~ '^[0-9]+$'", name="area_code_digits"),
        sa.CheckConstraint(
            "(level = 'district' AND length(code) = 6 AND parent_code IS NULL"
            "   AND metric_srid IS NOT NULL)"
            " OR (level = 'street' AND length(code) = 9"
            "   AND substr(code, 7, 3)::int BETWEEN 1 AND 399)"
            " OR (level = 'community' AND length(code) = 12 AND substr(code, 10, 3)::int >= 1)"
            " OR (level = 'grid' AND length(code) = 15 AND substr(code, 13, 3)::int >= 1"
            "   AND responsible_body IS NOT NULL)",
            name="area_code_rule",
        ),
        sa.CheckConstraint(
            "level = 'district' OR parent_code = left(code, length(code) - 3)",
            name="area_parent_is_prefix",
        ),
        sa.CheckConstraint("ST_IsValid(geom) AND NOT ST_IsEmpty(geom)", name="area_geom_valid"),
        sa.CheckConstraint(
            "generation_high IS NULL OR generation_high >= generation_low",
            name="area_generation_order",
        ),
    )
    op.execute(
        "ALTER TABLE area ADD CONSTRAINT area_one_version_per_generation EXCLUDE USING gist "
        "(code WITH =, int4range(generation_low, generation_high, '[]') WITH &&)"
    )
    _gist("area", "geom")
    op.execute(
        "CREATE INDEX ix_area_current_geom ON area USING gist (geom) "
        "WHERE generation_high IS NULL"
    )
    op.create_index("ix_area_level_code", "area", ["level", "code"])
    op.create_index("ix_area_parent_code", "area", ["parent_code"])
    op.execute(
        "CREATE VIEW area_current AS SELECT * FROM area WHERE generation_high IS NULL"
    )
    op.execute(
        """
        CREATE FUNCTION generation_at(ts timestamptz) RETURNS integer
        LANGUAGE sql STABLE AS $$
            SELECT max(id) FROM generation WHERE effective_from <= ts
        $$
        """
    )

    op.create_table(
        "grid_team_member",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("grid_code", sa.String(15), nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("phone", sa.Text),
        sa.CheckConstraint(_in("role", TEAM_ROLES), name="team_role_known"),
        sa.CheckConstraint("grid_code ~ '^[0-9]{15}$'", name="team_grid_code_rule"),
    )
    op.create_index("ix_grid_team_member_grid_code", "grid_team_member", ["grid_code"])
    # 2+5+N: one leader and one cadre, the five officers, at least one worker.
    op.execute(
        """
        CREATE VIEW grid_team_summary AS
        SELECT grid_code,
               count(*) FILTER (WHERE role = 'grid_leader') AS leaders,
               count(*) FILTER (WHERE role = 'responsible_cadre') AS cadres,
               count(DISTINCT role) FILTER (WHERE role IN ('community_police',
                   'urban_management', 'market_supervisor', 'judicial_mediator',
                   'community_medic')) AS officer_roles,
               count(*) FILTER (WHERE role IN ('grid_worker', 'volunteer')) AS workers,
               (count(*) FILTER (WHERE role = 'grid_leader') = 1
                AND count(*) FILTER (WHERE role = 'responsible_cadre') = 1
                AND count(DISTINCT role) FILTER (WHERE role IN ('community_police',
                   'urban_management', 'market_supervisor', 'judicial_mediator',
                   'community_medic')) = 5
                AND count(*) FILTER (WHERE role IN ('grid_worker', 'volunteer')) >= 1)
               AS complete_2_5_n
        FROM grid_team_member GROUP BY grid_code
        """
    )

    op.create_table(
        "compound",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text),
        sa.Column("community_code", sa.String(12)),
        sa.Column("geom", Geometry("MULTIPOLYGON", srid=4326, spatial_index=False)),
    )
    _gist("compound", "geom")

    op.create_table(
        "building",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text),
        sa.Column("compound_id", sa.BigInteger, sa.ForeignKey("compound.id")),
        sa.Column("location", Geometry("POINT", srid=4326, spatial_index=False),
                  nullable=False),
        sa.Column("footprint", Geometry("MULTIPOLYGON", srid=4326, spatial_index=False)),
        sa.Column("households", sa.Integer, nullable=False, server_default="0"),
        sa.Column("residents", sa.Integer, nullable=False, server_default="0"),
        sa.Column("floors", sa.Integer),
        sa.Column("grid_code", sa.String(15)),
        sa.Column("source", sa.Text),
        sa.Column("properties", postgresql.JSONB, nullable=False, server_default="{}"),
        sa.CheckConstraint("households >= 0", name="building_households_nonneg"),
        sa.CheckConstraint("residents >= 0", name="building_residents_nonneg"),
        sa.CheckConstraint("footprint IS NULL OR ST_IsValid(footprint)",
                           name="building_footprint_valid"),
    )
    _gist("building", "location")
    _gist("building", "footprint")
    op.create_index("ix_building_grid_code", "building", ["grid_code"])

    op.create_table(
        "station_kind",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name_zh", sa.Text, nullable=False),
        sa.Column("name_en", sa.Text, nullable=False),
    )
    op.bulk_insert(
        sa.table("station_kind", sa.column("code"), sa.column("name_zh"), sa.column("name_en")),
        [{"code": c, "name_zh": zh, "name_en": en} for c, zh, en in STATION_KINDS],
    )
    op.create_table(
        "station",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, sa.ForeignKey("station_kind.code"), nullable=False),
        sa.Column("location", Geometry("POINT", srid=4326, spatial_index=False),
                  nullable=False),
        sa.Column("community_code", sa.String(12)),
        sa.Column("address", sa.Text),
        sa.Column("properties", postgresql.JSONB, nullable=False, server_default="{}"),
    )
    _gist("station", "location")
    op.create_index("ix_station_kind", "station", ["kind"])

    # Walking network, in pgRouting's shape: id, source, target, cost, reverse_cost (metres).
    op.create_table(
        "walk_node",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
    )
    _gist("walk_node", "geom")
    op.create_table(
        "walk_edge",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("source", sa.BigInteger, sa.ForeignKey("walk_node.id"), nullable=False),
        sa.Column("target", sa.BigInteger, sa.ForeignKey("walk_node.id"), nullable=False),
        sa.Column("length_m", sa.Float, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("reverse_cost", sa.Float, nullable=False),
        sa.Column("road_class", sa.Text, nullable=False, server_default="other"),
        sa.Column("is_crossing", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("name", sa.Text),
        sa.Column("osm_id", sa.BigInteger),
        sa.Column("geom", Geometry("LINESTRING", srid=4326, spatial_index=False),
                  nullable=False),
        sa.CheckConstraint("length_m > 0", name="walk_edge_length_positive"),
        sa.CheckConstraint(_in("road_class", ROAD_CLASSES), name="walk_edge_class_known"),
    )
    _gist("walk_edge", "geom")
    op.create_index("ix_walk_edge_source", "walk_edge", ["source"])
    op.create_index("ix_walk_edge_target", "walk_edge", ["target"])

    # Lines and areas a walker may cross only where the network has a crossing or bridge.
    op.create_table(
        "barrier",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("geom", Geometry("GEOMETRY", srid=4326, spatial_index=False), nullable=False),
        sa.CheckConstraint(_in("kind", ["arterial", "railway", "river"]), name="barrier_kind"),
    )
    _gist("barrier", "geom")

    op.create_table(
        "department",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_en", sa.Text),
        sa.Column("level", sa.Text, nullable=False, server_default="district"),
        sa.Column("area_code", sa.String(15)),
        sa.Column("phone", sa.Text),
        sa.CheckConstraint(_in("level", ["grid", "community", "street", "district"]),
                           name="department_level_known"),
    )

    op.create_table(
        "incident_category",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name_zh", sa.Text, nullable=False),
        sa.Column("name_en", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("checkin_workdays", sa.Numeric(6, 2), nullable=False, server_default="1"),
        sa.Column("resolve_workdays", sa.Numeric(6, 2), nullable=False, server_default="5"),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_table(
        "category_department",
        sa.Column("category_code", sa.Text, sa.ForeignKey("incident_category.code"),
                  primary_key=True),
        sa.Column("department_id", sa.Integer, sa.ForeignKey("department.id"),
                  primary_key=True),
    )

    # The incident table: filled, and extended, by the incident workflow's own migration.
    op.create_table(
        "incident",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("category_code", sa.Text, sa.ForeignKey("incident_category.code"),
                  nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("location", Geometry("POINT", srid=4326, spatial_index=False),
                  nullable=False),
        sa.Column("grid_code", sa.String(15)),
        sa.Column("community_code", sa.String(12)),
        sa.Column("street_code", sa.String(9)),
        sa.Column("status", sa.Text, nullable=False, server_default="reported"),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    _gist("incident", "location")


def downgrade() -> None:
    for table in (
        "incident", "category_department", "incident_category", "department", "barrier",
        "walk_edge", "walk_node", "station", "station_kind", "building", "compound",
    ):
        op.drop_table(table)
    op.execute("DROP VIEW grid_team_summary")
    op.drop_table("grid_team_member")
    op.execute("DROP FUNCTION generation_at(timestamptz)")
    op.execute("DROP VIEW area_current")
    op.drop_table("area")
    op.drop_table("generation")
