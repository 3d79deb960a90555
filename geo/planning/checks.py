"""The checks of a change, in PostGIS on the affected communities only (GiST indexes; never a
whole-district pass): each grid inside its community, no overlap with a sibling, no gap in the
community's cover, every building in exactly one grid, households per grid within the balance
rule, and no grid crossing the boundary of its district. Areas in m² in the metric CRS of the
change's district (UTM; a city's districts may lie in different zones); points lon/lat
(EPSG:4326). A part outside, overlap or gap over its m² tolerance is measured without its
slivers thinner than ``sliver_width_m`` (the rule imports use: ``geo.data.rules.beyond_slivers``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.codes import district_of
from geo.core.errors import Problem
from geo.data.rules import beyond_slivers
from geo.planning.geometry import metric_srid
from geo.planning.settings import PlanningSettings

CONTAIN_SQL = """
SELECT g.code, c.code AS community, ST_Area(d.metric) AS m2,
       CASE WHEN ST_Area(d.metric) > :ctol THEN ST_AsBinary(d.metric) END AS metric,
       ST_X(ST_PointOnSurface(d.part)) AS lon, ST_Y(ST_PointOnSurface(d.part)) AS lat
FROM area g LEFT JOIN area c ON c.level = 'community' AND c.code = g.parent_code
     AND c.generation_high IS NULL
     LEFT JOIN LATERAL (SELECT ST_Difference(g.geom, c.geom) AS part,
                        ST_Transform(ST_Difference(g.geom, c.geom), :srid) AS metric) d ON true
WHERE g.level = 'grid' AND g.generation_high IS NULL AND g.code = ANY(:codes)
"""

OVERLAP_SQL = """
SELECT g.code, s.code AS other, ST_Area(d.metric) AS m2,
       CASE WHEN ST_Area(d.metric) > :otol THEN ST_AsBinary(d.metric) END AS metric,
       ST_X(ST_PointOnSurface(d.part)) AS lon, ST_Y(ST_PointOnSurface(d.part)) AS lat
FROM area g JOIN area s ON s.level = 'grid' AND s.generation_high IS NULL
     AND s.parent_code = g.parent_code AND s.code <> g.code AND ST_Intersects(g.geom, s.geom)
     AND NOT (s.code = ANY(:codes) AND s.code < g.code)
     CROSS JOIN LATERAL (SELECT ST_Intersection(g.geom, s.geom) AS part,
                         ST_Transform(ST_Intersection(g.geom, s.geom), :srid) AS metric) d
WHERE g.level = 'grid' AND g.generation_high IS NULL AND g.code = ANY(:codes)
  AND NOT ST_Touches(g.geom, s.geom)
"""

GAP_SQL = """
WITH u AS (
    SELECT c.code, ST_Difference(c.geom, coalesce(ST_Union(g.geom),
           'SRID=4326;POLYGON EMPTY'::geometry)) AS gap
    FROM area c LEFT JOIN area g ON g.level = 'grid' AND g.generation_high IS NULL
         AND g.parent_code = c.code
    WHERE c.level = 'community' AND c.generation_high IS NULL AND c.code = ANY(:comms)
    GROUP BY c.code, c.geom
)
SELECT code, ST_Area(ST_Transform(gap, :srid)) AS m2,
       CASE WHEN ST_Area(ST_Transform(gap, :srid)) > :gtol
            THEN ST_AsBinary(ST_Transform(gap, :srid)) END AS metric,
       ST_X(ST_PointOnSurface(gap)) AS lon, ST_Y(ST_PointOnSurface(gap)) AS lat
FROM u WHERE NOT ST_IsEmpty(gap)
"""

# Polygons are the outer loop (one GiST probe of building per grid): a points-outer join
# probes the area index once per building and is several times slower at city scale.
BUILDING_SQL = """
WITH c AS (SELECT geom FROM area WHERE level = 'community' AND generation_high IS NULL
           AND code = ANY(:comms)),
b AS (SELECT DISTINCT b.id, b.code, b.location, b.grid_code FROM c
      JOIN building b ON ST_Intersects(c.geom, b.location)),
g AS (SELECT DISTINCT g.code, g.geom FROM c JOIN area g ON g.level = 'grid'
      AND g.generation_high IS NULL AND g.geom && c.geom),
hits AS (SELECT b.id, array_agg(g.code ORDER BY g.code) AS grids FROM g
         JOIN building b ON ST_Intersects(g.geom, b.location) GROUP BY b.id)
SELECT b.code, b.grid_code, ST_X(b.location) AS lon, ST_Y(b.location) AS lat,
       coalesce(h.grids, '{}') AS grids
FROM b LEFT JOIN hits h ON h.id = b.id
WHERE coalesce(cardinality(h.grids), 0) <> 1
   OR NOT EXISTS (SELECT 1 FROM area a WHERE a.level = 'grid' AND a.generation_high IS NULL
                  AND a.code = b.grid_code)
"""

# the part of each grid outside its own district, and the districts it reaches into
CROSS_SQL = """
SELECT g.code, d.code AS district, ST_Area(x.metric) AS m2,
       CASE WHEN ST_Area(x.metric) > :ctol THEN ST_AsBinary(x.metric) END AS metric,
       ST_X(ST_PointOnSurface(x.part)) AS lon, ST_Y(ST_PointOnSurface(x.part)) AS lat,
       (SELECT array_agg(o.code ORDER BY o.code) FROM area o
        WHERE o.level = 'district' AND o.generation_high IS NULL AND o.code <> d.code
          AND ST_Intersects(o.geom, g.geom)
          AND ST_Area(ST_Intersection(o.geom, g.geom)) > 0) AS into
FROM area g JOIN area d ON d.level = 'district' AND d.code = :district
     AND d.generation_high IS NULL
     CROSS JOIN LATERAL (SELECT ST_Difference(g.geom, d.geom) AS part,
                         ST_Transform(ST_Difference(g.geom, d.geom), :srid) AS metric) x
WHERE g.level = 'grid' AND g.generation_high IS NULL AND g.code = ANY(:codes)
  AND NOT ST_CoveredBy(g.geom, d.geom)
"""

HOUSEHOLD_SQL = """
SELECT a.code, coalesce(sum(b.households), 0)::int AS households,
       ST_X(ST_PointOnSurface(a.geom)) AS lon, ST_Y(ST_PointOnSurface(a.geom)) AS lat
FROM area a LEFT JOIN building b ON b.grid_code = a.code
WHERE a.level = 'grid' AND a.generation_high IS NULL AND a.code = ANY(:codes)
GROUP BY a.code, a.geom
"""


def _measured(row: Any, tolerance_m2: float, width_m: float) -> float:
    """The row's m², not counting slivers thinner than ``width_m`` once it is over the
    tolerance (``geo.data.rules.beyond_slivers``, the rule imports use)."""
    if row["m2"] <= tolerance_m2 or row["metric"] is None:
        return float(row["m2"])
    part = np.array([shapely.from_wkb(bytes(row["metric"]))], dtype=object)
    return float(beyond_slivers(part, tolerance_m2, width_m)[0])


def check_communities(conn: Connection, communities: list[str], grids: list[str],
                      settings: PlanningSettings) -> tuple[list[Problem], list[Problem]]:
    """Check the CURRENT state of ``communities`` (and the ``grids`` changed in them).

    Returns (errors, warnings), in m² in the metric CRS of the change's district (a change
    stays within one community, so one district).
    """
    district = next((d for d in map(district_of, [*communities, *grids]) if d), None)
    srid = metric_srid(conn, district)
    errors: list[Problem] = []
    warnings: list[Problem] = []
    p = {"codes": grids, "comms": communities, "srid": srid, "district": district,
         "ctol": settings.containment_tolerance_m2, "otol": settings.overlap_tolerance_m2,
         "gtol": settings.gap_tolerance_m2}
    width = settings.sliver_width_m
    for r in conn.execute(text(CROSS_SQL), p).mappings():
        if (m2 := _measured(r, settings.containment_tolerance_m2, width)) \
                > settings.containment_tolerance_m2:
            into = list(r["into"] or [])
            errors.append(Problem(
                reason=f"grid crosses the boundary of its district {r['district']}"
                + (f" into district {', '.join(into)}" if into else "")
                + f": {m2:.1f} m² lies outside it (slivers thinner than {width} m not counted)",
                field="geometry", feature=r["code"],
                detail={"check": "inside_district", "m2": round(m2, 2), "into": into,
                        "lon": r["lon"], "lat": r["lat"]}))
    for r in conn.execute(text(CONTAIN_SQL), p).mappings():
        if r["community"] is None:
            errors.append(Problem(reason="parent community does not exist", field="parent_code",
                                  feature=r["code"]))
        elif (m2 := _measured(r, settings.containment_tolerance_m2, width)) \
                > settings.containment_tolerance_m2:
            errors.append(Problem(
                reason=f"grid lies {m2:.1f} m² outside community {r['community']} (slivers "
                f"thinner than {width} m not counted)",
                field="geometry", feature=r["code"],
                detail={"check": "inside_community", "m2": round(m2, 2),
                        "lon": r["lon"], "lat": r["lat"]}))
    for r in conn.execute(text(OVERLAP_SQL), p).mappings():
        if (m2 := _measured(r, settings.overlap_tolerance_m2, width)) \
                > settings.overlap_tolerance_m2:
            errors.append(Problem(
                reason=f"grid overlaps sibling {r['other']} by {m2:.1f} m²",
                field="geometry", feature=r["code"],
                detail={"check": "overlap", "other": r["other"], "m2": round(m2, 2),
                        "lon": r["lon"], "lat": r["lat"]}))
    for r in conn.execute(text(GAP_SQL), p).mappings():
        if (m2 := _measured(r, settings.gap_tolerance_m2, width)) > settings.gap_tolerance_m2:
            errors.append(Problem(
                reason=f"community cover leaves a gap of {m2:.1f} m² (slivers thinner than "
                f"{width} m not counted)",
                field="geometry", feature=r["code"],
                detail={"check": "gap", "m2": round(m2, 2), "lon": r["lon"],
                        "lat": r["lat"]}))
    for r in conn.execute(text(BUILDING_SQL), p).mappings():
        n = len(r["grids"])
        if n != 1:
            reason = ("building lies in no grid" if n == 0 else
                      f"building lies in {n} grids: {', '.join(r['grids'])}")
        else:
            reason = f"building is assigned to {r['grid_code']}, which is not a current grid"
        errors.append(Problem(reason=reason, field="location", feature=r["code"],
                              detail={"check": "building_in_one_grid", "grids": list(r["grids"]),
                                      "lon": r["lon"], "lat": r["lat"]}))
    lo, hi = settings.households_min, settings.households_max
    for r in conn.execute(text(HOUSEHOLD_SQL), p).mappings():
        h = r["households"]
        if lo <= h <= hi:
            continue
        by = lo - h if h < lo else h - hi
        prob = Problem(
            reason=f"grid has {h} households, {by} {'below' if h < lo else 'above'} the "
            f"balance rule {lo}-{hi}", field="households", feature=r["code"],
            detail={"check": "balance", "households": h, "by": by, "lon": r["lon"],
                    "lat": r["lat"]})
        (errors if settings.balance_mode == "error" else warnings).append(prob)
    return errors, warnings
