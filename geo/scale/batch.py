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

LON_NAMES = ("lon", "lng", "longitude", "x")
LAT_NAMES = ("lat", "latitude", "y")
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


def coordinate_columns(columns: list[str]) -> tuple[str, str]:
    """The lon and lat column names (as the single-process command recognises them)."""
    lower = {c.lower(): c for c in columns}
    lon = next((lower[c] for c in LON_NAMES if c in lower), None)
    lat = next((lower[c] for c in LAT_NAMES if c in lower), None)
    if lon is None or lat is None:
        raise InvalidInput("CSV needs lon and lat columns",
                           [Problem(reason="column missing", field="lon" if lon is None
                                    else "lat")])
    return lon, lat


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


def _key_points(part: pd.DataFrame, lon: str, lat: str, crs: str,
                bounds: tuple[float, float, float, float]) -> pd.DataFrame:
    """``_kx``/``_ky``: the WGS 84 point clipped into ``bounds`` (bad points at a corner),
    used only to place the row on the Hilbert curve."""
    wx, wy = _wgs84(part, lon, lat, crs)
    x0, y0, x1, y1 = bounds
    return part.assign(_kx=np.clip(np.nan_to_num(wx, nan=x0), x0, x1),
                       _ky=np.clip(np.nan_to_num(wy, nan=y0), y0, y1))


def classify_partition(part: pd.DataFrame, index: Any, lon: str, lat: str,
                       crs: str) -> pd.DataFrame:
    """The four lookup columns for one partition's points, with ``index`` (a LookupIndex)."""
    from geo.lookup import STATUS_NAMES

    wx, wy = _wgs84(part, lon, lat, crs)
    gi, status = index.classify(wx, wy)
    codes = np.asarray(index.grid_codes, dtype=object)
    parents = np.asarray([index.grid_info[i]["parent_code"] for i in range(len(codes))]
                         + [None], dtype=object)
    grid = np.where(gi >= 0, codes[np.maximum(gi, 0)], None)
    community = parents[np.where(gi >= 0, gi, len(codes))]
    names = np.asarray([STATUS_NAMES[i] for i in range(max(STATUS_NAMES) + 1)], dtype=object)
    out = part.drop(columns=[c for c in ("_kx", "_ky", "geometry") if c in part.columns])
    return out.assign(
        grid_code=grid, community_code=community,
        street_code=[street_of(c) if c else None for c in community],
        lookup_status=names[status.astype(np.int64)])


def _number_rows(part: pd.DataFrame, offsets: list[int],
                 partition_info: dict | None = None) -> pd.DataFrame:
    start = offsets[partition_info["number"]] if partition_info else 0
    return part.assign(_row=np.arange(start, start + len(part), dtype=np.int64))


def lookup_file_dask(client: Any, engine: Engine, src: Path, dst: Path, *,
                     crs: str = "wgs84", at: date | str | None = None,
                     blocksize: str | int = "64MB",
                     spatial: bool = True,
                     spatial_partitions: int | None = None) -> tuple[int, int]:
    """Look up every point of CSV ``src`` on the cluster of ``client``; write ``dst`` (.csv:
    one file; .parquet: a directory). Returns (points, points in a grid)."""
    import dask
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
    rows = raw.map_partitions(_number_rows, offsets,
                              meta={**raw.dtypes.to_dict(), "_row": "int64"})
    [shared] = client.scatter([index], broadcast=True)
    meta = pd.DataFrame({**{c: pd.Series(dtype=object) for c in columns},
                         "_row": pd.Series(dtype="int64"),
                         **{c: pd.Series(dtype=object) for c in OUT_COLUMNS}})
    if spatial:
        # Hilbert key of each point over the district's bounds (dask-geopandas), cut into
        # ``parts`` ranges: each range is a compact patch of the map. A hash shuffle on the
        # patch number moves the rows (no pass to compute quantiles), then they are classified
        # patch by patch and put back in input order.
        parts = spatial_partitions or max(2, raw.npartitions)
        bounds = tuple(float(v) for v in index.district_geom.bounds)
        keyed = rows.map_partitions(_key_points, lon, lat, name, bounds)
        geoms = dask_geopandas.points_from_xy(keyed, "_kx", "_ky", crs=4326)
        key = dask_geopandas.from_dask_dataframe(keyed, geometry=geoms).hilbert_distance(
            total_bounds=bounds, level=HILBERT_LEVEL)
        patch = (key.astype("int64") * parts // (1 << (2 * HILBERT_LEVEL))).astype("int64")
        spread = keyed.drop(columns=["_kx", "_ky"]).assign(_patch=patch).shuffle(
            on="_patch", npartitions=parts)
        looked = spread.drop(columns="_patch").map_partitions(
            classify_partition, shared, lon, lat, name, meta=meta)
        ordered = looked.set_index("_row", divisions=[*sorted(set(offsets[:-1])), n - 1])
    else:
        ordered = rows.map_partitions(classify_partition, shared, lon, lat, name,
                                      meta=meta).drop(columns="_row")
    if ext == ".csv":
        write = ordered.to_csv(str(dst), single_file=True, index=False, compute=False)
    else:
        write = ordered.to_parquet(str(dst), write_index=False, compute=False)
    _, ok = dask.compute(write, (ordered["lookup_status"] == "ok").sum())
    return n, int(ok)
