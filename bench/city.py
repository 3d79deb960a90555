"""Benchmark a city of several districts and a province's lookup index (issue 16).

    .venv/bin/python -m bench.city                       # 10 x 10,000 city, 100 x 100,000 index
    .venv/bin/python -m bench.city --city-grids 1000 --province-grids 10000   # a quick run

``city``: a 10-district synthetic city (10,000 grids, 500,000 buildings, 5,000 stations)
generated, written to a bench database in one transaction, and its index built from PostGIS.
``province``: a 100-district synthetic province of 100,000 grids, the index only (built in
process from the generated rows: buildings are not needed for it). For each: ``districts``,
``grids``, ``index_build_s``, ``index_rss_mb`` (RSS growth while building), the in-process
``batch_points_per_s`` (wall clock, best of 5) and ``geopandas.sjoin`` ``sjoin_points_per_s`` on
the same random points (uniform over the districts' bounds, WGS 84) in the same run; also
``batch_points_per_cpu_s`` (process CPU time, best of 5: steadier on a shared machine) and the
load average when the batch was timed. Writes bench/results/city.json.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections import namedtuple
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import write_results
from bench.lookup import best_rate, rss_mb
from geo import lookup
from geo.core import embedded
from geo.core.db import make_engine, migrate, resolve_url
from geo.core.settings import DatabaseSettings
from geo.lookup.city import make_index
from geo.lookup.settings import LookupSettings
from geo.samples.city import generate_districts

Row = namedtuple("Row", "level code parent_code name responsible_body metric_srid wkb")


def _rows(layers: dict[str, gpd.GeoDataFrame]) -> list[Row]:
    """Area rows as ``build_index`` reads them from PostGIS (WKB geometry)."""
    rows = []
    for level in ("district", "street", "community", "grid"):
        gdf = layers[level]
        wkb = shapely.to_wkb(np.asarray(gdf.geometry.values))
        for i, code in enumerate(gdf["code"].astype(str)):
            rows.append(Row(level, code,
                            gdf["parent_code"].iloc[i] if "parent_code" in gdf else None,
                            gdf["name"].iloc[i],
                            gdf["responsible_body"].iloc[i] if level == "grid" else None,
                            int(gdf["metric_srid"].iloc[i]) if level == "district" else None,
                            wkb[i]))
    return rows


def measure(index: Any, seed: int, points: int, sjoin_points: int) -> dict[str, float]:
    """Batch and sjoin throughput (points/s) on the same random points."""
    minx, miny, maxx, maxy = shapely.bounds(index.district_geom)
    rng = np.random.default_rng(seed)
    x = rng.uniform(minx, maxx, points)
    y = rng.uniform(miny, maxy, points)
    gi, status = index.classify(x, y)  # warm-up: compiles the numba kernels (cached on disk)
    load = os.getloadavg()
    batch = best_rate(lambda: index.classify(x, y), points, repeat=5)
    cpu = float("inf")
    for _ in range(5):
        c0 = time.process_time()
        index.classify(x, y)
        cpu = min(cpu, time.process_time() - c0)
    grids = gpd.GeoDataFrame({"code": index.grid_codes}, geometry=index.grid_geoms, crs=4326)
    ns = min(sjoin_points, points)

    def sjoin() -> None:
        pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(x[:ns], y[:ns]), crs=4326)
        gpd.sjoin(pts, grids, how="left", predicate="intersects")

    rate = best_rate(sjoin, ns, repeat=2)
    # the answers agree with shapely on a sample (a cheap correctness guard on the figures)
    k = min(20_000, points)
    hit_pt, hit_g = grids.sindex.query(shapely.points(x[:k], y[:k]), predicate="intersects")
    want = np.full(k, np.iinfo(np.int64).max)
    np.minimum.at(want, hit_pt, hit_g)
    want[want == np.iinfo(np.int64).max] = -1
    agree = float((want == gi[:k]).mean())
    return {"batch_points_per_s": batch, "sjoin_points_per_s": rate,
            "ratio_batch_vs_sjoin": batch / rate, "batch_points_per_cpu_s": points / cpu,
            "load_average_1_5_15": [round(v, 2) for v in load],
            "batch_points": points,
            "sjoin_points": ns, "share_in_grid": float((status == lookup.OK).mean()),
            "agreement_with_strtree": agree}


def city(args: argparse.Namespace) -> dict[str, Any]:
    settings = DatabaseSettings()
    name = f"wangge_bench_city_{args.city_districts}_{args.city_grids}"
    embedded.ensure_database(settings, name)
    url = make_url(resolve_url(settings)).set(database=name).render_as_string(
        hide_password=False)
    migrate(url)
    eng = make_engine(url)
    t0 = time.perf_counter()
    layers = generate_districts(districts=args.city_districts, grids=args.city_grids,
                                buildings=args.city_buildings, stations=args.city_stations,
                                seed=args.seed)
    generate_s = time.perf_counter() - t0
    from geo.data.store import write_layers

    with eng.begin() as c:
        c.execute(text("TRUNCATE area, generation, building, station, walk_edge, walk_node, "
                       "barrier, grid_team_member CASCADE"))
    t0 = time.perf_counter()
    with eng.begin() as c:
        write_layers(c, layers, kind="synth")
    write_s = time.perf_counter() - t0
    del layers
    gc.collect()
    lookup.invalidate_index(keep_previous=False)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    with eng.connect() as c:
        index = lookup.get_index(c)
    build_s = time.perf_counter() - t0
    out = {"districts": len(index.parts), "grids": len(index.grid_codes),
           "buildings": args.city_buildings, "stations": args.city_stations,
           "generate_s": generate_s, "write_s": write_s, "index_build_s": build_s,
           "index_rss_mb": rss_mb() - rss0, "index_array_mb": index.nbytes / 2**20,
           **measure(index, args.seed + 1, args.points, args.sjoin_points)}
    eng.dispose()
    return out


def province(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    layers = generate_districts(districts=args.province_districts, grids=args.province_grids,
                                buildings=args.province_grids, stations=0, seed=args.seed,
                                team=False)
    generate_s = time.perf_counter() - t0
    rows = _rows(layers)
    del layers
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    index = make_index(rows, {}, generation=None, version=None, settings=LookupSettings())
    build_s = time.perf_counter() - t0
    rss = rss_mb() - rss0
    del rows
    return {"districts": len(index.parts), "grids": len(index.grid_codes),
            "generate_s": generate_s, "index_build_s": build_s, "index_rss_mb": rss,
            "index_array_mb": index.nbytes / 2**20,
            **measure(index, args.seed + 2, args.points, args.sjoin_points)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--city-districts", type=int, default=10)
    ap.add_argument("--city-grids", type=int, default=10_000)
    ap.add_argument("--city-buildings", type=int, default=500_000)
    ap.add_argument("--city-stations", type=int, default=5_000)
    ap.add_argument("--province-districts", type=int, default=100)
    ap.add_argument("--province-grids", type=int, default=100_000)
    ap.add_argument("--points", type=int, default=2_000_000)
    ap.add_argument("--sjoin-points", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-city", action="store_true", help="Only the province index.")
    args = ap.parse_args()
    figures: dict[str, Any] = {}
    if not args.skip_city:
        figures["city"] = city(args)
        print(figures["city"], flush=True)
    figures["province"] = province(args)
    figures["targets"] = {
        "province_index_build_s_below": 60, "province_index_rss_mb_below": 2000,
        "batch_points_per_s_at_least": 10_000_000, "batch_vs_sjoin_at_least": 10}
    figures["note"] = ("batch and sjoin on the same uniform random points over the districts' "
                       "bounds, best of 5 (batch, after one warm-up that compiles the numba "
                       "kernels) and 2 (sjoin) runs in one process; sjoin time includes "
                       "building the point frame from the same arrays")
    write_results("city", figures)


if __name__ == "__main__":
    main()
