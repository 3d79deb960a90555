"""Service circles at city scale: the service vs the obvious Python loop vs a Euclidean disc.

    .venv/bin/python -m bench.circles --grids 2000 --buildings 500000 --stations 5000
    .venv/bin/python -m bench.circles --runs real,dense      # only the newer runs

Three runs (``--runs``, default all; each updates its keys in ``bench/results/circles.json``):

* ``lattice``: the synthetic city on its lattice network (today's keys, below).
* ``real``: every demo station x 3 tiers on the demo's real Helsinki walk network
  (``wangge_bench_circles_real``): the raster circles timed (``real_ms_per_circle``, polygon
  time over search time), then the exact buffer of the same pieces for IoU, area ratio and
  building verdicts circle by circle.
* ``dense``: the synthetic city on the Helsinki network tiled over it (``network=helsinki``,
  ``wangge_bench_circles_dense``): circles + per-building distances to every kind +
  completeness (``dense_total_s``), the same nearest-station distances with pandana
  (``pandana_distances_s``), and the naive loop on a sample (``dense_speedup_vs_naive``).

Loads ``generate_city`` into its own database (``wangge_bench_circles``), then times
``build_circles`` (every station, three tiers) and ``run_coverage`` (every building, 300 m tier).
The naive loop is networkx ``single_source_dijkstra_path_length`` with a cutoff from the
station's nearest node, then shapely buffer-and-union of the reached edges (partial edges
included) per station and tier, timed on a sample and scaled to all stations.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time

import networkx as nx
import numpy as np
import shapely
from sqlalchemy import text

from bench.common import RESULTS_DIR, peak_rss_mb, write_results
from geo.circles.build import build_circles
from geo.circles.coverage import run_coverage
from geo.circles.runs import CircleSettings
from geo.core import embedded
from geo.core.db import make_engine, migrate
from geo.core.settings import DatabaseSettings

DB = "wangge_bench_circles"


def load_city(engine, grids: int, buildings: int, stations: int, seed: int,
              network: str = "lattice") -> float:
    from geo.data.store import write_layers
    from geo.samples.synth import generate_city

    with engine.connect() as c:
        have = c.execute(text("SELECT count(*) FROM station")).scalar()
        nb = c.execute(text("SELECT count(*) FROM building")).scalar()
    if have == stations and nb == buildings:
        print(f"reusing loaded city: {stations} stations, {buildings} buildings")
        return 0.0
    t0 = time.perf_counter()
    layers = generate_city(grids=grids, buildings=buildings, stations=stations, seed=seed,
                           team=False, network=network)
    with engine.begin() as c:
        c.execute(text("TRUNCATE analysis_run, building, station, walk_edge, walk_node, barrier,"
                       " compound, area, generation CASCADE"))
        write_layers(c, layers, progress=True)
    with engine.connect() as c:
        c.execute(text("COMMIT"))
        for t in ("building", "station", "walk_edge", "walk_node", "barrier", "area"):
            c.execute(text(f"ANALYZE {t}"))
    return time.perf_counter() - t0


def naive_loop(engine, sample: int, tiers: list[float], buffer_m: float, seed: int) -> dict:
    """networkx + shapely per station; returns seconds per station and the sample size."""
    with engine.connect() as c:
        srid = c.execute(text("SELECT metric_srid FROM area_current WHERE level = 'district'"
                              " LIMIT 1")).scalar()
        edges = c.execute(text(
            "SELECT source, target, length_m, ST_AsBinary(ST_Transform(geom, :s)) FROM walk_edge"
        ), {"s": srid}).all()
        nodes = c.execute(text("SELECT id, ST_X(ST_Transform(geom, :s)), ST_Y(ST_Transform(geom,"
                               " :s)) FROM walk_node"), {"s": srid}).all()
        st = c.execute(text("SELECT ST_X(ST_Transform(location, :s)), ST_Y(ST_Transform("
                            "location, :s)) FROM station ORDER BY id"), {"s": srid}).all()
    g = nx.Graph()
    geoms = {}
    for u, v, length, wkb in edges:
        g.add_edge(u, v, weight=length)
        geoms[(u, v)] = shapely.from_wkb(bytes(wkb))
    ids = np.array([n[0] for n in nodes])
    tree = shapely.STRtree(shapely.points([(n[1], n[2]) for n in nodes]))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(st), size=min(sample, len(st)), replace=False)
    t_search = t_poly = 0.0
    for i in pick:
        t0 = time.perf_counter()
        start = ids[tree.nearest(shapely.Point(st[i]))]
        dist = nx.single_source_dijkstra_path_length(g, start, cutoff=max(tiers))
        t1 = time.perf_counter()
        for tier in tiers:
            parts = []
            for u in dist:
                if dist[u] >= tier:
                    continue
                for v, data in g[u].items():
                    line = geoms.get((u, v)) or geoms[(v, u)].reverse()
                    f = min(1.0, (tier - dist[u]) / data["weight"])
                    if f >= 1:
                        piece = line
                    else:
                        piece = shapely.ops.substring(line, 0, f, normalized=True)
                    parts.append(piece.buffer(buffer_m, quad_segs=4))
            shapely.union_all(parts)
        t2 = time.perf_counter()
        t_search += t1 - t0
        t_poly += t2 - t1
    n = len(pick)
    return {"sample": n, "search_ms_per_station": 1000 * t_search / n,
            "polygon_ms_per_station": 1000 * t_poly / n,
            "s_per_station": (t_search + t_poly) / n}


class LoadSampler:
    """The 1-minute load average sampled every ``every_s`` seconds in a background thread."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(every_s)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        s = np.array(self.samples or [float("nan")])
        return {"min": round(float(s.min()), 2), "mean": round(float(s.mean()), 2),
                "max": round(float(s.max()), 2), "samples": len(self.samples)}


def run_lattice(args: argparse.Namespace) -> dict:
    """Today's run: circles + polygon coverage on the lattice city (today's keys)."""
    engine = _engine(DB)
    load_s = load_city(engine, args.grids, args.buildings, args.stations, args.seed)
    load_before = [round(x, 2) for x in os.getloadavg()]
    settings = CircleSettings()
    if args.no_cut:
        settings = CircleSettings(circle_barrier_kinds=[])
    tiers = settings.circle_tiers_m

    cpu0 = os.times()
    with LoadSampler() as load:
        with engine.begin() as c:
            t0 = time.perf_counter()
            crun = build_circles(c, settings, progress=True)
            circles_s = time.perf_counter() - t0
            csum = c.execute(text("SELECT summary FROM analysis_run WHERE id = :r"),
                             {"r": crun}).scalar()
        with engine.begin() as c:
            t0 = time.perf_counter()
            cov = run_coverage(c, settings, circles_run_id=crun, tier_m=300)
            coverage_s = time.perf_counter() - t0
            vsum = c.execute(text("SELECT summary FROM analysis_run WHERE id = :r"),
                             {"r": cov}).scalar()
    cpu1 = os.times()
    with engine.connect() as c:
        ratios = {
            float(t): float(r)
            for t, r in c.execute(text(
                "SELECT tier_m, avg(ST_Area(geom::geography) / (pi() * tier_m ^ 2))"
                " FROM service_circle WHERE run_id = :r GROUP BY tier_m ORDER BY tier_m"),
                {"r": crun})
        }
        n_st = c.execute(text("SELECT count(*) FROM station")).scalar()
        n_b = c.execute(text("SELECT count(*) FROM building")).scalar()
        n_e = c.execute(text("SELECT count(*) FROM walk_edge")).scalar()

    naive = naive_loop(engine, args.sample, tiers, settings.circle_buffer_m, args.seed)
    naive_s = naive["s_per_station"] * n_st
    total_s = circles_s + coverage_s
    figures = {
        "stations": n_st, "buildings": n_b, "walk_edges": n_e, "grids": args.grids,
        "tiers": tiers, "buffer_m": settings.circle_buffer_m,
        "barrier_cut": not args.no_cut,
        "load_s": round(load_s, 2),
        "load_avg_1_5_15_at_start": load_before,
        "load_avg_1min_during_run": load.summary(),
        "python_cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 2),
        "circles_s": round(circles_s, 2), "circles_breakdown": csum,
        "coverage_s": round(coverage_s, 2), "coverage_join_s": vsum.get("join_s"),
        "coverage_write_s": vsum.get("write_s"),
        "total_s": round(total_s, 2),
        "residents_covered_share_300m": round(
            vsum["residents_covered"] / vsum["residents"], 4) if vsum["residents"] else None,
        "naive_loop_s": round(naive_s, 2), "naive_sample_stations": naive["sample"],
        "naive_search_ms_per_station": round(naive["search_ms_per_station"], 2),
        "naive_polygon_ms_per_station": round(naive["polygon_ms_per_station"], 2),
        "speedup_vs_naive": round(naive_s / circles_s, 2),
        "network_to_disc_area_ratio": round(ratios.get(300.0, float("nan")), 4),
        "network_to_disc_area_ratio_by_tier": {str(k): round(v, 4) for k, v in ratios.items()},
        "disc": "pi * tier^2 (Euclidean disc of the tier radius)",
        "target_total_s": 180, "meets_3_min": total_s < 180,
        "meets_5x": naive_s / circles_s >= 5,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_avg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    assert math.isfinite(total_s)
    return figures




def _engine(name: str):
    dbs = DatabaseSettings()
    embedded.start(dbs)
    embedded.ensure_database(dbs, name)
    url = embedded.url(dbs, name)
    migrate(url)
    return make_engine(url)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grids", type=int, default=2000)
    ap.add_argument("--buildings", type=int, default=500_000)
    ap.add_argument("--stations", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", type=int, default=60, help="stations timed in the naive loop")
    ap.add_argument("--no-cut", action="store_true", help="skip the barrier cut of polygons")
    ap.add_argument("--runs", default="lattice,real,dense",
                    help="comma-separated: lattice, real, dense")
    args = ap.parse_args()

    import shapely.ops  # noqa: F401  (substring)

    from bench.circles_real import run_dense, run_real

    path = RESULTS_DIR / "circles.json"
    for name in args.runs.split(","):
        fn = {"lattice": run_lattice, "real": run_real, "dense": run_dense}[name.strip()]
        figures = fn(args) if fn is run_lattice else fn(args, _engine)
        old = json.loads(path.read_text()) if path.exists() else {}
        old.update(figures)
        write_results("circles", {k: v for k, v in old.items() if k != "machine"})


if __name__ == "__main__":
    main()
