"""Benchmark grid redrawing on the synthetic city.

    .venv/bin/python -m bench.planning --grids 10000

A pristine city (``generate_city``, 50 buildings a grid) is written once to a template
database and copied for each run (``wangge_bench_planning``), so every run starts from the same
state. Times, each through commit AND the lookup index's rebuild (a ``locate_point`` after the
change, measured on its own as the refresh): a split, a merge, a full-layer import (the current
grid layer exported to GPKG with every code blanked, so all grids are renumbered and every
community re-checked: the worst case), the same file re-imported with codes kept (nothing
changes: the compare path). Drafts (``bench.planning_draft``): every community of the demo
district (its own database) and ``--draft-communities`` of the city, by both refinements; the
households per grid summed independently (shapely point-in-polygon over the buildings).
Balance mode is
'warn' so that a merge of two full grids is timed rather than refused; every other check runs.
Writes bench/results/planning.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import shapely
from shapely.geometry import LineString
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from bench import planning_draft
from bench.common import RESULTS_DIR, peak_rss_mb, timed, write_results
from geo import lookup, planning
from geo.core import embedded
from geo.core.db import make_engine, migrate, resolve_url
from geo.core.settings import DatabaseSettings

DB = "wangge_bench_planning"
DEMO_DB = "wangge_bench_planning_demo"
BUILDINGS_PER_GRID = 50


def _url(name: str) -> str:
    return make_url(resolve_url(DatabaseSettings())).set(database=name).render_as_string(
        hide_password=False)


def prepare(grids: int, seed: int) -> str:
    """A fresh copy of the pristine ``grids``-grid city (the template is built once)."""
    settings = DatabaseSettings()
    tmpl = f"wangge_bench_planning_tmpl_{grids}"
    embedded.ensure_database(settings, tmpl)
    url = _url(tmpl)
    migrate(url)
    eng = make_engine(url)
    with eng.connect() as c:
        have = c.execute(text("SELECT count(*) FROM area WHERE level = 'grid' "
                              "AND generation_high IS NULL")).scalar()
        gens = c.execute(text("SELECT count(*) FROM generation")).scalar()
    if have != grids or gens != 1:
        from geo.data.store import write_layers
        from geo.samples.synth import generate_city

        print(f"writing the {grids}-grid synthetic city to {tmpl} ...", flush=True)
        layers = generate_city(grids=grids, buildings=BUILDINGS_PER_GRID * grids, stations=50,
                               seed=seed, team=False)
        with eng.begin() as c:
            c.execute(text("TRUNCATE building, station, walk_edge, walk_node, barrier, compound, "
                           "area, generation CASCADE"))
            write_layers(c, layers, kind="synth", progress=True)
        with eng.connect() as c:
            c.execute(text("COMMIT"))
            for t in ("building", "area", "walk_edge"):
                c.execute(text(f"ANALYZE {t}"))
    eng.dispose()
    embedded.drop_database(settings, DB)
    embedded.psql(settings, f'CREATE DATABASE "{DB}" TEMPLATE "{tmpl}"')
    return _url(DB)


def prepare_demo() -> str:
    """A database holding the demo district (loaded once)."""
    from geo.samples.demo import ensure_demo_loaded

    embedded.ensure_database(DatabaseSettings(), DEMO_DB)
    url = _url(DEMO_DB)
    migrate(url)
    eng = make_engine(url)
    with eng.begin() as c:
        ensure_demo_loaded(c)
    eng.dispose()
    return url


def draft_section(eng: Engine, comms: list[str], sample: int) -> dict[str, Any]:
    """Drafts of every demo community and ``sample`` synthetic ones (evenly spaced), by both
    refinements; the default rule (150-500) and ratio target."""
    from geo.planning.geometry import metric_srid

    settings = planning.PlanningSettings()
    demo_eng = make_engine(prepare_demo())
    out = []
    for e, codes in ((demo_eng, None), (eng, comms[:: max(1, len(comms) // sample)][:sample])):
        with e.connect() as c:
            srid = metric_srid(c)
            codes = codes or c.execute(text(
                "SELECT code FROM area WHERE level = 'community' AND generation_high IS NULL "
                "ORDER BY code")).scalars().all()
        print(f"drafting {len(codes)} communities ...", flush=True)
        out.append(planning_draft.dataset(e, list(codes), settings, srid))
    demo_eng.dispose()
    return planning_draft.figures(out[0], out[1], settings.draft_method)


def refreshed(eng: Engine, lon: float, lat: float) -> tuple[str, float]:
    """Invalidate the lookup index, locate one point (the rebuild); its grid and the seconds."""
    planning.refresh_lookup()
    with eng.connect() as conn:
        res, took = timed(lambda: lookup.locate_point(conn, lon, lat))
    return res.grid["code"], took


def change(eng: Engine, fn: Any, lon: float, lat: float) -> dict[str, Any]:
    """Run ``fn(conn)`` in one transaction, commit, then rebuild the index with one lookup."""
    t0 = time.perf_counter()
    with eng.begin() as conn:
        res = fn(conn)
    write_s = time.perf_counter() - t0
    code, refresh_s = refreshed(eng, lon, lat)
    return {"result": res, "write_s": write_s, "refresh_s": refresh_s,
            "total_s": write_s + refresh_s, "located": code}


def grid_row(eng: Engine, code: str) -> tuple[shapely.Geometry, shapely.Point]:
    with eng.connect() as c:
        wkb = c.execute(text("SELECT ST_AsBinary(geom) FROM area WHERE code = :c "
                             "AND generation_high IS NULL"), {"c": code}).scalar()
    g = shapely.from_wkb(bytes(wkb))
    return g, g.point_on_surface()


def preview(eng: Engine, fn: Any, *args: Any, **kwargs: Any) -> float:
    """Seconds for a dry run of ``fn`` (geo.planning.preview): written, checked, described,
    rolled back; the database is unchanged (checked)."""
    from geo.planning.preview import dry_run

    with eng.connect() as c:
        gens = c.execute(text("SELECT count(*) FROM generation")).scalar()
        out, took = timed(lambda: dry_run(fn, c, *args, **kwargs))
        c.rollback()
        assert c.execute(text("SELECT count(*) FROM generation")).scalar() == gens
    assert out["grids"]["features"], out
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--draft-communities", type=int, default=30,
                    help="synthetic communities drafted (evenly spaced); the demo: all")
    ap.add_argument("--draft-only", action="store_true",
                    help="only the draft figures, merged into the existing planning.json")
    args = ap.parse_args()
    url = prepare(args.grids, args.seed)
    eng = make_engine(url)
    settings = planning.PlanningSettings(balance_mode="warn")
    with eng.connect() as c:
        comms = c.execute(text("SELECT code FROM area WHERE level = 'community' AND "
                               "generation_high IS NULL ORDER BY code")).scalars().all()
    if args.draft_only:
        import json

        old = json.loads((RESULTS_DIR / "planning.json").read_text())
        for key in [k for k in old if k == "machine" or k.startswith("draft")]:
            old.pop(key)
        old.update(draft_section(eng, comms, args.draft_communities))
        eng.dispose()
        write_results("planning", old)
        return
        n_grids = c.execute(text("SELECT count(*) FROM area WHERE level = 'grid' AND "
                                 "generation_high IS NULL")).scalar()
        n_buildings = c.execute(text("SELECT count(*) FROM building")).scalar()
    mid = comms[len(comms) // 2]
    load_before = os.getloadavg()[0]
    with eng.connect() as c:
        _, initial_build_s = timed(lambda: lookup.get_index(c))

    # split: the middle community's first grid, north-south through its centre
    code = mid + "001"
    g, _ = grid_row(eng, code)
    c0 = g.centroid
    minx, miny, maxx, maxy = g.bounds
    line = LineString([(c0.x, miny - 1e-4), (c0.x, maxy + 1e-4)])
    west = shapely.Point((minx + c0.x) / 2, c0.y)
    preview_split_s = preview(eng, planning.split_grid, code, line, settings=settings)
    split = change(eng, lambda conn: planning.split_grid(conn, code, line, settings=settings),
                   west.x, west.y)
    assert split["located"] in split["result"].created, split

    # merge: two neighbours of the same row in another community
    other = comms[len(comms) // 3]
    a, b = other + "001", other + "002"
    _, pa = grid_row(eng, a)
    preview_merge_s = preview(eng, planning.merge_grids, [a, b], settings=settings)
    merge = change(eng, lambda conn: planning.merge_grids(conn, [a, b], settings=settings),
                   pa.x, pa.y)
    assert merge["located"] == merge["result"].created[0], merge

    # full layer: export the current grid layer, blank every code (all renumbered), re-import
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.gpkg"
        with eng.connect() as c:
            layer = gpd.read_postgis(text(
                "SELECT code, parent_code, name, responsible_body, geom FROM area "
                "WHERE level = 'grid' AND generation_high IS NULL"), c, geom_col="geom")
        unchanged = Path(tmp) / "grid_same.gpkg"
        layer.to_file(unchanged, layer="grid", driver="GPKG")
        same = change(eng, lambda conn: planning.import_grid_layer(
            conn, unchanged, settings=settings), pa.x, pa.y)
        layer["code"] = None
        layer.to_file(path, layer="grid", driver="GPKG")
        gpkg_mb = path.stat().st_size / 1e6
        full = change(eng, lambda conn: planning.import_grid_layer(conn, path, settings=settings),
                      pa.x, pa.y)
    assert len(full["result"].created) == len(layer), len(full["result"].created)

    draft = draft_section(eng, comms, args.draft_communities)
    refreshes = [split["refresh_s"], merge["refresh_s"], full["refresh_s"], same["refresh_s"]]
    figures = {
        "grids": int(n_grids),
        "buildings": int(n_buildings),
        "communities": len(comms),
        "split_s": round(split["total_s"], 3),
        "merge_s": round(merge["total_s"], 3),
        "preview_split_s": round(preview_split_s, 3),
        "preview_merge_s": round(preview_merge_s, 3),
        "layer_import_s": round(full["total_s"], 2),
        "layer_import_unchanged_s": round(same["total_s"], 2),
        "index_refresh_s": round(statistics.median(refreshes), 3),
        "index_initial_build_s": round(initial_build_s, 3),
        "detail": {
            "split": {"write_s": round(split["write_s"], 3),
                      "refresh_s": round(split["refresh_s"], 3), "grid": code,
                      "created": split["result"].created},
            "merge": {"write_s": round(merge["write_s"], 3),
                      "refresh_s": round(merge["refresh_s"], 3), "grids": [a, b],
                      "created": merge["result"].created},
            "layer_import": {"write_s": round(full["write_s"], 2),
                             "refresh_s": round(full["refresh_s"], 3),
                             "grids_renumbered": len(full["result"].created),
                             "buildings_moved": full["result"].buildings_moved,
                             "gpkg_mb": round(gpkg_mb, 1)},
            "layer_import_unchanged": {"write_s": round(same["write_s"], 2),
                                       "refresh_s": round(same["refresh_s"], 3),
                                       "changed": len(same["result"].changed)},
        },
        **draft,
        "targets": {"split_or_merge_s": 2.0, "layer_import_s": 120.0,
                    "draft_max_over_min_households": 1.2, "preview_s": 1.0},
        "peak_rss_mb": round(peak_rss_mb()),
        "load_average_1m": {"before": round(load_before, 2),
                            "after": round(os.getloadavg()[0], 2)},
        "method": "each time is one run through commit plus one locate_point that rebuilds the "
                  "lookup index (index_refresh_s: the median of those rebuilds); balance mode "
                  "'warn' for the timed edits, the default rule (150-500) for the draft; "
                  f"{BUILDINGS_PER_GRID} buildings a grid",
    }
    eng.dispose()
    write_results("planning", figures)
    print(f"\nsplit {figures['split_s']:.2f} s, merge {figures['merge_s']:.2f} s (target < 2 s)"
          f"\nfull layer {figures['layer_import_s']:.1f} s vs unchanged re-import "
          f"{figures['layer_import_unchanged_s']:.1f} s (target < 120 s)"
          f"\nindex refresh {figures['index_refresh_s']:.2f} s (initial build "
          f"{initial_build_s:.2f} s)"
          f"\ndraft ({draft['draft_method']}) largest/smallest, worst community: "
          f"{draft['draft_max_over_min_households']} (target <= 1.2), {draft['draft_s']}"
          f"\npreview split {preview_split_s:.2f} s, merge {preview_merge_s:.2f} s (< 1 s)")


if __name__ == "__main__":
    main()
