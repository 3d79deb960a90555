"""Draft partitions of a community (street blocks balanced by households), and accepting one.

Units are street blocks (walk edges + the community boundary polygonized in PostGIS), cut between
buildings into strips where a block holds many households; measured in the district's metric
CRS (UTM, metres); drafts are returned in EPSG:4326. Nothing is written until ``accept_draft``.
"""

from __future__ import annotations

import json
import logging
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
from geo.data.crs import polygonal
from geo.planning.balance import (
    explode_units,
    grid_counts,
    link_components,
    ratio_bound,
    score,
    tree_partition,
    unit_neighbors,
)
from geo.planning.changes import ChangeResult
from geo.planning.flips import local_search
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
faces AS (SELECT (ST_Dump(ST_Polygonize(g))).geom AS geom FROM noded),
kept AS (SELECT f.geom FROM faces f, c WHERE ST_Within(ST_PointOnSurface(f.geom), c.geom)),
-- what polygonizing missed (a face whose point fell on the boundary, a nested ring) is a
-- block too, so the draft covers the whole community
rest AS (
    SELECT (ST_Dump(ST_CollectionExtract(ST_Difference(c.geom, coalesce(
        (SELECT ST_Union(geom) FROM kept), ST_GeomFromText('POLYGON EMPTY', 4326))), 3))).geom
    FROM c),
blocks AS (SELECT geom FROM kept
           UNION ALL SELECT geom FROM rest WHERE ST_Area(ST_Transform(geom, :srid)) > 1.0)
SELECT ST_AsBinary(b.geom) AS wkb,
       ST_X(ST_Transform(ST_Centroid(b.geom), :srid)) AS x,
       ST_Y(ST_Transform(ST_Centroid(b.geom), :srid)) AS y,
       (SELECT coalesce(sum(bd.households), 0) FROM building bd
        WHERE ST_Intersects(b.geom, bd.location)) AS households
FROM blocks b
"""


@dataclass
class Draft:
    """A proposed partition of one community: grids as a GeoDataFrame (EPSG:4326)."""

    community: str
    grids: gpd.GeoDataFrame
    blocks: int
    units: int
    ratio: float
    method: str = "flips"
    links: int = 0  # links joining detached pieces of the community (``link_components``)
    largest_unit: int = 0  # households of the largest indivisible unit
    ratio_bound: float = 1.0  # no partition into the tried grid counts can do better

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


def grid_shapes(geoms: Any, labels: np.ndarray, *, snap_m: float = 0.05,
                speck_m2: float = 0.01) -> list[Any]:
    """One MultiPolygon per region of ``labels`` (sorted): the union of its units (metric CRS)
    plus the float gaps between units (under ``snap_m`` wide, where strips meet along Voronoi
    edges), each gap given to the region it shares most boundary with. The units are kept
    whole: an inward buffer would also cut a grid's narrow necks."""
    g = np.asarray(geoms, dtype=object)
    base = np.asarray([shapely.union_all(g[labels == r]) for r in np.unique(labels)],
                      dtype=object)
    whole = shapely.union_all(shapely.buffer(g, snap_m, join_style="mitre")).buffer(
        -snap_m, join_style="mitre")
    gaps = polygonal(shapely.make_valid(shapely.difference(whole, shapely.union_all(base))))
    extra: list[list[Any]] = [[] for _ in base]
    if gaps is not None:
        tree = shapely.STRtree(base)
        for gap in shapely.get_parts(gaps):
            near = tree.query(gap, predicate="dwithin", distance=snap_m)
            if len(near):
                shared = shapely.length(shapely.intersection(shapely.boundary(base[near]),
                                                             shapely.buffer(gap, snap_m)))
                extra[int(near[int(np.argmax(shared))])].append(gap)
    out = []
    for b, e in zip(base, extra, strict=True):
        parts = shapely.get_parts(polygonal(shapely.make_valid(shapely.union_all([b, *e]))))
        big = parts[shapely.area(parts) >= speck_m2]  # specks: zero-width spikes made valid
        out.append(to_multipolygon(shapely.MultiPolygon(list(big if len(big) else parts))))
    return out


def refine(method: str) -> Callable[..., np.ndarray]:
    """The refinement step by name: 'flips' (``geo.planning.flips.local_search``, the default)
    or 'recom' (``geo.planning.recom.recom_search``, GerryChain)."""
    if method == "recom":
        from geo.planning.recom import recom_search

        return recom_search
    if method == "flips":
        return local_search
    raise InvalidInput(f"unknown draft method {method!r}", [Problem(
        reason="expected 'flips' or 'recom'", field="method", feature=method)])


def draft_partition(conn: Connection, community: str, *,
                    settings: PlanningSettings | None = None, seed: int = 0,
                    method: str | None = None, tries: int = 3,
                    progress: Callable[[int, int], None] | None = None) -> Draft:
    """Propose grids for ``community`` balanced by households, following streets.

    Units: street blocks (``street_blocks``) cut between buildings into strips of about
    ``draft_unit_households`` where a block holds more (``draft_units``), one polygon each;
    neighbours share a boundary (``unit_neighbors``), detached pieces of the community are
    joined to their nearest unit (``link_components``). For each number of grids k whose mean
    keeps the balance rule (fewest first, those whose ``ratio_bound`` already exceeds
    ``draft_ratio`` last), ``tries`` seeds: k contiguous regions by recursive spanning-tree
    bisection (``tree_partition``), refined by ``method`` ('flips': boundary-unit local search,
    the default; 'recom': GerryChain's ReCom). Stops at the first partition with every grid in
    the rule and largest/smallest ≤ ``draft_ratio``, else keeps the best by ``score``.
    Deterministic for a given ``seed``. ``progress(done, total)`` after each try. Nothing is
    written: accept with ``accept_draft``.
    """
    settings = settings or PlanningSettings()
    method = method or settings.draft_method
    step = refine(method)
    srid = metric_srid(conn, district_of(community))
    blocks = street_blocks(conn, community).to_crs(srid)
    bld = gpd.read_postgis(text(
        "SELECT b.households, b.location FROM building b JOIN area c ON c.level = 'community' "
        "AND c.code = :c AND c.generation_high IS NULL AND ST_Intersects(c.geom, b.location)"),
        conn, geom_col="location", params={"c": community}, crs=4326).to_crs(srid)
    lo, hi, target = settings.households_min, settings.households_max, settings.draft_ratio
    units = explode_units(draft_units(blocks, bld, settings.draft_unit_households), bld)
    hh = units["households"].to_numpy().astype(float)
    neighbors = unit_neighbors(units["core"].values)
    links = link_components(units["core"].values, neighbors)
    counts = sorted(grid_counts(hh.sum(), lo, hi) if len(units) > 1 else [1],
                    key=lambda k: (ratio_bound(hh, k) > target, k))
    cands = [(k, r) for k in counts for r in range(tries)]
    best: tuple[tuple[int, float, float], np.ndarray] | None = None
    for n, (k, r) in enumerate(cands):
        if best is not None and best[0][0] == 0 and best[0][1] <= target:
            break  # every grid in the rule and within the target ratio
        labels = tree_partition(neighbors, hh, k, np.random.default_rng(seed + r))
        labels = step(labels, neighbors, hh, lo, hi, seed=seed + r, target=target)
        sc = score(np.bincount(labels, weights=hh), lo, hi)
        if best is None or sc < best[0]:
            best = (sc, labels)
        if progress is not None:
            progress(n + 1, len(cands))
    labels = best[1] if best is not None else np.zeros(len(units), int)
    shapes = grid_shapes(units.geometry.values, labels)
    merged = gpd.GeoSeries(shapes, crs=units.crs).to_crs(4326)  # reprojected: valid again
    merged = gpd.GeoSeries([to_multipolygon(polygonal(shapely.make_valid(g)))
                            for g in merged.values], crs=4326)
    grids = gpd.GeoDataFrame({"code": None, "parent_code": community,
                              "name": [f"草案{i + 1}" for i in range(len(shapes))],
                              "responsible_body": "居民委员会",
                              "households": np.bincount(labels, weights=hh)[
                                  np.unique(labels)].round().astype(int)},
                             geometry=merged.values, crs=4326)
    sums = grids["households"].to_numpy()
    return Draft(community=community, grids=grids, blocks=len(blocks), units=len(units),
                 ratio=float(sums.max() / max(sums.min(), 1)), method=method,
                 links=len(links), largest_unit=int(hh.max()) if len(hh) else 0,
                 ratio_bound=min(ratio_bound(hh, k) for k in counts))


def accept_draft(conn: Connection, community: str, grids: gpd.GeoDataFrame | dict[str, Any], *,
                 effective_from: datetime | None = None,
                 settings: PlanningSettings | None = None,
                 author: str | None = None,
                 grids_chosen: dict[str, dict[str, Any]] | None = None) -> ChangeResult:
    """Accept a draft (GeoDataFrame or GeoJSON FeatureCollection) as one change of
    ``community``: its grids replace the community's, with new DB11 codes.
    ``grids_chosen``: names, bodies and teams of the new grids (``geo.planning.choices``)."""
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
                             settings=settings, author=author, grids=grids_chosen)
