"""The collections served over OGC API Features and Tiles: one registry.

Each collection is a SQL row source with a feature id ``fid``, a geometry ``geom`` (SRID 4326)
and property columns; the queryables are its properties. Area collections read the current
generation or, through ``:gen``, the versions valid in any generation; circles and coverage read
one analysis run (``:run``, default the newest finished one). Incidents carry no personal data
(no description, reporter or photos).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_AREA = ("(SELECT code AS fid, code, {cols}, generation_low AS generation, geom FROM area "
         "WHERE level = '{level}' AND (CASE WHEN CAST(:gen AS integer) IS NULL "
         "THEN generation_high IS NULL ELSE generation_low <= :gen AND "
         "(generation_high IS NULL OR generation_high >= :gen) END))")


@dataclass(frozen=True)
class Collection:
    """One collection: ``source`` is a SQL row source (fid, geom, properties...)."""

    id: str
    title: str
    description: str
    source: str
    properties: dict[str, str]  # name -> JSON schema type: string|integer|number|boolean|date-time
    geometry: str  # GeoJSON geometry type of its features
    area_column: str | None = None  # area-code column that scopes rows to a user's area
    temporal: str | None = None  # the property ``datetime`` filters on
    generations: bool = False  # rows of any generation through ``generation``/``datetime``
    run_kind: str | None = None  # analysis run kind it reads (circles|coverage)
    id_type: str = "string"
    editable: bool = False
    tiles: bool = True
    min_zoom: int = 0
    readers: str = "staff"  # "staff": READERS roles and keys; "scoped": any caller, rows scoped
    extra: dict[str, str] = field(default_factory=dict)


def _area(level: str, cols: str) -> str:
    return _AREA.format(level=level, cols=cols)


COLLECTIONS: dict[str, Collection] = {c.id: c for c in (
    Collection("districts", "区", "District boundary (区县).",
               _area("district", "name"), {"code": "string", "name": "string",
                                               "generation": "integer"},
               "MultiPolygon", "code", generations=True),
    Collection("streets", "街道", "Streets (街道/乡镇).",
               _area("street", "parent_code, name"),
               {"code": "string", "parent_code": "string", "name": "string",
                "generation": "integer"}, "MultiPolygon", "code", generations=True),
    Collection("communities", "社区", "Communities (社区/村).",
               _area("community", "parent_code, name"),
               {"code": "string", "parent_code": "string", "name": "string",
                "generation": "integer"}, "MultiPolygon", "code", generations=True),
    Collection("grids", "网格", "Grids (网格) of the current generation, or of any generation "
               "(`generation`) or date (`datetime`). Editable (OGC API Features Part 4): every "
               "change is a planning change and passes the planning checks.",
               _area("grid", "parent_code, name, responsible_body"),
               {"code": "string", "parent_code": "string", "name": "string",
                "responsible_body": "string", "generation": "integer"},
               "MultiPolygon", "code", generations=True, editable=True),
    Collection("buildings", "楼栋", "Buildings (location points) with households and grid.",
               "(SELECT code AS fid, code, name, households, residents, floors, grid_code, "
               "location AS geom FROM building_now)",
               {"code": "string", "name": "string", "households": "integer",
                "residents": "integer", "floors": "integer", "grid_code": "string"},
               "Point", "grid_code", min_zoom=14),
    Collection("stations", "服务站点", "Service stations.",
               "(SELECT code AS fid, code, name, kind, community_code, location AS geom "
               "FROM station)",
               {"code": "string", "name": "string", "kind": "string",
                "community_code": "string"}, "Point", "community_code"),
    Collection("walk_network", "步行路网", "Walk network edges (metres).",
               "(SELECT id AS fid, id, length_m, road_class, is_crossing, name, geom "
               "FROM walk_edge)",
               {"id": "integer", "length_m": "number", "road_class": "string",
                "is_crossing": "boolean", "name": "string"}, "LineString", id_type="integer",
               min_zoom=13),
    Collection("barriers", "障碍", "Barriers walking cannot cross (rivers, rail, walls).",
               "(SELECT id AS fid, id, kind, name, geom FROM barrier)",
               {"id": "integer", "kind": "string", "name": "string"}, "Geometry",
               id_type="integer"),
    Collection("circles", "服务圈", "Service circles of one circles run (`run`, default the "
               "newest) and optionally one tier (`tier`, metres).",
               "(SELECT c.id AS fid, c.id, s.code AS station_code, s.kind, c.tier_m, c.tier_min,"
               " c.run_id, s.community_code, c.geom FROM service_circle c "
               "JOIN station s ON s.id = c.station_id WHERE c.run_id = :run "
               "AND (CAST(:tier AS float) IS NULL OR c.tier_m = :tier))",
               {"id": "integer", "station_code": "string", "kind": "string",
                "tier_m": "number", "tier_min": "number", "run_id": "integer"},
               "MultiPolygon", "community_code", run_kind="circles", id_type="integer"),
    Collection("coverage", "覆盖", "Buildings of one coverage run (`run`, default the newest) "
               "with whether a service circle covers them.",
               "(SELECT b.code AS fid, b.code, b.households, b.grid_code, bc.covered, "
               "bc.run_id, b.location AS geom FROM building_coverage bc "
               "JOIN building_now b ON b.id = bc.building_id WHERE bc.run_id = :run)",
               {"code": "string", "households": "integer", "grid_code": "string",
                "covered": "boolean", "run_id": "integer"}, "Point", "grid_code",
               run_kind="coverage", tiles=False),
    Collection("uncovered_buildings", "未覆盖楼栋", "Buildings a coverage run (`run`, default "
               "the newest) found outside every service circle.",
               "(SELECT b.code AS fid, b.code, b.households, b.grid_code, bc.run_id, "
               "b.location AS geom FROM building_coverage bc "
               "JOIN building_now b ON b.id = bc.building_id "
               "WHERE bc.run_id = :run AND NOT bc.covered)",
               {"code": "string", "households": "integer", "grid_code": "string",
                "run_id": "integer"}, "Point", "grid_code", run_kind="coverage", tiles=False),
    Collection("incidents", "事件", "Incidents the caller may see (residents: their own; staff: "
               "their area or department). No personal data.",
               "(SELECT i.id AS fid, i.id, i.status, i.category_code AS category, i.grid_code,"
               " i.reported_at, i.location AS geom FROM incident i WHERE {scope})",
               {"id": "integer", "status": "string", "category": "string",
                "grid_code": "string", "reported_at": "date-time"}, "Point", "grid_code",
               temporal="reported_at", id_type="integer", readers="scoped"),
    Collection("grid_statistics", "网格统计", "Per current grid: buildings, households, "
               "residents, stations, incidents (all and open).",
               "(SELECT g.code AS fid, g.code, g.name, "
               "coalesce(b.buildings, 0) AS buildings, coalesce(b.households, 0) AS households,"
               " coalesce(b.residents, 0) AS residents, coalesce(s.stations, 0) AS stations, "
               "coalesce(i.incidents, 0) AS incidents, coalesce(i.open, 0) AS incidents_open, "
               "g.geom FROM area_current g "
               "LEFT JOIN (SELECT grid_code, count(*)::int AS buildings, "
               "sum(households)::int AS households, sum(residents)::int AS residents "
               "FROM building_now GROUP BY grid_code) b ON b.grid_code = g.code "
               "LEFT JOIN (SELECT st.code AS grid, count(*)::int AS stations FROM station s "
               "JOIN area_current st ON st.level = 'grid' AND ST_Intersects(st.geom, s.location)"
               " GROUP BY st.code) s ON s.grid = g.code "
               "LEFT JOIN (SELECT grid_code, count(*)::int AS incidents, count(*) FILTER "
               "(WHERE status NOT IN ('resolved','closed','rejected','cancelled','archived',"
               "'duplicate'))::int AS open FROM incident GROUP BY grid_code) i "
               "ON i.grid_code = g.code WHERE g.level = 'grid')",
               {"code": "string", "name": "string", "buildings": "integer",
                "households": "integer", "residents": "integer", "stations": "integer",
                "incidents": "integer", "incidents_open": "integer"}, "MultiPolygon", "code",
               tiles=False),
)}
