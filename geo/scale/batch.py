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
    """A ``distributed.Client`` of the scheduler at ``address`` (None: ``WANGGE_DASK_SCHEDULER``
    if set), or of a new LocalCluster of ``workers`` processes (``"local"``, or nothing set;
    closed on exit)."""
    from distributed import Client, LocalCluster

    from geo.scale.settings import ScaleSettings

    if address is None:
        address = ScaleSettings().dask_scheduler
    if address and address != "local":
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

    if src.suffix.lower() == ".parquet":
        return lookup_parquet_dask(client, engine, src, dst, crs=crs, at=at)
    if src.suffix.lower() != ".csv":
        raise InvalidInput("the Dask lookup reads CSV or Parquet",
                           [Problem(reason="use a .csv or .parquet file", field="SRC")])
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


def _categories(index: Any) -> dict[str, list[str]]:
    """The categories of the four lookup columns (the same in every partition)."""
    from geo.lookup import STATUS_NAMES

    parents = [index.grid_info[i]["parent_code"] for i in range(len(index.grid_codes))]
    return {"grid_code": list(index.grid_codes),
            "community_code": sorted({c for c in parents if c}),
            "street_code": sorted({s for c in parents if c and (s := street_of(c))}),
            "lookup_status": [STATUS_NAMES[i] for i in range(max(STATUS_NAMES) + 1)]}


def _slots(index: Any, cats: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Per grid index (and a last slot for none): the category code of each column."""
    parents = [index.grid_info[i]["parent_code"] for i in range(len(index.grid_codes))]
    where = {k: {c: i for i, c in enumerate(v)} for k, v in cats.items()}
    return {"grid_code": np.r_[np.arange(len(index.grid_codes)), -1].astype(np.int32),
            "community_code": np.asarray([where["community_code"].get(c, -1) for c in parents]
                                         + [-1], dtype=np.int32),
            "street_code": np.asarray([where["street_code"].get(street_of(c) or "", -1) if c else -1
                                       for c in parents] + [-1], dtype=np.int32)}


def _lookup_typed(part: pd.DataFrame, lon: str, lat: str, crs: str, index: Any,
                  cats: dict[str, list[str]], slots: dict[str, np.ndarray]) -> pd.DataFrame:
    """A block of typed rows with the four lookup columns appended as categoricals: numbers
    in, numbers out (no text is parsed or written per point)."""
    x, y = _wgs84(part, lon, lat, crs)
    gi, status = index.classify(x, y)
    slot = np.where(gi >= 0, gi, len(index.grid_codes))
    out = {k: pd.Categorical.from_codes(slots[k][slot], categories=cats[k])
           for k in ("grid_code", "community_code", "street_code")}
    out["lookup_status"] = pd.Categorical.from_codes(status.astype(np.int32),
                                                     categories=cats["lookup_status"])
    return part.assign(**out)


def lookup_frame(frame: pd.DataFrame, index: Any, crs: str = "wgs84") -> pd.DataFrame:
    """One process's version of a block of ``lookup_parquet_dask``: ``frame`` with the four
    lookup columns appended (categoricals), by ``index``."""
    lon, lat = coordinate_columns(list(frame.columns))
    cats = _categories(index)
    return _lookup_typed(frame, lon, lat, normalise_crs(crs), index, cats, _slots(index, cats))


def lookup_parquet_dask(client: Any, engine: Engine, src: Path, dst: Path, *,
                        crs: str = "wgs84", at: date | str | None = None) -> tuple[int, int]:
    """Look up every point of Parquet ``src`` (a file or a directory of parts, with numeric
    lon/lat columns in ``crs``) on the cluster; write Parquet ``dst`` with the input columns
    and ``grid_code``, ``community_code``, ``street_code``, ``lookup_status`` (dictionary
    encoded), the rows in the input's order. Each block is classified where it is read with
    the broadcast index: no shuffle, since every worker holds the whole index (with one index
    per district, blocks would first be grouped by district). Returns (points, in a grid)."""
    import dask
    import dask.dataframe as dd

    from geo import lookup

    if dst.suffix.lower() != ".parquet":
        raise InvalidInput("a Parquet input is written as Parquet",
                           [Problem(reason="use a .parquet output", field="DST")])
    name = normalise_crs(crs)
    with engine.connect() as conn:
        index = lookup.get_index(conn, at=at)
    points = dd.read_parquet(str(src))
    lon, lat = coordinate_columns(list(points.columns))
    cats = _categories(index)
    [shared] = client.scatter([index], broadcast=True)
    meta = points._meta.assign(**{k: pd.Categorical([], categories=v)
                                  for k, v in cats.items()})
    out = points.map_partitions(_lookup_typed, lon, lat, name, shared, cats,
                                _slots(index, cats), meta=meta)
    write = out.to_parquet(str(dst), write_index=False, compute=False)
    k = len(cats["lookup_status"])
    counts = out.map_partitions(  # per block, then summed: no shuffle
        lambda p: pd.DataFrame([np.bincount(p["lookup_status"].cat.codes, minlength=k)],
                               columns=[str(i) for i in range(k)]),
        meta={str(i): "int64" for i in range(k)}).sum()
    _, counted = dask.compute(write, counts)  # type: ignore[attr-defined]  # one pass: written and counted
    n = int(counted.sum())
    if n == 0:
        raise InvalidInput("the file holds no points", [Problem(reason="empty", field="SRC")])
    return n, int(counted[str(lookup.OK)])
