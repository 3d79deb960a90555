"""Province-scale batch lookups on a Dask cluster (dask.distributed + dask-geopandas).

``lookup_file_dask`` does what ``wangge lookup-file`` does for a CSV, spread over a cluster:

1. the CSV is read in blocks (``dask.dataframe.read_csv``), every column kept as text so that
   the rows come out as they went in; each row gets its global position ``_row``;
2. the points are **partitioned spatially**: a Hilbert key over the district's bounds
   (dask-geopandas ``spatial_shuffle``), so each partition holds a compact patch of the map
   (with several districts, a partition would need only its districts' grids);
3. the lookup index (``geo.lookup``, built once from PostgreSQL, preferably the standby) is
   broadcast to every worker, and each partition is classified with it: the same
   ``LookupIndex.classify`` that the single process runs, so the answers are the same;
4. the rows are put back in input order (``set_index('_row')`` with the input's divisions) and
   written as one CSV (or a Parquet directory) with ``grid_code``, ``community_code``,
   ``street_code`` and ``lookup_status`` appended, as the single-process command does.

Coordinates: lon/lat columns in ``crs`` (WGS 84 by default); converted to WGS 84 per point.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from geo.core.codes import street_of
from geo.core.errors import InvalidInput, Problem
from geo.data.coords import normalise_crs, to_wgs84
from geo.lookup.files import coordinate_columns  # the single-process command's column rule

HILBERT_LEVEL = 16
OUT_COLUMNS = ("grid_code", "community_code", "street_code", "lookup_status")


@contextlib.contextmanager
def dask_client(address: str | None = None, *, workers: int = 2,
                threads_per_worker: int = 1) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``address``, or of a new LocalCluster of
    ``workers`` processes (closed on exit)."""
    from distributed import Client, LocalCluster

    if address:
        with Client(address) as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                      processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def _wgs84(part: pd.DataFrame, lon: str, lat: str, crs: str) -> tuple[np.ndarray, np.ndarray]:
    x = pd.to_numeric(part[lon], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(part[lat], errors="coerce").to_numpy(dtype=float)
    if crs in ("wgs84", "cgcs2000"):
        return x, y
    ok = np.isfinite(x) & np.isfinite(y) & (np.abs(x) <= 180) & (np.abs(y) <= 90)
    wx, wy = x.copy(), y.copy()
    if ok.any():
        wx[ok], wy[ok] = to_wgs84(x[ok], y[ok], crs)
    return wx, wy


def _points(part: pd.DataFrame, lon: str, lat: str, crs: str, offsets: list[int],
            bounds: tuple[float, float, float, float],
            partition_info: dict[str, Any] | None = None) -> pd.DataFrame:
    """The numbers of one block: ``_row`` (position in the file), ``x``/``y`` (WGS 84, NaN
    where not a number) and ``_kx``/``_ky`` (the point clipped into ``bounds``, bad points at
    a corner: only for placing the row on the Hilbert curve)."""
    start = offsets[partition_info["number"]] if partition_info else 0
    wx, wy = _wgs84(part, lon, lat, crs)
    x0, y0, x1, y1 = bounds
    return pd.DataFrame({
        "_row": np.arange(start, start + len(part), dtype=np.int64), "x": wx, "y": wy,
        "_kx": np.clip(np.nan_to_num(wx, nan=x0), x0, x1),
        "_ky": np.clip(np.nan_to_num(wy, nan=y0), y0, y1)}, index=part.index)


def _classify(part: pd.DataFrame, index: Any) -> pd.DataFrame:
    """``_row``, grid index (-1: none) and status code of each point, by ``index``."""
    gi, status = index.classify(part["x"].to_numpy(), part["y"].to_numpy())
    return pd.DataFrame({"_row": part["_row"].to_numpy(), "gi": gi.astype(np.int32),
                         "st": status.astype(np.int8)}, index=part.index)


def _attach(part: pd.DataFrame, found: pd.DataFrame, index: Any) -> pd.DataFrame:
    """The block's rows as read, with the four lookup columns of ``found`` (same rows)."""
    from geo.lookup import STATUS_NAMES

    if len(part) != len(found):
        raise RuntimeError(f"block of {len(part)} rows got {len(found)} answers")
    gi, status = found["gi"].to_numpy(), found["st"].to_numpy()
    codes = np.asarray([*index.grid_codes, None], dtype=object)
    parents = np.asarray([*(index.grid_info[i]["parent_code"]
                            for i in range(len(index.grid_codes))), None], dtype=object)
    streets = np.asarray([street_of(c) if c else None for c in parents], dtype=object)
    names = np.asarray([STATUS_NAMES[i] for i in range(max(STATUS_NAMES) + 1)], dtype=object)
    slot = np.where(gi >= 0, gi, len(index.grid_codes))
    return part.assign(grid_code=codes[slot], community_code=parents[slot],
                       street_code=streets[slot], lookup_status=names[status])


def lookup_file_dask(client: Any, engine: Engine, src: Path, dst: Path, *,
                     crs: str = "wgs84", at: date | str | None = None,
                     blocksize: str | int = "64MB",
                     spatial: bool = True,
                     spatial_partitions: int | None = None) -> tuple[int, int]:
    """Look up every point of CSV ``src`` on the cluster of ``client``; write ``dst`` (.csv:
    one file; .parquet: a directory). Returns (points, points in a grid)."""
    import dask.dataframe as dd
    import dask_geopandas

    from geo import lookup

    if src.suffix.lower() != ".csv":
        raise InvalidInput("the Dask lookup reads CSV", [Problem(reason="use a .csv file",
                                                                 field="SRC")])
    ext = dst.suffix.lower()
    if ext not in (".csv", ".parquet"):
        raise InvalidInput("unknown output format",
                           [Problem(reason="use .csv or .parquet", field="DST")])
    name = normalise_crs(crs)
    with engine.connect() as conn:
        index = lookup.get_index(conn, at=at)
    raw = dd.read_csv(src, dtype=str, keep_default_na=False, na_filter=False,
                      blocksize=blocksize)
    columns = list(raw.columns)
    lon, lat = coordinate_columns(columns)
    lengths = raw.map_partitions(len).compute().tolist()
    offsets = [0, *np.cumsum(lengths).tolist()]
    n = offsets[-1]
    if n == 0:
        raise InvalidInput("the file holds no points", [Problem(reason="empty", field="SRC")])
    [shared] = client.scatter([index], broadcast=True)
    bounds = tuple(float(v) for v in index.district_geom.bounds)
    points = raw.map_partitions(_points, lon, lat, name, offsets, bounds, meta={
        "_row": "int64", "x": "float64", "y": "float64", "_kx": "float64", "_ky": "float64"})
    found_meta = {"_row": "int64", "gi": "int32", "st": "int8"}
    if spatial and 0 not in lengths:
        # only numbers travel: the Hilbert patch of each point (dask-geopandas), a hash
        # shuffle on it, the lookup patch by patch, and a sort back into the file's blocks
        parts = spatial_partitions or max(2, raw.npartitions)
        geoms = dask_geopandas.points_from_xy(points, "_kx", "_ky", crs=4326)
        key = dask_geopandas.from_dask_dataframe(points, geometry=geoms).hilbert_distance(
            total_bounds=bounds, level=HILBERT_LEVEL)
        patch = (key.astype("int64") * parts // (1 << (2 * HILBERT_LEVEL))).astype("int64")
        spread = points[["_row", "x", "y"]].assign(_patch=patch).shuffle(
            on="_patch", npartitions=parts)
        found = spread.map_partitions(_classify, shared, meta=found_meta).set_index(
            "_row", divisions=[*offsets[:-1], n - 1])
    else:
        found = points.map_partitions(_classify, shared, meta=found_meta)
    found = client.persist(found)
    ok = int((found["st"] == lookup.OK).sum().compute())
    meta = pd.DataFrame({**{c: pd.Series(dtype=object) for c in columns},
                         **{c: pd.Series(dtype=object) for c in OUT_COLUMNS}})
    out = dd.map_partitions(_attach, raw, found, shared, meta=meta, align_dataframes=False)
    if ext == ".csv":
        out.to_csv(str(dst), single_file=True, index=False)
    else:
        out.to_parquet(str(dst), write_index=False)
    return n, ok
