"""Import and export of every layer through pyogrio: GeoJSON (RFC 7946), Shapefile, GeoPackage.

Reading: ``read_file`` gives one GeoDataFrame per layer (GeoPackage layer names, else the file
stem, else an explicit ``layer=`` name). ``import_file`` reads, reprojects to EPSG:4326 (any CRS
pyproj knows; a missing or unknown CRS is refused), validates EVERYTHING, and only then writes
the layers in one transaction as a new generation (``geo.data.store.write_layers``).

Writing: ``export_layers`` writes the current generation's layers to one GeoPackage (one layer
each), GeoJSON (one file per layer, or a directory) or Shapefile (one file per layer, with the
10-character field names mapped explicitly so attributes round-trip).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Connection
from tqdm import tqdm

from geo.auth.service import LAYER_AREA_COLUMN, code_prefix_sql
from geo.core.errors import InvalidInput, NotFound, Problem, UnknownCRS
from geo.core.settings import DataSettings
from geo.data.crs import to_wgs84
from geo.data.names import field_aliases, layer_key
from geo.data.validate import AREA_LEVELS, LAYERS, validate_layers

log = logging.getLogger(__name__)

DRIVERS = {"gpkg": "GPKG", "geojson": "GeoJSON", "json": "GeoJSON", "shp": "ESRI Shapefile"}
SUFFIX = {"GPKG": ".gpkg", "GeoJSON": ".geojson", "ESRI Shapefile": ".shp"}

# Shapefile (dBase) field names hold at most 10 characters: an explicit, reversible map.
SHP_FIELDS = {
    "parent_code": "parent",
    "responsible_body": "resp_body",
    "metric_srid": "metricsrid",
    "community_code": "comm_code",
    "is_crossing": "crossing",
}
SHP_FIELDS_BACK = {v: k for k, v in SHP_FIELDS.items()}
# A Shapefile holds one geometry family: the point features of a mixed layer (buildings with and
# without footprints) are written beside it as <layer>__point.shp.
MIXED_POINT_SUFFIX = "__point"

# Columns per layer, in contract order (geometry last).
COLUMNS: dict[str, tuple[str, ...]] = {
    "district": ("code", "name", "metric_srid"),
    "street": ("code", "parent_code", "name"),
    "community": ("code", "parent_code", "name"),
    "grid": ("code", "parent_code", "name", "responsible_body"),
    "grid_team": ("grid_code", "role", "name", "phone"),
    "building": ("code", "name", "households", "residents", "floors", "grid_code"),
    "station": ("code", "name", "kind", "community_code"),
    "walk_edge": ("source", "target", "length_m", "road_class", "is_crossing", "name"),
    "barrier": ("kind", "name"),
    "compound": ("code", "name", "community_code"),
}
TEXT_COLUMNS = {"code", "parent_code", "grid_code", "community_code", "name", "phone",
                "responsible_body", "kind", "role", "road_class"}
INT_COLUMNS = {"metric_srid", "households", "residents", "floors", "source", "target"}


def _driver_for(path: Path, driver: str | None) -> str:
    if driver:
        d = DRIVERS.get(driver.lower(), driver)
        if d not in SUFFIX:
            raise InvalidInput(f"unknown format {driver!r}",
                               [Problem(reason="use gpkg, geojson or shp", field="format")])
        return d
    suffix = path.suffix.lower().lstrip(".")
    if suffix in DRIVERS:
        return DRIVERS[suffix]
    if path.is_dir() or not path.suffix:
        return "GeoJSON"
    raise InvalidInput(f"cannot tell the format of {path.name}",
                       [Problem(reason="name the file .gpkg, .geojson or .shp, or pass a format",
                                field="path")])


def _normalise(gdf: gpd.GeoDataFrame, layer: str) -> gpd.GeoDataFrame:
    """Map Shapefile field names back and restore column types (codes as text)."""
    gdf = gdf.rename(columns={k: v for k, v in SHP_FIELDS_BACK.items() if k in gdf.columns})
    for col in gdf.columns:
        if col in TEXT_COLUMNS and not pd.api.types.is_string_dtype(gdf[col].dtype):
            gdf[col] = gdf[col].map(
                lambda v: None if pd.isna(v) else str(int(v)) if isinstance(v, float)
                and float(v).is_integer() else str(v))
        if col == "is_crossing" and gdf[col].dtype != bool:
            gdf[col] = gdf[col].map(lambda v: str(v).lower() in ("1", "true", "t", "yes"))
    return gdf


def read_file(path: str | Path, layers: list[str] | None = None, *,
              layer: str | None = None, layer_map: dict[str, str] | None = None,
              field_map: dict[str, str] | None = None,
              renamed: list[dict[str, Any]] | None = None) -> dict[str, gpd.GeoDataFrame]:
    """Read ``path`` into ``{layer name: GeoDataFrame}`` in the file's own CRS.

    GeoPackages give their layer names; a Shapefile/GeoJSON gives its file stem unless ``layer``
    names it; common plural and Chinese names map to wangge's (``LAYER_ALIASES``); a directory
    gives every readable file in it. ``layers`` keeps only those names. ``layer_map`` ({our
    layer: the file's layer}, e.g. ``{"grid": "网格"}``) and ``field_map`` ({our field: the
    file's field}, e.g. ``{"code": "WGBM"}``, every layer) name what the file calls otherwise.
    Common data-office field names (``WGBM``, ``SQMC`` ...: ``geo.data.names``) are read
    without a mapping; every layer or field read under another name is appended to ``renamed``
    (``{"layer", "from"}`` for a layer, ``{"layer", "field", "as"}`` for a field).
    """
    own_layer = {theirs: ours for ours, theirs in (layer_map or {}).items()}
    own_field = {theirs: ours for ours, theirs in (field_map or {}).items()}
    path = Path(path)
    if not path.exists():
        raise NotFound(f"no such file: {path}")
    files: list[Path] = (sorted(p for p in path.iterdir() if p.suffix.lower() in
                                (".gpkg", ".geojson", ".json", ".shp"))
                         if path.is_dir() else [path])
    result: dict[str, gpd.GeoDataFrame] = {}
    for f in files:
        try:
            names = [row[0] for row in pyogrio.list_layers(f)]
        except Exception as exc:  # pyogrio raises DataSourceError and friends
            raise InvalidInput(f"cannot read {f.name}",
                               [Problem(reason=str(exc), field="file", feature=f.name)]) from exc
        for name in names:
            key = name if f.suffix.lower() == ".gpkg" else f.stem
            if key.endswith(MIXED_POINT_SUFFIX):
                key = key[: -len(MIXED_POINT_SUFFIX)]
            key = own_layer.get(name, own_layer.get(key, layer_key(key)))
            if layer and len(names) == 1 and not path.is_dir():
                key = layer
            if layers and key not in layers:
                continue
            try:
                gdf = pyogrio.read_dataframe(f, layer=name)
            except Exception as exc:
                raise InvalidInput(f"cannot read layer {name} of {f.name}",
                                   [Problem(reason=str(exc), field="layer", feature=name)]
                                   ) from exc
            if key != name and renamed is not None:
                renamed.append({"layer": key, "from": name})
            gdf = _normalise(field_aliases(gdf.rename(columns=own_field), key, renamed), key)
            if key in result:
                gdf = pd.concat([result[key], gdf.to_crs(result[key].crs)
                                 if gdf.crs and result[key].crs else gdf], ignore_index=True)
            result[key] = gdf
    unmapped = sorted(set(layer_map or {}) - set(result))
    if unmapped:
        raise InvalidInput("mapped layers not found in the file", [Problem(
            reason=f"no layer {layer_map[m]!r} in the file", field="map", feature=m)
            for m in unmapped if layer_map])
    if layers:
        missing = set(layers) - set(result)
        if missing:
            raise InvalidInput("layers not found in the file",
                               [Problem(reason="no such layer in the file", field="layer",
                                        feature=m) for m in sorted(missing)])
    return result


def import_file(
    conn: Connection,
    path: str | Path,
    *,
    layers: list[str] | None = None,
    layer: str | None = None,
    repair: bool = False,
    progress: bool = False,
    settings: DataSettings | None = None,
    note: str | None = None,
    layer_map: dict[str, str] | None = None,
    field_map: dict[str, str] | None = None,
    snap_m: float | None = None,
    snapped: list[dict[str, Any]] | None = None,
    renamed: list[dict[str, Any]] | None = None,
) -> int:
    """Read, reproject to EPSG:4326, validate everything, then write in ``conn``'s transaction.

    Nothing is written if any feature fails (the error lists every problem). Returns the new
    generation id. ``layer`` names the single layer of a Shapefile/GeoJSON whose file stem is not
    a layer name; ``layer_map`` / ``field_map`` as in ``read_file``. ``snap_m`` snaps streets,
    communities and grids to their parent's boundary within that many metres
    (``geo.data.snap``); what moved is appended to ``snapped``, the layers and fields read
    under another name to ``renamed``.
    """
    settings = settings or DataSettings()
    stages = tqdm(total=3, desc="import", unit="stage", disable=not progress)
    stages.set_postfix_str("read")
    data = read_file(path, layers, layer=layer, layer_map=layer_map, field_map=field_map,
                     renamed=renamed)
    total = sum(len(g) for g in data.values())
    stages.update(1)
    stages.set_postfix_str(f"reproject+validate {total} features")
    if total > settings.max_import_features:
        validate_layers(None, data, settings=settings)  # raises PayloadTooLarge
    crs_problems: list[Problem] = []
    projected: dict[str, gpd.GeoDataFrame] = {}
    for name, gdf in data.items():
        try:
            projected[name] = to_wgs84(name, gdf)
        except InvalidInput as exc:
            crs_problems.extend(exc.problems)
    if crs_problems:
        raise UnknownCRS("refused: a layer's CRS is missing or unknown; nothing was written",
                         crs_problems)
    if snap_m:
        from geo.data.snap import snap_children

        moves = snap_children(projected, snap_m)
        log.info("snapped %d features to their parent's boundary (within %s m)", len(moves),
                 snap_m)
        if snapped is not None:
            snapped.extend(moves)
    log.info("validating %d features in %d layer(s) from %s", total, len(projected), path)
    checked = validate_layers(conn, projected, repair=repair, settings=settings)
    stages.update(1)
    stages.set_postfix_str("write")
    from geo.data.store import write_layers

    with conn.begin_nested():
        generation = write_layers(conn, checked, kind="import",
                                  note=note or f"import {Path(path).name}", progress=progress)
    stages.update(1)
    stages.close()
    log.info("imported %d features as generation %s", total, generation)
    return generation


def _generation_clause(generation: int | None) -> str:
    if generation is None:  # in force now (a scheduled generation is not yet)
        from geo.data.generations import IN_FORCE_SQL

        return IN_FORCE_SQL
    return ("generation_low <= :gen AND (generation_high IS NULL OR generation_high >= :gen)")


# layer -> (SELECT ... WHERE <a first condition>, its geometry expression or None, ORDER BY)
_AREA_COLUMNS = {"district": "code, name, metric_srid",
                 "street": "code, parent_code, name",
                 "community": "code, parent_code, name",
                 "grid": "code, parent_code, name, responsible_body"}
LAYER_SQL: dict[str, tuple[str, str | None, str]] = {
    **{level: (f"SELECT {cols}, ST_AsBinary(geom) AS geom FROM area WHERE level = :level",
               "geom", "code") for level, cols in _AREA_COLUMNS.items()},
    "grid_team": ("SELECT grid_code, role, name, phone FROM grid_team_member WHERE true", None,
                  "grid_code, role, name"),
    "building": ("SELECT code, name, households, residents, floors, grid_code, "
                 "ST_AsBinary(COALESCE(ST_Multi(footprint), location)) AS geom "
                 "FROM building_now WHERE true", "COALESCE(footprint, location)", "code"),
    "station": ("SELECT code, name, kind, community_code, ST_AsBinary(location) AS geom "
                "FROM station WHERE true", "location", "code"),
    "walk_edge": ("SELECT id, source, target, length_m, road_class, is_crossing, name, "
                  "ST_AsBinary(geom) AS geom FROM walk_edge WHERE true", "geom", "id"),
    "barrier": ("SELECT kind, name, ST_AsBinary(geom) AS geom FROM barrier WHERE true", "geom",
                "kind, name"),
    "compound": ("SELECT code, name, community_code, ST_AsBinary(geom) AS geom "
                 "FROM compound WHERE true", "geom", "code"),
}


def _layer_filters(layer: str, geom: str | None, params: dict[str, Any], *,
                   generation: int | None, bbox: tuple[float, float, float, float] | None,
                   within: str | None) -> list[str]:
    """The WHERE conditions of ``read_layer`` (values bound into ``params``)."""
    where = []
    if layer in AREA_LEVELS:
        params["level"] = layer
        where.append(_generation_clause(generation))
    if within is not None:
        column = LAYER_AREA_COLUMN.get(layer)
        if column:
            where.append(code_prefix_sql(column, within, params, "within"))
        else:
            where.append("EXISTS (SELECT 1 FROM area_current w WHERE w.code = :within"
                         f" AND ST_Intersects(w.geom, {geom}))")
            params["within"] = within
    if bbox is not None and geom:
        where.append(f"{geom} && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326)")
        params.update(x0=bbox[0], y0=bbox[1], x1=bbox[2], y1=bbox[3])
    return where


def _wkb_frame(conn: Connection, sql: str, params: dict[str, Any]) -> gpd.GeoDataFrame:
    """The rows of ``sql`` (with a WKB column ``geom``) as a GeoDataFrame in EPSG:4326."""
    # Geometry as WKB, decoded in one vectorised shapely call (read_postgis decodes row by row).
    result = conn.execute(text(sql), params)
    cols = list(result.keys())
    rows = result.all()
    # Column-wise construction: from_records on SQLAlchemy Rows is ~10x slower.
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in cols]
    df = pd.DataFrame({c: pd.Series(list(v), dtype=object) if c == "geom" else list(v)
                       for c, v in zip(cols, columns, strict=True)})
    wkb = df.pop("geom").to_numpy(dtype=object)
    geoms = shapely.from_wkb(np.array([None if w is None else bytes(w) for w in wkb],
                                      dtype=object))
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(geoms, index=df.index, crs=4326),
                            crs=4326)


def _single_parts(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Single-part areas as Polygon (storage is MultiPolygon)."""
    parts = shapely.get_num_geometries(gdf.geometry.array)
    arr = gdf.geometry.array.copy()
    single = parts == 1
    if single.any():
        arr[single] = shapely.get_geometry(arr[single], 0)
    return gdf.set_geometry(gpd.GeoSeries(arr, index=gdf.index, crs=4326))


def read_layer(conn: Connection, layer: str, *, generation: int | None = None,
               bbox: tuple[float, float, float, float] | None = None,
               limit: int | None = None, within: str | None = None) -> gpd.GeoDataFrame:
    """One layer of the contract as a GeoDataFrame in EPSG:4326.

    Areas come from the current generation unless ``generation`` is given (then the versions
    valid in it). ``bbox`` (minx, miny, maxx, maxy in degrees) and ``limit`` narrow the result.
    ``within`` (an area code) keeps features whose area code starts with it (areas: their code;
    buildings and teams: grid code; stations and compounds: community code) or, for layers
    without one (walk_edge, barrier), that intersect that current area.
    """
    if layer not in LAYER_SQL:
        raise NotFound(f"unknown layer {layer!r}",
                       [Problem(reason=f"expected one of {', '.join(LAYERS)}", field="layer",
                                feature=layer)])
    sql, geom, order = LAYER_SQL[layer]
    params: dict[str, Any] = {"gen": generation}
    where = _layer_filters(layer, geom, params, generation=generation, bbox=bbox, within=within)
    if where:
        sql += " AND " + " AND ".join(where)
    sql += f" ORDER BY {order}"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = int(limit)
    if geom is None:
        return pd.DataFrame(conn.execute(text(sql), params).mappings().all(),
                            columns=list(COLUMNS["grid_team"]))
    gdf = _wkb_frame(conn, sql, params)
    if layer in AREA_LEVELS and len(gdf):
        gdf = _single_parts(gdf)
    return gdf


def _layers_present(conn: Connection) -> list[str]:
    present = []
    for layer in LAYERS:
        if layer in AREA_LEVELS:
            n = conn.execute(text("SELECT EXISTS (SELECT 1 FROM area_current WHERE level = :l)"),
                             {"l": layer}).scalar()
        else:
            table = {"grid_team": "grid_team_member"}.get(layer, layer)
            n = conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {table})")).scalar()
        if n:
            present.append(layer)
    return present


def export_layers(conn: Connection, path: str | Path, *, layers: list[str] | None = None,
                  driver: str | None = None, progress: bool = False) -> list[Path]:
    """Write the current generation's ``layers`` (default: every non-empty one) to ``path``.

    GPKG: one file, one layer each. GeoJSON (RFC 7946, lon/lat WGS 84): ``path`` is a directory
    (or a file stem) and each layer becomes ``<dir>/<layer>.geojson``. Shapefile: one
    ``<layer>.shp`` per layer in the directory ``path``, field names mapped by ``SHP_FIELDS``.
    The attribute-only layer ``grid_team`` is written as a table (GPKG) or a geometry-less file.
    Returns the files written.
    """
    path = Path(path)
    drv = _driver_for(path, driver)
    names = layers or _layers_present(conn)
    unknown = [n for n in names if n not in LAYERS]
    if unknown:
        raise InvalidInput("unknown layers", [Problem(reason="not a layer", field="layers",
                                                      feature=u) for u in unknown])
    written: list[Path] = []
    if drv == "GPKG":
        if path.exists():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        if path.suffix.lower() in (".geojson", ".json", ".shp") and len(names) == 1:
            targets = {names[0]: path}
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            path.mkdir(parents=True, exist_ok=True)
            targets = {n: path / f"{n}{SUFFIX[drv]}" for n in names}
    for name in tqdm(names, desc="export", unit="layer", disable=not progress):
        gdf = read_layer(conn, name)
        if drv == "GPKG":
            target = path
            kwargs: dict[str, Any] = {"layer": name, "append": path.exists()}
        else:
            target = targets[name]
            kwargs = {}
            if target.exists():
                target.unlink()
        if drv == "ESRI Shapefile":
            gdf = gdf.rename(columns=SHP_FIELDS)
            kwargs["encoding"] = "UTF-8"
        if drv == "GeoJSON":
            kwargs["layer_options"] = {"RFC7946": "YES", "COORDINATE_PRECISION": "15"}
        if drv == "ESRI Shapefile" and isinstance(gdf, gpd.GeoDataFrame) and len(gdf):
            # One shapefile holds one geometry family: points go to <layer>__point.shp and
            # are merged back into <layer> by read_file.
            is_point = (gdf.geometry.geom_type == "Point").to_numpy()
            if is_point.any() and not is_point.all():
                extra = target.with_name(f"{name}{MIXED_POINT_SUFFIX}.shp")
                pyogrio.write_dataframe(gdf[is_point], extra, driver=drv, **kwargs)
                written.append(extra)
                gdf = gdf[~is_point]
        if name == "grid_team" or not isinstance(gdf, gpd.GeoDataFrame):
            df = pd.DataFrame(gdf)
            pyogrio.write_dataframe(gpd.GeoDataFrame(df, geometry=[None] * len(df), crs=4326)
                                    if drv != "GPKG" else df, target, driver=drv, **kwargs)
        else:
            pyogrio.write_dataframe(gdf, target, driver=drv, **kwargs)
        if target not in written:
            written.append(target)
        log.info("exported %s: %d features to %s", name, len(gdf), target)
    return written
