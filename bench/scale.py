"""Scale-out benchmark: workers behind HAProxy, a synchronous standby and its failover, Dask
lookups, and incident queries at size. Writes bench/results/scale.json.

Everything runs in a state directory of its own (``<WANGGE_STATE_DIR>/bench-scale``): its own
embedded primary, standby and bench database (a synthetic district, bench.incidents), so the
failover never touches the development cluster.

1. ``rps_1_worker`` / ``rps_2_workers``: ``wrk`` GETs /v1/lookup through HAProxy in front of
   ``wangge proxy``'s WorkerPool (workers on Unix sockets), 2,000 points inside the grids in
   turn, keep-alive, the requests built once in wrk's Lua ``init``. A pool of 1 and a pool of 2
   workers (each with its own HAProxy) are started and warmed together, then ``--rounds``
   rounds each run wrk ``--round-seconds`` on both, the order alternating: this machine's CPU
   speed swings by ±30 % over seconds, so 1 and 2 workers measured minutes apart gave ratios
   from 0.97 to 1.75 for the same code. The figures are the medians of the rounds;
   ``rps_ratio`` is the median of the per-round ratios (``rps_ratio_rounds``). With each, the
   CPU microseconds per request of the workers (W, both together), HAProxy (H) and wrk (K).

   ``cpu_two_core_slowdown`` (s): a pure-CPU Python loop alone and two copies at once, one
   pair after each round (10 pairs at least); the median of the pairs' both ÷ alone. The
   two vCPUs slow each other down when both are busy. ``rps_ratio_ceiling`` = 2 W / (W + H +
   K) ÷ s, with W, H, K from the 2-worker runs: two workers keep both cores busy, so
   ``rps_2_workers`` ≤ 2 cores / (W + H + K) per request; one worker is bound by its own core,
   ``rps_1_worker`` ≈ 1 core / W₁, where W₁ ≈ W ÷ s is a request's cost with the other core
   not fully busy (W is measured with both busy). The ratio can then be at most 2 W₁ / (W + H
   + K) = 2 W / (W + H + K) ÷ s: the issue's 1.5× needs HAProxy and wrk off these two cores.
2. A synchronous standby is made (pg_basebackup + slot); report threads file reports (the
   domain call the API makes; commit = acknowledgement) while ``pg_stat_replication``'s
   ``replay_lag`` is sampled every 20 ms: ``standby_lag_ms_p99``.
3. Mid-burst the primary is stopped (``immediate``: its loss), the standby promoted
   (``geo.core.replica.promote``): ``failover_s`` from the stop until a report commits on the
   new primary; ``acknowledged_lost`` = acknowledged reports missing (or doubled) there.
4. ``dask_points_per_s_{1,2}_workers``: ``lookup_file_dask`` over ``--points`` points in
   Parquet parts (typed lon/lat in, dictionary-encoded codes out) on a LocalCluster of 1 and 2
   worker processes (cluster start-up excluded); the issue's size is ``--points 100000000``.
5. With ``--incidents N``: N incidents bulk-generated month by month into the monthly
   partitions (bench.incidents.bulk_fill_months) on the promoted primary, and the overdue /
   per-grid statistics queries timed there (their EXPLAIN ANALYZE in
   bench/results/scale_incident_plans.txt).

6. ``dask_distances_s_{1,2}_workers``: the per-building distances to every kind on the dense
   circles city (bench.circles' ``wangge_bench_circles_dense`` in the development cluster,
   run first) with ``building_distances_dask`` on a LocalCluster of 1 and 2 processes
   (start-up excluded), next to ``single_process_distances_s`` of the same run, each checked
   equal to the single process. ``--only-distances`` runs just this and updates scale.json.

    .venv/bin/python -m bench.scale --points 2000000 [--incidents 20000000]
    .venv/bin/python -m bench.scale --skip standby,dask,distances --rounds 8 --round-seconds 5
    .venv/bin/python -m bench.scale --only-distances
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import RESULTS_DIR, free_port, run_wrk, write_results


def _settings():
    from geo.core.settings import DatabaseSettings

    return DatabaseSettings()


LOOKUP_LUA = """
local points = {%s}
local requests = {}
local i = 0
init = function(args)
  for k, p in ipairs(points) do
    requests[k] = wrk.format("GET", string.format("/v1/lookup?lon=%%.7f&lat=%%.7f", p[1], p[2]))
  end
end
request = function()
  i = i %% #requests + 1
  return requests[i]
end
"""
"""wrk's script: every request built once in ``init`` (``%s``: the points as Lua tables), then
cycled through; formatting a request per call cost wrk CPU that the workers need."""

SPIN = """
import sys, time
while time.time() < float(sys.argv[1]):
    time.sleep(0.001)
t, x = time.perf_counter(), 0
for i in range(8_000_000):
    x += i
print(time.perf_counter() - t)
"""
"""A pure-CPU Python loop (~0.5 s on a core of its own), started at the Unix time argv[1] so
that two copies run at once; prints its own duration in seconds."""


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spin_pair() -> tuple[float, float]:
    """Seconds of ``SPIN`` alone (the mean of a run before and one after), and the mean
    seconds of two copies running at once between them: the CPU's speed drifts over seconds
    here, and a run on either side cancels a steady drift."""
    import subprocess
    import sys

    def run(n: int) -> float:
        at = str(time.time() + 0.3)  # both start together, interpreter start-up excluded
        procs = [subprocess.Popen([sys.executable, "-c", SPIN, at], stdout=subprocess.PIPE,
                                  text=True) for _ in range(n)]
        return statistics.mean(float(p.communicate()[0]) for p in procs)

    before, both = run(1), run(2)
    return (before + run(1)) / 2, both


def _median(values: list[float], digits: int = 2) -> float:
    return round(statistics.median(values), digits)


def lookup_rps(url: str, points: list[tuple[float, float]], rounds: int, seconds: int,
               connections: int, spin_pairs: int = 10) -> dict:
    """wrk GETs /v1/lookup through HAProxy in front of a pool of 1 and a pool of 2 workers,
    both started and warmed first, then ``rounds`` rounds of one ``seconds`` run on each (the
    order alternating), cycling through ``points`` (hotline calls come from everywhere, not
    one address); with the CPU each part used per request (workers, HAProxy, wrk). After each
    round, and until ``spin_pairs`` are done, one ``spin_pair``: the machine's own two-core
    slowdown, measured between the same rounds."""
    import contextlib
    import resource

    import httpx

    from geo.auth.service import create_api_key
    from geo.core.db import make_engine
    from geo.scale.proxy import WorkerPool

    eng = make_engine(url)
    with eng.begin() as c:
        key = create_api_key(c, "bench-scale", scopes=("lookup",), rate_per_minute=10**9)
    eng.dispose()
    headers = {"X-API-Key": key}
    lua = LOOKUP_LUA % ", ".join(f"{{{x:.7f},{y:.7f}}}" for x, y in points)
    env = {"WANGGE_DATABASE_URL": url, "WANGGE_JWT_SECRET": "b" * 64,
           "WANGGE_POOL_SIZE": "4"}
    load = _load()
    runs: dict[int, list[dict]] = {1: [], 2: []}
    spins: list[tuple[float, float]] = []
    with contextlib.ExitStack() as stack:
        pools = {n: stack.enter_context(WorkerPool(
            n, host="127.0.0.1", port=free_port(), env=env,
            state_dir=_settings().state_dir / f"rps-{n}")) for n in (1, 2)}
        bases = {n: f"http://127.0.0.1:{pool.port}" for n, pool in pools.items()}
        for base in bases.values():
            for x, y in points[:20]:
                httpx.get(f"{base}/v1/lookup", params={"lon": x, "lat": y}, headers=headers,
                          timeout=30).raise_for_status()
            run_wrk(base + "/", seconds=2, connections=connections, threads=1,
                    headers=headers, lua=lua)
        for r in range(rounds):
            for n in ((1, 2) if r % 2 == 0 else (2, 1)):
                pool = pools[n]
                pids = {"workers": [w.proc.pid for w in pool.workers if w.proc],
                        "haproxy": [pool.haproxy.pid] if pool.haproxy else []}
                cpu0 = {k: sum(_cpu_s(p) for p in v) for k, v in pids.items()}
                wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                res = run_wrk(bases[n] + "/", seconds=seconds, connections=connections,
                              threads=1, headers=headers, lua=lua)
                wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = {k: sum(_cpu_s(p) for p in v) - cpu0[k] for k, v in pids.items()}
                cpu["wrk"] = wrk1.ru_utime + wrk1.ru_stime - wrk0.ru_utime - wrk0.ru_stime
                res.pop("raw")
                res["cpu_us_per_request"] = {k: 1e6 * v / max(res["requests"], 1)
                                             for k, v in cpu.items()}
                runs[n].append(res)
            spins.append(spin_pair())
            ratio = runs[2][-1]["rps"] / runs[1][-1]["rps"]
            print(f"round {r + 1}: 1 worker {runs[1][-1]['rps']:.0f} rps, 2 workers "
                  f"{runs[2][-1]['rps']:.0f} rps, ratio {ratio:.2f}; spin alone "
                  f"{spins[-1][0]:.3f} s, both {spins[-1][1]:.3f} s", flush=True)
    while len(spins) < spin_pairs:
        spins.append(spin_pair())

    out: dict = {"rps_rounds": rounds, "rps_round_seconds": seconds, "rps_load_average": load}
    ratios = [b["rps"] / a["rps"] for a, b in zip(runs[1], runs[2], strict=True)]
    out["rps_1_worker"] = _median([x["rps"] for x in runs[1]])
    out["rps_2_workers"] = _median([x["rps"] for x in runs[2]])
    out["rps_ratio"] = _median(ratios)
    out["rps_ratio_rounds"] = [round(x, 2) for x in ratios]
    parts = ("workers", "haproxy", "wrk")
    out["wrk"] = {str(n): {
        "rps_rounds": [round(x["rps"]) for x in rs],
        "requests": sum(x["requests"] for x in rs),
        "errors": sum(x["errors"] for x in rs),
        "p50_ms": _median([x["p50_ms"] for x in rs]),
        "p99_ms": _median([x["p99_ms"] for x in rs]),
        "cpu_us_per_request": {k: _median([x["cpu_us_per_request"][k] for x in rs], 1)
                               for k in parts}} for n, rs in runs.items()}
    slowdown = statistics.median(both / alone for alone, both in spins)
    out["cpu_two_core_slowdown"] = round(slowdown, 3)
    out["cpu_spin_s"] = {"alone": [round(a, 3) for a, _ in spins],
                         "both": [round(b, 3) for _, b in spins]}
    w, h, k = (out["wrk"]["2"]["cpu_us_per_request"][p] for p in parts)
    out["rps_ratio_ceiling"] = round(2 * w / (w + h + k) / slowdown, 2)
    print({k: v for k, v in out.items() if k != "wrk"}, out["wrk"], sep="\n")
    return out


def replication_and_failover(url: str, points: list[tuple[float, float]],
                             seconds: float) -> dict:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from geo import incidents as inc
    from geo.core import embedded, replica
    from geo.core.db import make_engine

    settings = _settings()
    replica.create_standby(settings)
    replica.set_synchronous(settings, True)
    state = replica.replication_state(settings)
    eng = make_engine(url, pool_size=8)
    inc_settings = inc.IncidentSettings()
    acked, sent, lags = [], [], []
    lock, stop, sampling = threading.Lock(), threading.Event(), threading.Event()

    def burst(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            token = f"scale-{uuid.uuid4().hex}"
            lon, lat = points[int(rng.integers(len(points)))]
            with lock:
                sent.append(token)
            try:
                with eng.begin() as c:
                    inc.report(c, category="rubbish", lon=lon, lat=lat, description=token,
                               settings=inc_settings, actor="bench-scale")
            except DBAPIError:
                time.sleep(0.05)
                continue
            with lock:
                acked.append(token)

    def sample() -> None:
        with make_engine(url, pool_size=1).connect() as c:
            while not sampling.is_set():
                ms = c.execute(text(
                    "SELECT extract(epoch FROM coalesce(replay_lag, '0'::interval)) * 1000 "
                    "FROM pg_stat_replication")).scalar()
                c.rollback()
                if ms is not None:
                    lags.append(float(ms))
                time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=burst, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    sampling.set()
    sampler.join()
    acked_before_stop = len(acked)
    t_stop = time.monotonic()
    embedded.stop(settings, mode="immediate")
    stop.set()
    for t in threads:
        t.join(30)
    eng.dispose()
    replica.promote(settings)
    new = make_engine(embedded.url(settings, make_url_db(url)))
    while True:
        try:
            with new.begin() as c:
                inc.report(c, category="noise", lon=points[0][0], lat=points[0][1],
                           settings=inc_settings, actor="bench-scale", description="after")
            break
        except DBAPIError:
            time.sleep(0.05)
    failover_s = time.monotonic() - t_stop
    with new.connect() as c:
        counts = dict(c.execute(text(
            "SELECT description, count(*) FROM incident WHERE description LIKE 'scale-%' "
            "GROUP BY 1")).all())
    new.dispose()
    lost = sum(1 for t in acked if counts.get(t) != 1)
    return {
        "replication": state,
        "reports_acknowledged": len(acked),
        "reports_acknowledged_per_s": round(acked_before_stop / seconds, 1),
        "standby_lag_ms_p50": round(float(np.percentile(lags, 50)), 2) if lags else None,
        "standby_lag_ms_p99": round(float(np.percentile(lags, 99)), 2) if lags else None,
        "lag_samples": len(lags),
        "failover_s": round(failover_s, 2),
        "acknowledged_lost": lost,
        "unacknowledged_but_filed": sum(1 for t in counts if t not in set(acked)),
    }


def make_url_db(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).database


def dask_rate(url: str, n: int, work: Path, chunk: int = 2_000_000) -> dict:
    """Points/s of ``lookup_file_dask`` over ``n`` random points of the district's bounds,
    Parquet in and out (written in chunks of ``chunk`` rows: 100,000,000 points never sit in
    memory), on 1 and 2 local worker processes; and the single process over the first
    10,000,000 of them (read a part, classify, write a part) for scale."""
    from sqlalchemy import text

    from geo import lookup
    from geo.core.db import make_engine
    from geo.scale.batch import dask_client, lookup_file_dask, lookup_frame

    eng = make_engine(url)
    with eng.connect() as c:
        x0, y0, x1, y1 = c.execute(text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
            "ST_Extent(geom) e FROM area_current WHERE level = 'district') d")).one()
        index = lookup.get_index(c)
    rng = np.random.default_rng(100)
    src = work / "points.parquet"
    src.mkdir(parents=True, exist_ok=True)
    for k, lo in enumerate(range(0, n, chunk)):
        m = min(chunk, n - lo)
        pd.DataFrame({"id": np.arange(lo, lo + m), "lon": rng.uniform(x0, x1, m).round(6),
                      "lat": rng.uniform(y0, y1, m).round(6)}).to_parquet(
            src / f"part.{k:05d}.parquet", index=False)
    out: dict = {"points": n, "dask_input": f"parquet, {chunk:,} rows a part"}
    t0, done = time.perf_counter(), 0
    for part in sorted(src.iterdir()):
        frame = pd.read_parquet(part)
        lookup_frame(frame, index).to_parquet(
            work / "single.parquet", index=False)
        done += len(frame)
        if done >= 10_000_000:
            break
    out["single_process_points_per_s"] = round(done / (time.perf_counter() - t0))
    out["single_process_points"] = done
    for workers in (1, 2):
        with dask_client("local", workers=workers) as client:
            dst = work / f"out{workers}.parquet"
            t0 = time.perf_counter()
            total, ok = lookup_file_dask(client, eng, src, dst)
            dt = time.perf_counter() - t0
            shutil.rmtree(dst, ignore_errors=True)
        out[f"dask_points_per_s_{workers}_worker{'s' if workers > 1 else ''}"] = round(n / dt)
        out[f"seconds_{workers}"] = round(dt, 1)
        out["in_a_grid"] = ok
        print(workers, "dask worker(s):", round(n / dt), "points/s", f"load {os.getloadavg()}")
        out[f"load_average_{workers}"] = round(os.getloadavg()[0], 1)
    eng.dispose()
    return out


def dask_distances(partition_buildings: int = 100_000) -> dict:
    """Per-building distances to every kind on the dense circles city (bench.circles'
    ``wangge_bench_circles_dense`` in the development cluster: the Helsinki network tiled,
    500,000 buildings, 5,000 stations; loaded if missing): the single process, then
    ``building_distances_dask`` on a LocalCluster of 1 and 2 processes (cluster start-up
    excluded), each checked equal to the single process."""
    from sqlalchemy import text

    from bench.circles import _engine, load_city
    from bench.circles_real import DENSE_DB
    from geo.circles.build import BLOCKED_SQL
    from geo.circles.distances import building_distances
    from geo.circles.runs import CircleSettings, metric_srid
    from geo.scale.batch import dask_client
    from geo.scale.distances import building_distances_dask

    eng = _engine(DENSE_DB)
    load_city(eng, 2000, 500_000, 5_000, 0, network="helsinki")
    s = CircleSettings()
    with eng.connect() as c:
        kinds = [r[0] for r in c.execute(text("SELECT code FROM station_kind ORDER BY 1"))]
        srid = metric_srid(c)
        edges = c.execute(text("SELECT count(*) FROM walk_edge")).scalar_one()
        t0 = time.perf_counter()
        c.execute(text(BLOCKED_SQL), {"kinds": list(s.circle_barrier_kinds)})
        ids, dist, near, _ = building_distances(c, srid, kinds, s.distance_limit_m,
                                                s.circle_snap_max_m)
        single = time.perf_counter() - t0
        c.rollback()
    out: dict = {"dask_distances_city": f"dense circles city ({len(ids):,} buildings, "
                 f"{edges:,} walk edges, {len(kinds)} kinds, limit {s.distance_limit_m:.0f} m)",
                 "single_process_distances_s": round(single, 2)}
    print("single process:", round(single, 2), "s")
    url = eng.url.render_as_string(hide_password=False)
    for workers in (1, 2):
        key = f"dask_distances_s_{workers}_worker{'s' if workers > 1 else ''}"
        with dask_client("local", workers=workers) as client:
            t0 = time.perf_counter()
            ids2, dist2, near2, tm = building_distances_dask(
                client, url, srid, kinds, s.distance_limit_m, s.circle_snap_max_m,
                list(s.circle_barrier_kinds), max_buildings=partition_buildings)
            dt = time.perf_counter() - t0
        reach = np.isfinite(dist)
        same = bool((ids2 == ids).all() and (np.isfinite(dist2) == reach).all()
                    and np.allclose(dist2[reach], dist[reach], rtol=0, atol=1e-6)
                    and (near2 == near).all())
        out[key] = round(dt, 2)
        out[f"{key}_ratio_to_single"] = round(dt / single, 2)
        out[f"{key}_equal_to_single"] = same
        out["dask_distances_partitions"] = int(tm["partitions"])
        out["dask_distances_halo_edges"] = int(tm["halo_edges"])
        print(workers, "dask worker(s):", round(dt, 2), "s; equal:", same, tm)
    eng.dispose()
    return out


def _load() -> str:
    """The machine's load averages (1, 5, 15 min), as ``uptime`` prints them."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, default=852)
    ap.add_argument("--seconds", type=int, default=10, help="report-burst seconds")
    ap.add_argument("--rounds", type=int, default=8,
                    help="rps: rounds of one wrk run on 1 and one on 2 workers")
    ap.add_argument("--round-seconds", type=int, default=5, help="rps: seconds of a wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--points", type=int, default=2_000_000, help="Dask points (issue: 1e8)")
    ap.add_argument("--incidents", type=int, default=0, help="fill incidents to N (0: skip)")
    ap.add_argument("--skip", default="", help="comma list of: rps,standby,dask,distances")
    ap.add_argument("--reuse-incidents", action="store_true",
                    help="time the incident queries on the database the last --incidents run "
                    "filled (migrated to head first); implies --skip rps,standby,dask")
    ap.add_argument("--only-distances", action="store_true",
                    help="only the Dask distances (dense circles city); update scale.json")
    ap.add_argument("--partition-buildings", type=int, default=100_000,
                    help="Dask distances: buildings per partition at most")
    args = ap.parse_args()
    if args.rounds < 1 or args.round_seconds < 1:
        ap.error("--rounds and --round-seconds must be 1 or more")
    skip = set(filter(None, args.skip.split(",")))
    if args.reuse_incidents:
        skip |= {"rps", "standby", "dask", "distances"}
    previous = RESULTS_DIR / "scale.json"
    distances: dict = {}
    if "distances" not in skip:  # in the development cluster, before the bench's own
        distances = dask_distances(args.partition_buildings)
        if args.only_distances:
            kept = {k: v for k, v in json.loads(previous.read_text()).items()
                    if k != "machine"} if previous.exists() else {}
            write_results("scale", {**kept, **distances, "dask_distances_load": _load()})
            return

    base = Path(os.environ.get("WANGGE_STATE_DIR", ".wangge")).resolve()
    state = base / "bench-scale"
    if not args.reuse_incidents:
        shutil.rmtree(state, ignore_errors=True)
    os.environ["WANGGE_STATE_DIR"] = str(state)
    os.environ.pop("WANGGE_DATABASE_URL", None)
    from bench.incidents import sample_points, setup_database
    from geo.core import embedded, replica

    kept = {k: v for k, v in json.loads(previous.read_text()).items() if k != "machine"} \
        if skip and previous.exists() else {}  # a partial run updates the last full one
    figures: dict = {**kept, "note": "one run on a shared 2-core machine with other "
                     "engineers' jobs (see load_average_*); the parts skipped (--skip) are "
                     "kept from the previous run"}
    figures.update(distances)
    try:
        if args.reuse_incidents:  # the database the last --incidents run filled, migrated
            from sqlalchemy import text
            from sqlalchemy.engine import make_url

            from bench.incidents import DB_NAME
            from geo.core.db import make_engine, migrate, resolve_url
            from geo.core.settings import DatabaseSettings

            url = make_url(resolve_url(DatabaseSettings())).set(
                database=DB_NAME).render_as_string(hide_password=False)
            t = time.perf_counter()
            migrate(url)  # 0017 builds the roll-up from the filled table
            figures["incident_migrate_to_head_s"] = round(time.perf_counter() - t, 1)
            eng = make_engine(url)
            with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("VACUUM ANALYZE incident_grid_day"))
            eng.dispose()
        else:
            url, _key = setup_database(args.grids)
        points = sample_points(url, 2000)
        figures["grids"] = args.grids
        if "rps" not in skip:
            figures.update(lookup_rps(url, points, args.rounds, args.round_seconds,
                                      args.connections))
        if "dask" not in skip:
            work = state / "dask"
            work.mkdir(parents=True, exist_ok=True)
            figures.update(dask_rate(url, args.points, work))
            shutil.rmtree(work, ignore_errors=True)
        if "standby" not in skip:
            figures.update(replication_and_failover(url, points, args.seconds))
        if args.incidents:
            from bench.incidents import bulk_fill_months, explain_queries, time_queries

            if not args.reuse_incidents:
                t = time.perf_counter()
                bulk_fill_months(url, args.incidents)
                figures["incident_fill_s"] = round(time.perf_counter() - t, 1)
            figures["incident_queries"] = time_queries(url, repeat=5)
            explain_queries(url, RESULTS_DIR / "scale_incident_plans.txt")
            figures.update(incidents=figures["incident_queries"]["incidents"],
                           overdue_query_ms=figures["incident_queries"]["overdue_query_ms"],
                           grid_stats_query_ms=figures["incident_queries"][
                               "grid_stats_query_ms"])
        figures["targets"] = {"rps_2_workers": "≥ 1.5 × rps_1_worker", "acknowledged_lost": 0,
                              "queries_ms_at_20M": 100}
        write_results("scale", figures)
    finally:
        s = _settings()
        embedded.stop(replica.standby_settings(s), mode="immediate")
        embedded.stop(s, mode="fast")


if __name__ == "__main__":
    main()
