"""Bulk writer: layers (GeoDataFrames in EPSG:4326) into the database as a new generation.

``write_layers`` uses PostgreSQL ``COPY`` (psycopg2 ``copy_expert``) with hex EWKB geometry, in
the caller's transaction, so that a city of 500,000 buildings loads in seconds, not minutes.

(Just over 500 lines, on purpose: the per-layer writers of the ``WRITERS`` table share this
module's COPY, index-rebuild and per-district helpers; the district bookkeeping itself lives in
``geo.data.districts``.)

Semantics:

* a ``generation`` row is always inserted; its id is returned, and ``generation.districts``
  records the districts it changed;
* area layers (province, city, district, street, community, grid) are *versioned*: the current
  versions of each level written are closed **within the districts the file covers** (the
  6-digit prefixes of its codes; for city/province the codes given) and the new versions
  inserted with ``generation_low`` = the new id. Old versions stay queryable; other districts'
  areas are untouched, so ``at=`` answers each district by its own history;
* a city or province row without geometry gets the union of its current districts (and is
  re-derived whenever one of them is imported again);
* the other layers (grid_team, compound, building, station, walk_edge/walk_node, barrier) are not
  versioned: each layer given replaces that table's rows **within the districts the file
  covers** (``geo.data.districts`` has the rules; the walking network stays connected across
  district borders).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Connection
from tqdm import tqdm

from geo.core.errors import InvalidInput, Problem
from geo.data import districts as dist
from geo.data.crs import utm_epsg
from geo.data.generations import lock_districts, new_generation

log = logging.getLogger(__name__)

AREA_LEVELS = ("province", "city", "district", "street", "community", "grid")
PARENT_LEVELS = ("province", "city")  # written after the districts: their union may be needed
LAYER_ORDER = (
    "district", "street", "community", "grid", "city", "province", "grid_team", "compound",
    "building", "station", "walk_edge", "barrier",
)
KNOWN_LAYERS = frozenset(LAYER_ORDER) | {"walk_node"}


def _ewkb(geoms: Iterable[Any]) -> np.ndarray:
    """Hex EWKB with SRID 4326 (None stays None), the text form COPY accepts for geometry."""
    arr = np.asarray(geoms, dtype=object)
    out = np.full(len(arr), None, dtype=object)
    ok = ~shapely.is_missing(arr) if len(arr) else np.zeros(0, bool)
    if ok.any():
        with_srid = shapely.set_srid(arr[ok], 4326)
        # binary WKB made hex by Python: the same text ~5x faster than GEOS's hex writer
        out[ok] = [w.hex().upper() for w in shapely.to_wkb(with_srid, include_srid=True)]
    return out


def _multi_polygons(geoms: np.ndarray) -> np.ndarray:
    """Polygon/MultiPolygon -> MultiPolygon, vectorised; other types -> None."""
    n = len(geoms)
    out = np.full(n, None, dtype=object)
    if n == 0:
        return out
    tid = shapely.get_type_id(geoms)
    poly = (tid == 3) | (tid == 6)
    if not poly.any():
        return out
    idx = np.nonzero(poly)[0]
    parts, which = shapely.get_parts(geoms[idx], return_index=True)
    keep = shapely.get_type_id(parts) == 3
    made = shapely.multipolygons(parts[keep], indices=which[keep])
    present = np.unique(which[keep])
    out[idx[present]] = made
    return out


def _col(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series([default] * len(df), index=df.index, dtype=object)


def _ints(series: pd.Series) -> pd.Series:
    """Integers for COPY: nullable Int64 so that NaN becomes NULL, never '12.0'."""
    return pd.to_numeric(series, errors="coerce").round().astype("Int64")


def _copy(conn: Connection, table: str, frame: pd.DataFrame) -> int:
    """COPY ``frame`` (columns = table columns) into ``table`` in the caller's transaction."""
    if frame.empty:
        return 0
    cols = ", ".join(frame.columns)
    raw = conn.connection.driver_connection
    assert raw is not None  # a live DBAPI connection (psycopg2)
    with raw.cursor() as cur:
        for start in range(0, len(frame), COPY_CHUNK):  # chunks bound the CSV text in memory
            buf = io.StringIO()
            frame.iloc[start:start + COPY_CHUNK].to_csv(
                buf, index=False, header=False, quoting=csv.QUOTE_MINIMAL, na_rep="")
            buf.seek(0)
            cur.copy_expert(f"COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv)", buf)
    return len(frame)


COPY_CHUNK = 100_000  # rows per COPY statement
BULK_ROWS = 50_000  # above this, secondary indexes are dropped and rebuilt around the COPY


@contextmanager
def _indexes_rebuilt(conn: Connection, table: str, rows: int) -> Iterator[None]:
    """For a large load, drop ``table``'s secondary indexes and rebuild them afterwards.

    A sorted GiST build after the load is several times faster than row-by-row index inserts.
    Indexes that back constraints (primary key, unique) are kept. All in the caller's transaction.
    """
    if rows < BULK_ROWS:
        yield
        return
    defs = conn.execute(text(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = CAST(:t AS regclass) AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
    ), {"t": table}).all()
    for name, _ in defs:
        conn.execute(text(f"DROP INDEX {name}"))
    yield
    for _, ddl in defs:
        conn.execute(text(ddl))


def _clear(conn: Connection, *tables: str) -> None:
    """Empty ``tables`` (replaced wholesale) with TRUNCATE: transactional, and far cheaper than
    DELETE for 500,000 rows; it takes an exclusive lock until the caller's transaction ends."""
    conn.execute(text(f"TRUNCATE {', '.join(tables)}"))


def _check_crs(name: str, gdf: gpd.GeoDataFrame) -> None:
    if isinstance(gdf, gpd.GeoDataFrame) and gdf.crs is not None and gdf.crs.to_epsg() != 4326:
        raise InvalidInput(
            f"layer {name} is not in EPSG:4326",
            [Problem(reason=f"CRS is {gdf.crs.to_string()}, expected EPSG:4326", field="crs",
                     feature=name)],
        )


def _geoms(gdf: pd.DataFrame) -> np.ndarray:
    if isinstance(gdf, gpd.GeoDataFrame):
        return np.asarray(gdf.geometry.values, dtype=object)
    return np.asarray(gdf["geometry"].values, dtype=object)


def _area_frame(level: str, gdf: gpd.GeoDataFrame, gen: int) -> pd.DataFrame:
    geoms = _multi_polygons(_geoms(gdf))
    if any(g is None for g in geoms):
        bad = [i for i, g in enumerate(geoms) if g is None][:20]
        raise InvalidInput(
            f"layer {level}: geometry must be Polygon or MultiPolygon",
            [Problem(reason="not a polygon", field="geometry", feature=i) for i in bad],
        )
    frame = pd.DataFrame({
        "level": level,
        "code": _col(gdf, "code").astype(str).values,
        "parent_code": (_col(gdf, "parent_code").values
                        if level not in ("district", "city", "province") else None),
        "name": _col(gdf, "name", "").fillna("").astype(str).values,
        "geom": _ewkb(geoms),
        "generation_low": gen,
        "responsible_body": _col(gdf, "responsible_body").values,
    })
    if level == "district":
        srids = np.array(_ints(_col(gdf, "metric_srid")).astype(object), dtype=object)
        cent = shapely.centroid(geoms)
        for i, s in enumerate(srids):
            if s is None or pd.isna(s):
                srids[i] = utm_epsg(shapely.get_x(cent[i]), shapely.get_y(cent[i]))
        frame["metric_srid"] = srids
    return frame


def _close_levels(conn: Connection, levels: list[str], gen: int, districts: list[str],
                  parents: list[str]) -> int:
    """Close the current versions of ``levels`` within ``districts`` (and the city/province
    codes ``parents``): generation_high = the generation before ``gen``."""
    prev = conn.execute(
        text("SELECT max(id) FROM generation WHERE id < :g"), {"g": gen}
    ).scalar()
    if prev is None:
        return 0
    res = conn.execute(
        text(
            "UPDATE area SET generation_high = :prev "
            "WHERE generation_high IS NULL AND level = ANY(:levels) "
            "AND (left(code, 6) = ANY(:districts) OR code = ANY(:parents))"
        ),
        {"prev": prev, "levels": levels, "districts": districts, "parents": parents},
    )
    return res.rowcount or 0


def _building_frame(gdf: gpd.GeoDataFrame, source: str = "import") -> pd.DataFrame:
    geoms = _geoms(gdf)
    tid = shapely.get_type_id(geoms)
    is_point = tid == 0
    location = np.full(len(geoms), None, dtype=object)
    location[is_point] = geoms[is_point]
    nonpoint = ~is_point & ~shapely.is_missing(geoms)
    if nonpoint.any():
        location[nonpoint] = shapely.point_on_surface(geoms[nonpoint])
    footprint = _multi_polygons(geoms)
    frame = pd.DataFrame({
        "code": _col(gdf, "code").astype(str).values,
        "name": _col(gdf, "name").values,
        "location": _ewkb(location),
        "footprint": _ewkb(footprint),
        "households": _ints(_col(gdf, "households", 0)).fillna(0).values,
        "residents": _ints(_col(gdf, "residents", 0)).fillna(0).values,
        "floors": _ints(_col(gdf, "floors")).values,
        "grid_code": _col(gdf, "grid_code").values,
        "source": _col(gdf, "source", source).fillna(source).values,
        "address": _col(gdf, "address").values,
    })
    if "compound_code" in gdf.columns:
        frame["properties"] = [
            json.dumps({"compound_code": c}) if isinstance(c, str) else "{}"
            for c in gdf["compound_code"].values
        ]
    return frame


def _walk_frames(gdf: gpd.GeoDataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """walk_node rows (from the edges' end points) and walk_edge rows (cost = length in m)."""
    geoms = _geoms(gdf)
    src = pd.to_numeric(gdf["source"]).to_numpy(np.int64)
    tgt = pd.to_numeric(gdf["target"]).to_numpy(np.int64)
    first = shapely.get_point(geoms, 0)
    last = shapely.get_point(geoms, -1)
    ids = np.concatenate([src, tgt])
    pts = np.concatenate([first, last])
    uniq, where = np.unique(ids, return_index=True)
    nodes = pd.DataFrame({"id": uniq, "geom": _ewkb(pts[where])})
    if "length_m" in gdf.columns:
        length = pd.to_numeric(gdf["length_m"]).to_numpy(float)
    else:
        length = np.full(len(gdf), np.nan)
    missing = ~np.isfinite(length)
    if missing.any():
        length[missing] = (
            gpd.GeoSeries(geoms[missing], crs=4326).to_crs(gpd.GeoSeries(geoms[missing], crs=4326)
                                                           .estimate_utm_crs()).length.values
        )
    length = np.maximum(length, 0.01)
    edges = pd.DataFrame({
        "source": src,
        "target": tgt,
        "length_m": length,
        "cost": length,
        "reverse_cost": length,
        "road_class": _col(gdf, "road_class", "other").fillna("other").values,
        "is_crossing": _col(gdf, "is_crossing", False).fillna(False).astype(bool).values,
        "name": _col(gdf, "name").values,
        "osm_id": _ints(_col(gdf, "osm_id")).values,
        "geom": _ewkb(geoms),
    })
    if "id" in gdf.columns:
        edges.insert(0, "id", pd.to_numeric(gdf["id"]).to_numpy(np.int64))
    return nodes, edges


@dataclass(frozen=True)
class Within:
    """The districts an import replaces rows in (None: every row, the one-district case with
    no codes to go by) and the polygons (WGS 84) its rows are placed in."""

    districts: list[str] | None
    polygons: dict[str, Any]

    def codes(self, name: str, gdf: gpd.GeoDataFrame) -> np.ndarray:
        """District code of each row of non-area layer ``name``."""
        return dist.row_districts(name, gdf, self.polygons)


def _delete_by_code(conn: Connection, table: str, column: str, within: Within) -> None:
    """Delete ``table``'s rows whose ``column`` code lies in the covered districts."""
    if within.districts is None:
        conn.execute(text(f"DELETE FROM {table}"))
    else:
        conn.execute(text(f"DELETE FROM {table} WHERE left({column}, 6) = ANY(:d)"),
                     {"d": within.districts})


# -- one writer per layer: (conn, layer name, frame, generation id, kind, districts) -> rows

def _write_area(conn: Connection, name: str, gdf: gpd.GeoDataFrame, gen: int,
                kind: str, within: Within) -> dict[str, int]:
    if name in PARENT_LEVELS:
        missing = np.asarray(shapely.is_missing(_geoms(gdf)), dtype=bool)
        for code, nm in zip(gdf["code"].astype(str)[missing], _col(gdf, "name")[missing],
                            strict=True):
            dist.insert_derived(conn, code, nm if isinstance(nm, str) else None, gen)
        rows = _copy(conn, "area", _area_frame(name, gdf[~missing], gen))
        return {name: rows + int(missing.sum())}
    return {name: _copy(conn, "area", _area_frame(name, gdf, gen))}


def _write_grid_team(conn: Connection, name: str, gdf: gpd.GeoDataFrame, gen: int,
                     kind: str, within: Within) -> dict[str, int]:
    if within.districts is None:
        _clear(conn, "grid_team_member")
    else:
        _delete_by_code(conn, "grid_team_member", "grid_code", within)
    frame = pd.DataFrame({
        "grid_code": _col(gdf, "grid_code").astype(str).values,
        "role": _col(gdf, "role").values,
        "name": _col(gdf, "name", "").fillna("").values,
        "phone": _col(gdf, "phone").values,
    })
    with _indexes_rebuilt(conn, "grid_team_member", len(frame)):
        return {name: _copy(conn, "grid_team_member", frame)}


def _write_compound(conn: Connection, name: str, gdf: gpd.GeoDataFrame, gen: int,
                    kind: str, within: Within) -> dict[str, int]:
    if within.districts is None:
        conn.execute(text(
            "UPDATE building SET compound_id = NULL WHERE compound_id IS NOT NULL"))
    else:
        conn.execute(text(
            "UPDATE building b SET compound_id = NULL FROM compound c WHERE c.id = b.compound_id "
            "AND left(c.community_code, 6) = ANY(:d)"), {"d": within.districts})
    _delete_by_code(conn, "compound", "community_code", within)
    frame = pd.DataFrame({
        "code": _col(gdf, "code").astype(str).values,
        "name": _col(gdf, "name").values,
        "community_code": _col(gdf, "community_code").values,
        "geom": _ewkb(_multi_polygons(_geoms(gdf))),
    })
    return {name: _copy(conn, "compound", frame)}


def _write_building(conn: Connection, name: str, gdf: gpd.GeoDataFrame, gen: int,
                    kind: str, within: Within) -> dict[str, int]:
    dist.clear_within(conn, "building", within.districts)
    frame = _building_frame(gdf, kind)
    frame["district_code"] = within.codes(name, gdf)
    with _indexes_rebuilt(conn, "building", len(frame)):
        rows = _copy(conn, "building", frame)
    if "compound_code" in gdf.columns:
        conn.execute(text(
            "UPDATE building b SET compound_id = c.id FROM compound c "
            "WHERE c.code = b.properties->>'compound_code'"
        ))
    filled = conn.execute(text(
        "UPDATE building b SET grid_code = a.code FROM area a "
        "WHERE b.grid_code IS NULL AND a.level = 'grid' AND a.generation_high IS NULL "
        "AND ST_Intersects(a.geom, b.location)"
    )).rowcount
    if filled:
        log.info("grid_code filled by spatial join for %d buildings", filled)
    return {name: rows}


def _write_station(conn: Connection, name: str, gdf: gpd.GeoDataFrame, gen: int,
                   kind: str, within: Within) -> dict[str, int]:
    dist.clear_within(conn, "station", within.districts)
    frame = pd.DataFrame({
        "code": _col(gdf, "code").astype(str).values,
        "name": _col(gdf, "name", "").fillna("").values,
        "kind": _col(gdf, "kind").values,
        "location": _ewkb(_geoms(gdf)),
        "community_code": _col(gdf, "community_code").values,
        "address": _col(gdf, "address").values,
        "district_code": within.codes(name, gdf),
    })
    return {name: _copy(conn, "station", frame)}


def _write_walk(conn: Connection, name: str, gdf: gpd.GeoDataFrame, gen: int,
                kind: str, within: Within) -> dict[str, int]:
    kept = dist.clear_walk(conn, within.districts)
    nodes, edges = _walk_frames(gdf)
    edges["district_code"] = within.codes(name, gdf)
    if kept and len(nodes):  # other districts' network stays: join it at shared nodes
        nodes, mapping = dist.match_nodes(conn, nodes, shapely.from_wkb(nodes["geom"].values))
        edges["source"] = edges["source"].map(mapping)
        edges["target"] = edges["target"].map(mapping)
        edges = edges.drop(columns=["id"], errors="ignore")
    written: dict[str, int] = {}
    with _indexes_rebuilt(conn, "walk_node", len(nodes)):
        written["walk_node"] = _copy(conn, "walk_node", nodes)
    with _indexes_rebuilt(conn, "walk_edge", len(edges)):
        written[name] = _copy(conn, "walk_edge", edges)
    if "id" in edges.columns:
        conn.execute(text(
            "SELECT setval(pg_get_serial_sequence('walk_edge', 'id'), "
            "(SELECT coalesce(max(id), 0) + 1 FROM walk_edge), false)"
        ))
    conn.execute(text(
        "SELECT setval(pg_get_serial_sequence('walk_node', 'id'), "
        "(SELECT coalesce(max(id), 0) + 1 FROM walk_node), false)"
    ))
    return written


def _write_barrier(conn: Connection, name: str, gdf: gpd.GeoDataFrame, gen: int,
                   kind: str, within: Within) -> dict[str, int]:
    dist.clear_within(conn, "barrier", within.districts)
    frame = pd.DataFrame({
        "kind": _col(gdf, "kind").values,
        "name": _col(gdf, "name").values,
        "geom": _ewkb(_geoms(gdf)),
        "district_code": within.codes(name, gdf),
    })
    return {name: _copy(conn, "barrier", frame)}


LayerWriter = Callable[[Connection, str, gpd.GeoDataFrame, int, str, Within], dict[str, int]]
WRITERS: dict[str, LayerWriter] = {
    **dict.fromkeys(AREA_LEVELS, _write_area),
    "grid_team": _write_grid_team,
    "compound": _write_compound,
    "building": _write_building,
    "station": _write_station,
    "walk_edge": _write_walk,
    "barrier": _write_barrier,
}
# The table each written key lands in, for ANALYZE (others: the table of the same name).
TABLE_OF = {**dict.fromkeys(AREA_LEVELS, "area"), "grid_team": "grid_team_member"}


def _check_layers(layers: dict[str, gpd.GeoDataFrame]) -> None:
    """Known layer names, every layer in EPSG:4326; else InvalidInput."""
    unknown = sorted(set(layers) - KNOWN_LAYERS)
    if unknown:
        raise InvalidInput(
            "unknown layer names",
            [Problem(reason=f"unknown layer {u!r}", field="layer", feature=u) for u in unknown],
        )
    for name, gdf in layers.items():
        _check_crs(name, gdf)


def write_layers(
    conn: Connection,
    layers: dict[str, gpd.GeoDataFrame],
    *,
    kind: str = "import",
    note: str | None = None,
    effective_from: datetime | None = None,
    progress: bool = False,
    author: str | None = None,
) -> int:
    """Bulk-write ``layers`` (EPSG:4326, the layer contract) as a NEW generation; return its id.

    Runs in the caller's transaction (nothing is committed here). Area layers close the previous
    current versions of their level within the districts the file covers; other layers replace
    their table's rows within those districts (see the module docstring). Buildings without
    ``grid_code`` get it by a spatial join with the current grids after the load. Serialised
    per district and dated by ``geo.data.generations.new_generation`` (``author``: who).
    """
    _check_layers(layers)
    levels = [lvl for lvl in AREA_LEVELS if lvl in layers]
    polygons = dist.district_polygons(conn, layers)
    covered = dist.area_districts(layers, levels)
    if covered:  # the file's codes say which districts it holds: its rows go among those
        polygons = {c: g for c, g in polygons.items() if c in covered} or polygons
    else:  # no area codes: the districts its rows fall in
        for name, gdf in layers.items():
            if name not in AREA_LEVELS and name not in ("grid_team", "compound") and len(gdf):
                covered.update(c for c in dist.row_districts(name, gdf, polygons) if c)
    parents = sorted({str(c) for lvl in PARENT_LEVELS if lvl in layers
                      for c in layers[lvl]["code"]})
    within = Within(sorted(covered) if covered else None, polygons)
    lock_districts(conn, within.districts or covered or
                   (c for lvl in AREA_LEVELS if lvl in layers
                    for c in _col(layers[lvl], "code").dropna().astype(str).unique()))
    gen = new_generation(conn, kind=kind, note=note, effective_from=effective_from,
                         author=author, districts=within.districts)
    log.info("generation %s (%s): writing %s", gen, kind, ", ".join(
        f"{k}={len(v)}" for k, v in layers.items()))

    order = [n for n in LAYER_ORDER if n in layers]
    bar = tqdm(total=len(order), desc="write", unit="layer", disable=not progress)
    if levels:
        closed = _close_levels(conn, levels, gen, within.districts or [], parents)
        log.info("closed %d current area versions of %s", closed, ", ".join(levels))
    written: dict[str, int] = {}
    for name in order:
        gdf = layers[name]
        t0 = time.perf_counter()
        bar.set_postfix_str(f"{name} ({len(gdf)})")
        written.update(WRITERS[name](conn, name, gdf, gen, kind, within))
        log.info("%s: %s rows in %.1f s", name, written.get(name), time.perf_counter() - t0)
        bar.update(1)
    bar.close()
    if "district" in layers:
        dist.derive_parents(conn, gen, set(within.districts or ()), set(parents))
    for table in sorted({TABLE_OF.get(n, n) for n in written}):
        conn.execute(text(f"ANALYZE {table}"))  # fresh statistics for the planner
    log.info("generation %s written: %s", gen, written)
    return gen
