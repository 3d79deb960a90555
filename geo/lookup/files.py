"""Points in and answers out: lon/lat from CSV, JSON and GeoJSON bodies and point files; the
per-point JSON answers of a batch. Coordinates are degrees in the caller's CRS (files with a
CRS are reprojected to WGS 84 first)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from geo.core.errors import InvalidInput, Problem
from geo.lookup.index import (
    INVALID,
    NO_GRID,
    OK,
    OUT_OF_RANGE,
    OUTSIDE,
    STATUS_NAMES,
    SWAPPED,
    LookupIndex,
)

if TYPE_CHECKING:
    from pandas import DataFrame

LON_COLUMNS = ("lon", "lng", "longitude", "x")
LAT_COLUMNS = ("lat", "latitude", "y")


def coordinate_columns(columns: Any) -> tuple[str, str]:
    """The (lon, lat) column names of a CSV header (case and spaces ignored), else InvalidInput
    naming the missing one."""
    cols = {str(c).strip().lower(): str(c) for c in columns}
    found = []
    for want, aliases in (("lon", LON_COLUMNS), ("lat", LAT_COLUMNS)):
        name = next((cols[a] for a in aliases if a in cols), None)
        if name is None:
            raise InvalidInput("CSV lacks a coordinate column",
                               [Problem(reason="column missing", field=want)])
        found.append(name)
    return found[0], found[1]


def frame_points(frame: DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) float arrays of a CSV frame's coordinate columns; bad values become NaN."""
    import pandas as pd

    lon_c, lat_c = coordinate_columns(frame.columns)
    lon = pd.to_numeric(frame[lon_c], errors="coerce").to_numpy(dtype=np.float64)
    lat = pd.to_numeric(frame[lat_c], errors="coerce").to_numpy(dtype=np.float64)
    return lon, lat


def _floats(values: list[Any]) -> np.ndarray:
    """Numbers → float64; anything else → NaN (reported per point as not a number)."""
    import pandas as pd

    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        out: np.ndarray = pd.to_numeric(pd.Series(values, dtype=object),
                                        errors="coerce").to_numpy(dtype=np.float64)
        return out


def _feature_points(data: dict[str, Any]) -> list[Any]:
    """[lon, lat] (or [None, None]) per feature of a GeoJSON FeatureCollection of points."""
    feats = data.get("features")
    if not isinstance(feats, list):
        raise InvalidInput("bad FeatureCollection",
                           [Problem(reason="features must be an array", field="features")])
    coords: list[Any] = []
    for f in feats:
        geom = f.get("geometry") if isinstance(f, dict) else None
        c = geom.get("coordinates") if isinstance(geom, dict) and geom.get(
            "type") == "Point" else None
        coords.append(c if isinstance(c, list) and len(c) >= 2 else [None, None])
    return coords


def _pick(p: Any, key: str, pos: int) -> Any:
    if isinstance(p, dict):
        return p.get(key)
    return p[pos] if isinstance(p, list) and len(p) >= 2 else None


def parse_batch(body: bytes, content_type: str) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) arrays from a JSON array ({lon,lat} or [lon,lat]), a GeoJSON
    FeatureCollection of points, or CSV with lon/lat columns. Bad points become NaN."""
    import pandas as pd

    if "csv" in content_type:
        try:
            frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
        except Exception as exc:  # any parser failure is bad input
            raise InvalidInput("unreadable CSV",
                               [Problem(reason=f"not CSV: {exc}", field="body")]) from exc
        return frame_points(frame)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body is not JSON", [Problem(reason=str(exc), field="body")]) from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        data = _feature_points(data)
    if not isinstance(data, list):
        raise InvalidInput("batch must be an array",
                           [Problem(reason="expected a JSON array, FeatureCollection or CSV",
                                    field="body")])
    if data and isinstance(data[0], list):
        try:  # the common shape, [[lon, lat], ...], in one numpy call
            arr = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError):  # ragged or non-numeric: point by point below
            arr = None
        if arr is not None and arr.ndim == 2 and arr.shape[1] == 2:
            return arr[:, 0].copy(), arr[:, 1].copy()
    return _floats([_pick(p, "lon", 0) for p in data]), _floats([_pick(p, "lat", 1) for p in data])


def _error_bytes(status: int, district: str) -> bytes:
    reason = {
        NO_GRID: "in no grid",
        OUTSIDE: f"outside district {district}",
        SWAPPED: "lat and lon look swapped",
        INVALID: "not a number",
        OUT_OF_RANGE: "out of range (lon -180..180, lat -90..90)",
    }[status]
    return orjson.dumps({"status": STATUS_NAMES[status], "error": reason, "field": "lon,lat"})


def batch_entries(index: LookupIndex, gi: np.ndarray, status: np.ndarray) -> np.ndarray:
    """One JSON byte string per point (object array), from per-grid and per-status templates
    (built once per index)."""
    n = len(index.grid_codes)
    table = index.batch_templates
    if table is None:
        table = np.empty(n + 6, dtype=object)
        for g in range(n):
            street, community, grid = index.hierarchy(g)
            table[g] = orjson.dumps({
                "status": "ok", "grid": grid["code"],
                "community": community["code"] if community else None,
                "street": street["code"] if street else None,
                "district": index.district_for(g)["code"]})
        for st in (NO_GRID, OUTSIDE, SWAPPED, INVALID, OUT_OF_RANGE):
            table[n + st] = _error_bytes(st, index.district["code"])
        index.batch_templates = table
    pick = np.where(status == OK, gi, n + status.astype(np.int64))
    entries: np.ndarray = table[pick]
    return entries


def read_points(src: Path, crs: str) -> tuple[DataFrame, np.ndarray, np.ndarray, str]:
    """(frame, lon, lat, crs) of a point file: CSV (lon/lat columns in ``crs``), else a GeoJSON
    or GeoPackage of points (reprojected to WGS 84 when it has another CRS)."""
    import geopandas as gpd
    import pandas as pd

    if src.suffix.lower() == ".csv":
        frame = pd.read_csv(src)
        lon, lat = frame_points(frame)
        return frame, lon, lat, crs
    gdf = gpd.read_file(src)
    if gdf.crs is not None and gdf.crs.to_epsg() != 4326:
        gdf = gdf.to_crs(4326)
        crs = "wgs84"
    if not (gdf.geom_type == "Point").all():
        raise InvalidInput("only point features can be looked up",
                           [Problem(reason="not a point", field="geometry")])
    return gdf, gdf.geometry.x.to_numpy(), gdf.geometry.y.to_numpy(), crs


def write_points(out: DataFrame, dst: Path, lon: np.ndarray, lat: np.ndarray) -> None:
    """Write looked-up points to ``dst`` (.csv, .geojson/.json or .gpkg, by extension); a CSV
    input gets point geometry from the WGS 84 ``lon``/``lat`` for the spatial formats."""
    import geopandas as gpd
    import pandas as pd

    ext = dst.suffix.lower()
    if ext not in (".csv", ".geojson", ".json", ".gpkg"):
        raise InvalidInput("unknown output format",
                           [Problem(reason="use .csv, .geojson or .gpkg", field="OUT")])
    if not isinstance(out, gpd.GeoDataFrame) and ext != ".csv":
        out = gpd.GeoDataFrame(out, geometry=gpd.points_from_xy(lon, lat), crs=4326)
    if ext == ".csv":
        pd.DataFrame(out.drop(columns="geometry", errors="ignore")).to_csv(dst, index=False)
    elif ext == ".gpkg":
        gpd.GeoDataFrame(out).to_file(dst, driver="GPKG", layer="lookup")
    else:
        gpd.GeoDataFrame(out).to_file(dst, driver="GeoJSON")
