"""Benchmark point lookup on the synthetic city.

    .venv/bin/python -m bench.lookup --grids 10000 --points 2000000

Measures in one run: in-process batch throughput (lattice + edge test + STRtree) against
geopandas.sjoin, one PostGIS join and per-point PostGIS queries; HTTP single-point throughput
with p50/p99 from wrk against uvicorn on localhost, and the empty endpoint under the same load;
HTTP batch points/s; GCJ-02 inversion points/s; index build time and memory. Writes
bench/results/lookup.json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import orjson
import shapely
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import run_wrk, uvicorn_server, write_results
from geo import lookup
from geo.core import embedded
from geo.core.db import make_engine, migrate, resolve_url
from geo.core.settings import DatabaseSettings
from geo.data import coords


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prepare(grids: int, seed: int) -> tuple[str, str]:
    """A bench database holding the synthetic city of ``grids`` grids (reused when present)."""
    settings = DatabaseSettings()
    base = resolve_url(settings)
    name = f"wangge_bench_lookup_{grids}"
    embedded.ensure_database(settings, name)
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    eng = make_engine(url)
    with eng.connect() as c:
        have = c.execute(text("SELECT count(*) FROM area WHERE level = 'grid' "
                              "AND generation_high IS NULL")).scalar()
    if have != grids:
        from geo.data.store import write_layers
        from geo.samples.synth import generate_city

        print(f"writing the {grids}-grid synthetic city to {name} ...", flush=True)
        layers = generate_city(grids=grids, buildings=2 * grids, stations=50, seed=seed)
        with eng.begin() as c:
            write_layers(c, layers, progress=True)
    eng.dispose()
    return url, name


def best_rate(fn, n: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def _pooled(runs: list[dict]) -> dict:
    """wrk rounds of one endpoint: requests/s over all of them, the median p50 and the worst
    p99 (wrk's histograms cannot be merged from its text output)."""
    return {"rps": float(np.mean([r["rps"] for r in runs])),
            "p50_ms": float(np.median([r["p50_ms"] for r in runs])),
            "p99_ms": max(r["p99_ms"] for r in runs),
            "non2xx": sum(r["errors"] for r in runs),
            "rounds_rps": [r["rps"] for r in runs]}


def http_bench(db_name: str, sample: np.ndarray, seconds: int, conns: int,
               batch_points: np.ndarray, key: str | None, workers: int = 1,
               rounds: int = 3) -> dict[str, float]:
    """wrk against uvicorn; with ``key`` the access policy is on and the key is sent (the
    production path), without it the policy is switched off (the lookup's own cost)."""
    import httpx

    env = {**os.environ, "WANGGE_DB_NAME": db_name,
           "WANGGE_ENFORCE_ACCESS": "true" if key else "false"}
    headers = {"X-API-Key": key} if key else {}
    with uvicorn_server(env, workers=workers,
                        extra_args=("--loop", "uvloop", "--http", "httptools")) as base:
        httpx.get(base + "/v1/lookup", params={"lon": sample[0, 0], "lat": sample[0, 1]},
                  timeout=120, headers=headers).raise_for_status()  # index warm
        # One script for both endpoints, so that wrk does the same work for each (a Lua
        # request() costs wrk CPU, and wrk shares the 2 cores): the empty endpoint gets the
        # same query strings and ignores them.
        points = "pts = {" + ",".join(f"{{{float(x)!r},{float(y)!r}}}" for x, y in sample) + "}\n"
        scripts = {path: points + "math.randomseed(1)\nrequest = function()\n"
                   "  local p = pts[math.random(#pts)]\n"
                   f"  return wrk.format('GET', '{path}?lon=' .. p[1] .. '&lat=' .. p[2])\n"
                   "end\n" for path in ("/v1/lookup", "/v1/ping")}
        # Alternating rounds, so that a noisy spell on this shared machine hits both alike.
        runs: dict[str, list[dict]] = {"/v1/lookup": [], "/v1/ping": []}
        for _ in range(rounds):
            for path, out in runs.items():
                out.append(run_wrk(base + path, seconds=seconds, connections=conns,
                                   lua=scripts[path], headers=headers))
        single, empty = (_pooled(runs[p]) for p in ("/v1/lookup", "/v1/ping"))
        body = orjson.dumps(batch_points.tolist())
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()  # upload, lookup and the whole answer received
            r = httpx.post(base + "/v1/lookup/batch", content=body, timeout=300,
                           headers={"content-type": "application/json", **headers})
            r.raise_for_status()
            best = min(best, time.perf_counter() - t0)
            answer = orjson.loads(r.content)  # the client's own parsing is not timed
            assert answer["count"] == len(answer["results"]) == len(batch_points)
    return {
        "http_single_rps": single["rps"], "http_single_p50_ms": single["p50_ms"],
        "http_single_p99_ms": single["p99_ms"], "http_single_non2xx": single["non2xx"],
        "http_empty_rps": empty["rps"], "http_empty_p99_ms": empty["p99_ms"],
        "http_single_rounds_rps": single["rounds_rps"],
        "http_empty_rounds_rps": empty["rounds_rps"],
        "http_single_vs_empty": single["rps"] / empty["rps"],
        "http_batch_points": len(batch_points),
        "http_batch_points_per_s": len(batch_points) / best,
        "wrk": {"threads": 1, "connections": conns, "seconds_per_round": seconds,
                "rounds": rounds},
        "uvicorn_workers": workers,
    }


def _http_figures(args: argparse.Namespace, eng, db_name: str, x: np.ndarray,
                  y: np.ndarray, status: np.ndarray) -> dict:
    from geo.auth.service import create_api_key

    ok = np.flatnonzero(status == lookup.OK)
    sample = np.column_stack((x[ok[:2000]], y[ok[:2000]]))
    batch = np.column_stack((x[: args.http_batch_points], y[: args.http_batch_points]))
    with eng.begin() as c:
        key = create_api_key(c, f"bench-{time.time_ns()}", scopes=("lookup",),
                             rate_per_minute=10**9)
    figures = http_bench(db_name, sample, args.http_seconds, args.http_connections, batch, key,
                         args.http_workers, args.http_rounds)
    no_auth = http_bench(db_name, sample, args.http_seconds, args.http_connections, batch, None,
                         args.http_workers, args.http_rounds)
    figures.update({f"{k}_policy_off": v for k, v in no_auth.items()
                    if k not in ("wrk", "uvicorn_workers")})
    return figures


def http_only(args: argparse.Namespace, eng, db_name: str) -> None:
    import json

    from bench.common import RESULTS_DIR

    old = json.loads((RESULTS_DIR / "lookup.json").read_text())
    old.pop("machine", None)
    with eng.connect() as c:
        index = lookup.get_index(c)
    minx, miny, maxx, maxy = shapely.bounds(index.district_geom)
    rng = np.random.default_rng(args.seed + 1)
    x = rng.uniform(minx, maxx, 200_000)
    y = rng.uniform(miny, maxy, 200_000)
    _, status = index.classify(x, y)
    old.update(_http_figures(args, eng, db_name, x, y, status))
    old["http_load_average_1m"] = os.getloadavg()[0]
    write_results("lookup", old)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=2_000_000, help="in-process batch size")
    ap.add_argument("--sjoin-points", type=int, default=500_000)
    ap.add_argument("--postgis-points", type=int, default=200_000)
    ap.add_argument("--per-point-queries", type=int, default=2_000)
    ap.add_argument("--http-seconds", type=int, default=5, help="seconds per wrk round")
    ap.add_argument("--http-rounds", type=int, default=3,
                    help="alternating lookup/empty rounds")
    ap.add_argument("--http-connections", type=int, default=32)
    ap.add_argument("--http-workers", type=int, default=1,
                    help="uvicorn workers (each holds its own index)")
    ap.add_argument("--http-batch-points", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--http-only", action="store_true",
                    help="Re-measure only the HTTP figures; keep the others from the last JSON.")
    args = ap.parse_args()

    url, db_name = prepare(args.grids, args.seed)
    eng = make_engine(url)
    if args.http_only:
        return http_only(args, eng, db_name)
    lookup.invalidate_index(keep_previous=False)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    with eng.connect() as c:
        index = lookup.get_index(c)
    build_s = time.perf_counter() - t0
    index_rss = rss_mb() - rss0
    print(f"index: {build_s:.1f} s, {index_rss:.0f} MB RSS, lattice {index.nx}x{index.ny}, "
          f"boundary cells {index.boundary_cell_share:.1%}", flush=True)

    minx, miny, maxx, maxy = shapely.bounds(index.district_geom)
    rng = np.random.default_rng(args.seed + 1)
    n = args.points
    x = rng.uniform(minx, maxx, n)
    y = rng.uniform(miny, maxy, n)
    batch_rate = best_rate(lambda: index.classify(x, y), n, repeat=5)
    gi, status = index.classify(x, y)
    share_ok = float((status == lookup.OK).mean())
    print(f"in-process batch: {batch_rate / 1e6:.1f} M points/s", flush=True)

    # geopandas.sjoin (building the point GeoSeries from the arrays counts: same input)
    grids_gdf = gpd.GeoDataFrame({"code": index.grid_codes}, geometry=index.grid_geoms,
                                 crs=4326)
    ns = args.sjoin_points

    def sjoin() -> None:
        pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(x[:ns], y[:ns]), crs=4326)
        gpd.sjoin(pts, grids_gdf, how="left", predicate="intersects")

    sjoin_rate = best_rate(sjoin, ns, repeat=2)
    print(f"sjoin: {sjoin_rate / 1e6:.2f} M points/s", flush=True)

    # one PostGIS join, in its fastest form found here: the points in a GiST-indexed temp table
    # and the current grids as the outer loop, so each grid polygon is prepared once and probes
    # the point index (the reverse, one area-index probe per point, ran ~8x slower). Loading the
    # points and building their index count in the time.
    npg = args.postgis_points
    with eng.begin() as c:
        t0 = time.perf_counter()
        c.execute(text(
            "CREATE TEMP TABLE bench_pts ON COMMIT DROP AS SELECT t.i, "
            "ST_SetSRID(ST_MakePoint(t.x, t.y), 4326) AS g "
            "FROM unnest(CAST(:x AS float8[]), CAST(:y AS float8[])) WITH ORDINALITY "
            "AS t(x, y, i)"), {"x": x[:npg].tolist(), "y": y[:npg].tolist()})
        c.execute(text("CREATE INDEX ON bench_pts USING gist (g)"))
        c.execute(text("ANALYZE bench_pts"))
        rows = c.execute(text(
            "WITH g AS MATERIALIZED (SELECT code, geom FROM area WHERE level = 'grid' "
            "AND generation_high IS NULL) "
            "SELECT p.i, min(g.code) FROM g JOIN bench_pts p ON ST_Intersects(g.geom, p.g) "
            "GROUP BY p.i")).all()
        pg_join_rate = npg / (time.perf_counter() - t0)
    assert 0 < len(rows) <= npg
    print(f"PostGIS join: {pg_join_rate / 1e6:.2f} M points/s", flush=True)

    # per-point PostGIS queries
    q = text("SELECT code FROM area WHERE level = 'grid' AND generation_high IS NULL "
             "AND ST_Intersects(geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326)) "
             "ORDER BY code LIMIT 1")
    nq = args.per_point_queries
    with eng.connect() as c:
        t0 = time.perf_counter()
        for i in range(nq):
            c.execute(q, {"x": float(x[i]), "y": float(y[i])}).scalar()
        per_point_qps = nq / (time.perf_counter() - t0)
    print(f"PostGIS per point: {per_point_qps:.0f} queries/s", flush=True)

    # GCJ-02 inversion
    gx, gy = coords.from_wgs84(x, y, "gcj02")
    gcj_rate = best_rate(lambda: coords.to_wgs84(gx, gy, "gcj02"), n)
    print(f"GCJ-02 inversion: {gcj_rate / 1e6:.2f} M points/s", flush=True)

    figures = {
        "grids": args.grids,
        "points": n,
        "points_inside_grids_share": share_ok,
        "lattice_cells": index.nx * index.ny,
        "boundary_cell_share": index.boundary_cell_share,
        "batch_points_per_s": batch_rate,
        "sjoin_points_per_s": sjoin_rate,
        "sjoin_points": ns,
        "postgis_join_points_per_s": pg_join_rate,
        "postgis_join_points": npg,
        "postgis_per_point_qps": per_point_qps,
        "ratio_batch_vs_sjoin": batch_rate / sjoin_rate,
        "ratio_batch_vs_postgis_join": batch_rate / pg_join_rate,
        "ratio_batch_vs_postgis_per_point": batch_rate / per_point_qps,
        "gcj02_inverse_points_per_s": gcj_rate,
        "index_build_s": build_s,
        "index_rss_mb": index_rss,
        "index_array_mb": index.nbytes / 2**20,
    }
    if not args.skip_http:
        figures.update(_http_figures(args, eng, db_name, x, y, status))
    load = os.getloadavg()
    figures["load_average_1m"] = load[0]
    figures["note"] = (
        "2-core machine, shared: absolute figures move with load_average_1m; compare ratios "
        "from one run. sjoin time includes building the point GeoSeries from the same arrays. "
        "wrk and uvicorn (one worker) share the 2 cores with the database. http_* figures: "
        "access policy on, an API key sent (verified keys are cached, "
        "WANGGE_API_KEY_CACHE_SECONDS); *_policy_off: the same with WANGGE_ENFORCE_ACCESS=false.")
    write_results("lookup", figures)
    eng.dispose()


if __name__ == "__main__":
    main()
