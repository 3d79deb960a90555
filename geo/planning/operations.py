"""Planning operations: split, merge, reshape, reassign buildings, import a redrawn grid
layer. Each is one change (``geo.planning.changes.apply_change``); geometry EPSG:4326."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.ops import split as shapely_split
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.errors import InvalidInput, Problem
from geo.data.generations import lock_districts
from geo.planning.changes import ChangeResult, apply_change, community_code, current_grid
from geo.planning.geometry import as_geom, to_multipolygons
from geo.planning.settings import PlanningSettings

log = logging.getLogger(__name__)


def split_grid(conn: Connection, code: str, line: Any, *, effective_from: datetime | None = None,
               settings: PlanningSettings | None = None,
                author: str | None = None,
                grids: dict[str, dict[str, Any]] | None = None) -> ChangeResult:
    """Split grid ``code`` along ``line`` (EPSG:4326 LineString crossing it) into new grids.

    The old code is retired; the pieces get new DB11 codes.
    """
    lock_districts(conn, [code])  # read under the district lock (see geo.data.generations)
    g = current_grid(conn, code)
    ln = as_geom(line, "line")
    if ln.geom_type not in ("LineString", "MultiLineString"):
        raise InvalidInput("split needs a line", [Problem(reason=f"got {ln.geom_type}",
                                                          field="line")])
    parts = [p for p in shapely_split(g["geom"], ln).geoms if p.area > 0]
    if len(parts) < 2:
        raise InvalidInput(f"the line does not cut grid {code} in two",
                           [Problem(reason="line must cross the grid from edge to edge",
                                    field="line", feature=code)])
    create = [{"parent_code": g["parent_code"], "geometry": p, "source_name": g["name"],
               "responsible_body": g["responsible_body"]} for p in parts]
    return apply_change(conn, "split", retire=[code], create=create,
                        params={"code": code, "line": ln.wkt}, effective_from=effective_from,
                        settings=settings, author=author, grids=grids)


def merge_grids(conn: Connection, codes: list[str], *, effective_from: datetime | None = None,
                settings: PlanningSettings | None = None,
                author: str | None = None,
                grids: dict[str, dict[str, Any]] | None = None) -> ChangeResult:
    """Merge adjacent grids of one community into one new grid (new DB11 code; old retired)."""
    codes = list(dict.fromkeys(codes))
    if len(codes) < 2:
        raise InvalidInput("merge needs two or more grids",
                           [Problem(reason="give at least two codes", field="codes")])
    lock_districts(conn, codes)
    old = [current_grid(conn, c) for c in codes]
    parents = {g["parent_code"] for g in old}
    if len(parents) > 1:
        raise InvalidInput("grids of different communities", [
            Problem(reason=f"in community {g['parent_code']}", field="codes", feature=g["code"])
            for g in old])
    union = shapely.union_all([g["geom"] for g in old]).buffer(0)
    if union.geom_type != "Polygon":
        raise InvalidInput("grids are not adjacent", [Problem(
            reason=f"their union has {len(getattr(union, 'geoms', [union]))} separate parts",
            field="codes")])
    return apply_change(conn, "merge", retire=codes, create=[{
        "parent_code": old[0]["parent_code"], "geometry": union,
        "source_name": "、".join(g["name"] for g in old),
        "responsible_body": old[0]["responsible_body"]}], params={"codes": codes},
        effective_from=effective_from, settings=settings, author=author, grids=grids)


def reshape_grids(conn: Connection, geometries: dict[str, Any], *,
                  effective_from: datetime | None = None,
                  settings: PlanningSettings | None = None,
                author: str | None = None,
                grids: dict[str, dict[str, Any]] | None = None) -> ChangeResult:
    """Move boundaries: replace the geometry of grids (codes kept, new versions written)."""
    if not geometries:
        raise InvalidInput("nothing to reshape", [Problem(reason="empty", field="geometries")])
    return apply_change(conn, "reshape", replace=dict(geometries),
                        params={"codes": sorted(geometries)}, effective_from=effective_from,
                        settings=settings, author=author, grids=grids)


def reassign_buildings(conn: Connection, assignments: dict[str, str], *,
                       effective_from: datetime | None = None,
                       settings: PlanningSettings | None = None,
                       author: str | None = None) -> ChangeResult:
    """Reassign buildings ({building code: grid code}) within their community."""
    if not assignments:
        raise InvalidInput("nothing to reassign", [Problem(reason="empty", field="assignments")])
    return apply_change(conn, "reassign", reassign=assignments,
                        params={"assignments": assignments}, effective_from=effective_from,
                        settings=settings, author=author)


def import_grid_layer(conn: Connection, source: str | Path | gpd.GeoDataFrame, *,
                      community: str | None = None, layer: str | None = None,
                      layer_map: dict[str, str] | None = None,
                      field_map: dict[str, str] | None = None, snap_m: float | None = None,
                      effective_from: datetime | None = None,
                      settings: PlanningSettings | None = None,
                      author: str | None = None,
                      grids: dict[str, dict[str, Any]] | None = None) -> ChangeResult:
    """Import a redrawn grid layer (Shapefile/GPKG/GeoJSON or a GeoDataFrame) as one change.

    Scope: one ``community`` (the file's grids of it replace its grids) or the whole district.
    Grids whose code and geometry are unchanged are carried over; changed ones get new versions;
    current grids in scope missing from the file are retired; rows without a code get DB11 codes.
    ``layer``/``layer_map``/``field_map`` as ``read_grid_layer``; ``snap_m`` snaps each grid's
    vertices within that many metres of its community's boundary onto it
    (``geo.data.snap``). ``result.source`` reports the layer and fields read under another
    name (``renamed``) and what snapping moved (``snapped``).
    """
    renamed: list[dict[str, Any]] = []
    gdf = source if isinstance(source, gpd.GeoDataFrame) else read_grid_layer(
        source, layer, layer_map=layer_map, field_map=field_map, renamed=renamed)
    if gdf.crs is None:
        raise InvalidInput("the layer has no CRS", [Problem(reason="missing CRS", field="crs")])
    gdf = gdf.to_crs(4326)
    for col in ("code", "parent_code", "name", "responsible_body"):
        if col not in gdf.columns:
            gdf[col] = None
    gdf["code"] = gdf["code"].map(lambda v: None if v is None or pd.isna(v) or str(v) == ""
                                  else str(v))
    gdf["parent_code"] = [p if isinstance(p, str) and p else (community_code(c) if c else community)
                          for p, c in zip(gdf["parent_code"], gdf["code"], strict=True)]
    if community:
        outside = gdf[gdf["parent_code"] != community]
        if len(outside):
            raise InvalidInput("features outside the community", [
                Problem(reason=f"parent_code {p} is not {community}", field="parent_code",
                        feature=i) for i, p in outside["parent_code"].head(50).items()])
    dup = gdf["code"].dropna()
    dup = dup[dup.duplicated()]
    if len(dup):
        raise InvalidInput("duplicate codes", [Problem(reason="code appears twice",
                                                       field="code", feature=c) for c in dup])
    lock_districts(conn, [community, *gdf["parent_code"].dropna().astype(str)])
    gdf, snapped = _snap_to_communities(conn, gdf, snap_m) if snap_m else (gdf, [])
    scope = "AND parent_code = :comm" if community else ""
    cur = gpd.read_postgis(text(
        "SELECT code, parent_code, name, responsible_body, geom FROM area WHERE level = 'grid' "
        f"AND generation_high IS NULL {scope}"), conn, geom_col="geom",
        params={"comm": community}, crs=4326).set_index("code")
    have = gdf[gdf["code"].notna()].set_index("code")
    common = have.index.intersection(cur.index)
    a = np.asarray(have.loc[common].geometry.values, dtype=object)
    b = np.asarray(cur.loc[common].geometry.values, dtype=object)
    same = shapely.equals_exact(shapely.normalize(to_multipolygons(a)), shapely.normalize(b), 1e-9)
    replace = {c: g for c, g, s in zip(common, a, same, strict=True) if not s}
    retire = [c for c in cur.index if c not in have.index]
    create = [{"code": c, "parent_code": r["parent_code"], "geometry": r.geometry,
               "name": r["name"], "responsible_body": r["responsible_body"]}
              for c, r in have.loc[have.index.difference(cur.index)].iterrows()]
    create += [{"parent_code": r["parent_code"], "geometry": r.geometry, "name": r["name"],
                "responsible_body": r["responsible_body"]}
               for _, r in gdf[gdf["code"].isna()].iterrows()]
    log.info("import: %d unchanged, %d reshaped, %d new, %d retired", len(common) - len(replace),
             len(replace), len(create), len(retire))
    read = {"renamed": renamed, "snapped": snapped}
    res = apply_change(conn, "import", replace=replace, retire=retire, create=create,
                       params={"community": community, "features": len(gdf),
                               "source": Path(source).name if not isinstance(
                                   source, gpd.GeoDataFrame) else "dataframe", **read},
                       effective_from=effective_from, settings=settings, author=author,
                       grids=grids)
    res.source = read
    return res


def _snap_to_communities(conn: Connection, gdf: gpd.GeoDataFrame, metres: float,
                         ) -> tuple[gpd.GeoDataFrame, list[dict[str, Any]]]:
    """``gdf`` (EPSG:4326) with each grid's vertices within ``metres`` of its current
    community's boundary moved onto it (``geo.data.snap.snap_children``); what moved."""
    from geo.data.snap import snap_children

    comms = gpd.read_postgis(text(
        "SELECT code, geom FROM area WHERE level = 'community' AND generation_high IS NULL "
        "AND code = ANY(:c)"), conn, geom_col="geom",
        params={"c": sorted(set(gdf["parent_code"].dropna().astype(str)))}, crs=4326)
    layers = {"grid": gdf, "community": comms}
    moved = snap_children(layers, metres)
    log.info("import: snapped %d grids to their community's boundary (within %s m)",
             len(moved), metres)
    return layers["grid"], moved


def read_grid_layer(path: str | Path, layer: str | None = None, *,
                    layer_map: dict[str, str] | None = None,
                    field_map: dict[str, str] | None = None,
                    renamed: list[dict[str, Any]] | None = None) -> gpd.GeoDataFrame:
    """The grid layer of a file, in the file's own CRS: the layer ``layer`` (or
    ``layer_map["grid"]``) names, which must exist; else the layer called 'grid' or a common
    name for it ('grids', '网格': ``geo.data.names``); else the file's only layer. Fields are
    read as ``geo.data.io.read_file`` reads them (``field_map``, the common data-office names
    such as WGBM); what was read under another name is appended to ``renamed``."""
    import pyogrio

    from geo.data.io import read_file
    from geo.data.names import layer_key

    path = Path(path)
    other = sorted(set(layer_map or {}) - {"grid"})
    if other:
        raise InvalidInput("a grid import reads one layer", [Problem(
            reason=f"only grid=... can be mapped, not {o}", field="map", feature=o)
            for o in other])
    want = layer or (layer_map or {}).get("grid")
    kw: dict[str, Any] = {"field_map": field_map, "renamed": renamed}
    if path.is_dir() or not path.exists():  # read_file names the missing file
        return read_file(path, layers=["grid"], layer_map={"grid": want} if want else None,
                         **kw)["grid"]
    try:
        names = [row[0] for row in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise InvalidInput(f"cannot read {path.name}", [Problem(
            reason=str(exc), field="file", feature=path.name)]) from exc
    if len(names) == 1 and (want is None or want == names[0] or path.suffix != ".gpkg"):
        return read_file(path, layer="grid", **kw)["grid"]
    if want is not None:
        if want not in names:
            raise InvalidInput(f"no layer '{want}' in {path.name}", [Problem(
                reason=f"the file's layers are {', '.join(names) or 'none'}", field="layer",
                feature=want)])
        return read_file(path, layers=["grid"], layer_map={"grid": want}, **kw)["grid"]
    grid_like = [n for n in names if layer_key(n) == "grid"]
    if len(grid_like) != 1:
        raise InvalidInput(f"which layer of {path.name} holds the grids?", [Problem(
            reason=f"the file's layers are {', '.join(names) or 'none'}: name one "
            "(layer, or map grid=NAME)", field="layer", feature="grid")])
    return read_file(path, layers=["grid"], **kw)["grid"]
