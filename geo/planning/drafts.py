"""Draft partitions of a community (spopt max-p over street blocks), and accepting one.

Units are street blocks (walk edges + the community boundary polygonized in PostGIS), cut between
buildings into strips where a block holds many households; measured in the district's metric
CRS (UTM, metres); drafts are returned in EPSG:4326. Nothing is written until ``accept_draft``.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.codes import district_of
from geo.core.errors import InvalidInput, NotFound, Problem
from geo.planning.balance import explode_units, recom_refine, unit_neighbors
from geo.planning.changes import ChangeResult
from geo.planning.geometry import metric_srid, to_multipolygon
from geo.planning.operations import import_grid_layer
from geo.planning.settings import PlanningSettings

log = logging.getLogger(__name__)


BLOCKS_SQL = """
WITH c AS (SELECT geom FROM area WHERE level = 'community' AND code = :c
           AND generation_high IS NULL),
lines AS (
    SELECT ST_Intersection(e.geom, c.geom) AS g FROM walk_edge e, c
    WHERE ST_Intersects(e.geom, c.geom)
    UNION ALL SELECT ST_Boundary(c.geom) FROM c
),
noded AS (SELECT ST_UnaryUnion(ST_Collect(ST_CollectionExtract(g, 2))) AS g FROM lines),
blocks AS (SELECT (ST_Dump(ST_Polygonize(g))).geom AS geom FROM noded)
SELECT ST_AsBinary(b.geom) AS wkb,
       ST_X(ST_Transform(ST_Centroid(b.geom), :srid)) AS x,
       ST_Y(ST_Transform(ST_Centroid(b.geom), :srid)) AS y,
       (SELECT coalesce(sum(bd.households), 0) FROM building bd
        WHERE ST_Intersects(b.geom, bd.location)) AS households
FROM blocks b, c WHERE ST_Within(ST_PointOnSurface(b.geom), c.geom)
"""


@dataclass
class Draft:
    """A proposed partition of one community: grids as a GeoDataFrame (EPSG:4326)."""

    community: str
    grids: gpd.GeoDataFrame
    blocks: int
    units: int
    ratio: float

    def as_geojson(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.grids.to_json(drop_id=True))
        return out


def street_blocks(conn: Connection, community: str) -> gpd.GeoDataFrame:
    """The community's street blocks: walk edges + its boundary polygonized in PostGIS.

    Columns: households (buildings by location), x, y (centroid, metres), geometry (EPSG:4326).
    """
    srid = metric_srid(conn, district_of(community))
    rows = conn.execute(text(BLOCKS_SQL), {"c": community, "srid": srid}).mappings().all()
    if not rows:
        raise NotFound(f"community {community} has no blocks (is it current?)",
                       [Problem(reason="no current community or no streets", field="community",
                                feature=community)])
    return gpd.GeoDataFrame(
        {"households": [int(r["households"]) for r in rows], "x": [r["x"] for r in rows],
         "y": [r["y"] for r in rows]},
        geometry=[shapely.from_wkb(bytes(r["wkb"])) for r in rows], crs=4326)


def draft_units(blocks: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame,
                unit_households: int) -> gpd.GeoDataFrame:
    """The draft's building blocks: street blocks, each cut into strips of about
    ``unit_households`` households where it holds more.

    A block is cut across its long axis (minimum rotated rectangle) between buildings: each
    building's Voronoi cell (clipped to the block) goes to the strip its position along the axis
    falls in, by cumulative households. Inputs and output in a metric CRS (metres); output
    columns households, x, y (centroid) and geometry. Units without buildings are kept (0).
    """
    pts = buildings.geometry.values
    hh_b = buildings["households"].to_numpy()
    tree = shapely.STRtree(pts)
    geoms: list[Any] = []
    hh: list[int] = []
    for block in blocks.geometry.values:
        idx = tree.query(block, predicate="intersects")
        total = int(hh_b[idx].sum())
        k = int(np.ceil(total / max(unit_households, 1)))
        if len(idx) < 2 or k < 2:
            geoms.append(block)
            hh.append(total)
            continue
        cells = np.asarray(shapely.voronoi_polygons(shapely.multipoints(pts[idx]),
                                                    extend_to=block).geoms)
        own_pt, own_cell = shapely.STRtree(cells).query(pts[idx], predicate="intersects")
        cell_of = np.full(len(idx), -1)
        cell_of[own_pt] = own_cell
        corner = shapely.get_coordinates(shapely.minimum_rotated_rectangle(block))[:3]
        sides = np.diff(corner, axis=0)
        axis = sides[int(np.argmax(np.hypot(sides[:, 0], sides[:, 1])))]
        along = shapely.get_coordinates(pts[idx]) @ (axis / np.hypot(*axis))
        order = np.argsort(along, kind="stable")
        h = hh_b[idx][order]
        strip = np.minimum(((np.cumsum(h) - h / 2) / max(total, 1) * k).astype(int), k - 1)
        for s in np.unique(strip):
            members = order[strip == s]
            piece = shapely.intersection(shapely.union_all(cells[cell_of[members]]), block)
            geoms.append(piece)
            hh.append(int(hh_b[idx][members].sum()))
    units = gpd.GeoDataFrame({"households": hh}, geometry=geoms, crs=blocks.crs)
    units = units[~units.geometry.is_empty & (units.geometry.area > 0)].reset_index(drop=True)
    cent = units.geometry.centroid
    units["x"], units["y"] = cent.x.to_numpy(), cent.y.to_numpy()
    return units


def _score(sums: np.ndarray, lo: int, hi: int) -> tuple[int, float]:
    """(grids outside the balance rule, largest/smallest households): lower is better."""
    out = int(((sums < lo) | (sums > hi)).sum())
    return out, float(sums.max() / max(sums.min(), 1))


def _connected_without(members: set[int], drop: int, neighbors: dict[int, list[int]]) -> bool:
    rest = members - {drop}
    if not rest:
        return False
    start = next(iter(rest))
    seen, stack = {start}, [start]
    while stack:
        for j in neighbors[stack.pop()]:
            if j in rest and j not in seen:
                seen.add(j)
                stack.append(j)
    return len(seen) == len(rest)


def rebalance(labels: np.ndarray, neighbors: dict[int, list[int]], hh: np.ndarray, lo: int,
              hi: int, *, max_moves: int = 1000) -> np.ndarray:
    """Move boundary units between adjacent regions while that lowers ``_score``.

    The polish after spopt's max-p (whose floor-only constraint lets regions overshoot): each
    step takes the best single move of a unit to a neighbouring region that keeps its own region
    contiguous and non-empty. Ties on ``_score`` are broken by the sum of squared households,
    so surplus can flow through a chain of regions. Stops when no move improves. Returns new
    labels.
    """
    labels = labels.copy()
    regions = {int(r): set(np.flatnonzero(labels == r).tolist()) for r in np.unique(labels)}
    sums = {r: float(hh[list(m)].sum()) for r, m in regions.items()}
    keys = list(sums)
    for _ in range(max_moves):
        arr = np.array([sums[r] for r in keys])
        cur = (*_score(arr, lo, hi), float((arr ** 2).sum()))
        moves = []
        for i, a in enumerate(labels):
            if hh[i] == 0 and len(regions[int(a)]) > 1:
                continue
            for b in {int(labels[j]) for j in neighbors[i]} - {int(a)}:
                trial = arr.copy()
                trial[keys.index(int(a))] -= hh[i]
                trial[keys.index(b)] += hh[i]
                sc = (*_score(trial, lo, hi), float((trial ** 2).sum()))
                if sc < cur:
                    moves.append((sc, i, int(a), b))
        moves.sort()
        for _sc, i, a, b in moves:
            if _connected_without(regions[a], i, neighbors):
                regions[a].discard(i)
                regions[b].add(i)
                sums[a] -= hh[i]
                sums[b] += hh[i]
                labels[i] = b
                break
        else:
            break
    return labels


def draft_partition(conn: Connection, community: str, *,
                    settings: PlanningSettings | None = None, seed: int = 0, tries: int = 3,
                    progress: Callable[[int, int], None] | None = None) -> Draft:
    """Propose grids for ``community`` balanced by households, following streets.

    Units: street blocks (``street_blocks``), cut between buildings into strips of about
    ``draft_unit_households`` (and, as a second layout, 4/3 of it) where a block holds more
    (``draft_units``); adjacency a shared edge (libpysal Rook). spopt's ``MaxPHeuristic``
    (households floor; homogeneity on unit centroids in metres, so regions stay compact) runs
    over a sweep of floors from the balance rule and the community's total (``tries`` seeds,
    each over both layouts), stopping early once a solution meets the rule and
    ``draft_ratio``; each solution is polished by ``rebalance`` (single boundary moves) and the
    one kept has the fewest grids outside the rule, then the smallest largest/smallest
    household ratio. ``progress(done, total)`` is called after each solve.
    Nothing is written: accept with ``accept_draft``.
    """
    import libpysal
    from spopt.region import MaxPHeuristic

    settings = settings or PlanningSettings()
    srid = metric_srid(conn, district_of(community))
    blocks = street_blocks(conn, community).to_crs(srid)
    bld = gpd.read_postgis(text(
        "SELECT b.households, b.location FROM building b JOIN area c ON c.level = 'community' "
        "AND c.code = :c AND c.generation_high IS NULL AND ST_Intersects(c.geom, b.location)"),
        conn, geom_col="location", params={"c": community}, crs=4326).to_crs(srid)
    lo, hi = settings.households_min, settings.households_max
    layouts = []  # (units, households, Rook neighbours, floors) per unit size
    for size in dict.fromkeys((settings.draft_unit_households,
                               round(settings.draft_unit_households * 4 / 3))):
        units = explode_units(draft_units(blocks, bld, size), bld)
        hh_units = units["households"].to_numpy().astype(float)
        total = int(hh_units.sum())
        floors: list[int] = []
        if len(units) > 1 and total > hi:
            kmin = max(1, int(np.ceil(total / hi)))
            kmax = max(kmin, int(total // max(lo, 1)))
            floors = [t for t in dict.fromkeys(
                round(total / k * f) for f in (0.85, 0.75)
                for k in range(kmin, min(kmax, kmin + 3) + 1)) if 0 < t <= total]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = libpysal.weights.Rook.from_dataframe(units, use_index=False,
                                                     silence_warnings=True)
        layouts.append((units, hh_units, w, floors))
    cands = [(r, i, t) for r in range(tries) for i, lay in enumerate(layouts) for t in lay[3]]
    best: tuple[tuple[int, float], np.ndarray, int] | None = None
    for n, (r, i, t) in enumerate(cands):
        if best is not None and best[0][0] == 0 and best[0][1] <= settings.draft_ratio:
            break  # good enough: every grid in the rule and within the target ratio
        units, hh_units, w, _ = layouts[i]
        np.random.seed(seed + r)
        model = MaxPHeuristic(units, w, ["x", "y"], "households", t, top_n=2,
                              max_iterations_construction=5, max_iterations_sa=1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.solve()
        except Exception as exc:  # spopt raises on infeasible floors
            log.debug("max-p floor %s failed: %s", t, exc)
            labels = None
        else:
            labels = np.asarray(model.labels_)
        if progress is not None:
            progress(n + 1, len(cands))
        if labels is None or (labels <= 0).any():  # unassigned units (floor not reachable)
            continue
        neighbors = {int(a): [int(b) for b in bs] for a, bs in w.neighbors.items()}
        labels = recom_refine(rebalance(labels, neighbors, hh_units, lo, hi),
                              unit_neighbors(units.geometry.values), hh_units, lo, hi,
                              seed=seed + r)
        sc = _score(np.bincount(labels, weights=hh_units)[np.unique(labels)], lo, hi)
        if best is None or sc < best[0]:
            best = (sc, labels, i)
    units = layouts[best[2] if best is not None else 0][0]
    labels = best[1] if best is not None else np.ones(len(units), int)
    units["region"] = labels
    merged = units.dissolve(by="region", aggfunc={"households": "sum"}).reset_index()
    # strips meet along Voronoi edges: close float slivers (±1 cm), keep polygons only
    merged["geometry"] = shapely.make_valid(merged.geometry.buffer(0.01).buffer(-0.01).values)
    merged["geometry"] = [to_multipolygon(g) for g in merged.geometry.values]
    merged = merged.to_crs(4326)
    grids = gpd.GeoDataFrame({"code": None, "parent_code": community,
                              "name": [f"草案{i + 1}" for i in range(len(merged))],
                              "responsible_body": "居民委员会",
                              "households": merged["households"].astype(int)},
                             geometry=merged.geometry.values, crs=4326)
    sums = grids["households"].to_numpy()
    return Draft(community=community, grids=grids, blocks=len(blocks), units=len(units),
                 ratio=float(sums.max() / max(sums.min(), 1)))


def accept_draft(conn: Connection, community: str, grids: gpd.GeoDataFrame | dict[str, Any], *,
                 effective_from: datetime | None = None,
                 settings: PlanningSettings | None = None,
                 author: str | None = None) -> ChangeResult:
    """Accept a draft (GeoDataFrame or GeoJSON FeatureCollection) as one change of
    ``community``: its grids replace the community's, with new DB11 codes."""
    if isinstance(grids, dict):
        try:
            grids = gpd.GeoDataFrame.from_features(grids.get("features") or [], crs=4326)
        except Exception as exc:  # malformed features: shapely/geopandas raise several types
            raise InvalidInput("the draft is not a GeoJSON FeatureCollection", [Problem(
                reason=str(exc), field="draft")]) from exc
    if grids.empty or "geometry" not in grids:
        raise InvalidInput("the draft has no grids", [Problem(reason="no features",
                                                              field="draft")])
    grids = grids.copy()
    grids["code"] = None
    grids["parent_code"] = community
    return import_grid_layer(conn, grids, community=community, effective_from=effective_from,
                             settings=settings, author=author)
