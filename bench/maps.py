"""Page size and time to first render of the grid and coverage maps on a large synthetic city.

    .venv/bin/python -m bench.maps --grids 10000 --buildings 500000 --stations 1000

The city comes from ``geo.samples.synth.generate_city``. The map inputs are built in memory the way
``geo.data.mapdata`` builds them from PostGIS (households summed per grid, the grid team, buildings
outside ``--radius-m`` of every station), then rendered by ``maps.*`` as standalone pages (all
JS/CSS inlined, the file the CLI writes) and loaded in headless Debian Chromium from file://.
Render time = ``performance.now()`` (ms since navigation start) two animation frames after
the load event, so the layers have been drawn.

Compared with the obvious alternative: the same layers as full-precision GeoJSON with every
building as a feature (``naive_bytes``), which is what folium.GeoJson of the raw frames embeds.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from bench.common import peak_rss_mb, timed, write_results
from geo.samples.synth import generate_city
from maps.base import MapSettings
from maps.coverage_map import coverage_map
from maps.grid_map import grid_map

CHROME_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def map_inputs(layers: dict[str, gpd.GeoDataFrame], radius_m: float) -> dict:
    """The GeoDataFrames the maps take, from the synthetic layers (EPSG:4326)."""
    grids = layers["grid"].copy()
    b = layers["building"]
    hh = b.groupby("grid_code")["households"].sum()
    grids["households"] = grids["code"].map(hh).fillna(0).astype(int)
    team = layers.get("grid_team")
    if team is not None and not team.empty:
        by_grid = team.groupby("grid_code")[["role", "name", "phone"]].apply(
            lambda d: d.values.tolist()
        )
        grids["team"] = grids["code"].map(by_grid)
    srid = int(layers["district"]["metric_srid"].iloc[0])
    pts = b.geometry.to_crs(srid).values
    st = layers["station"].geometry.to_crs(srid).values
    tree = shapely.STRtree(st)
    hit_b, _ = tree.query(pts, predicate="dwithin", distance=radius_m)
    covered = np.zeros(len(b), dtype=bool)
    covered[hit_b] = True
    return {
        "grids": grids,
        "streets": layers["street"],
        "communities": layers["community"],
        "stations": layers["station"],
        "uncovered": b.loc[~covered, ["code", "households", "grid_code", "geometry"]],
    }


def render_ms(browser, path: Path) -> tuple[float, float, list[str], list[str]]:
    """Wall ms from navigation start to two frames after load; main-thread busy ms (Chromium's
    TaskDuration: CPU work, less sensitive to other processes on a shared machine); console
    errors; requests."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load", timeout=120_000)
    ms = page.evaluate(
        "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame("
        "() => r(performance.now()))))"
    )
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    busy_ms = 1000.0 * float(metrics.get("TaskDuration", float("nan")))
    shot = path.with_suffix(".png")
    page.screenshot(path=str(shot))
    page.close()
    outside = [u for u in requests if not u.startswith(("file:", "data:", "about:", "blob:"))]
    return float(ms), busy_ms, errors, outside


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, default=10_000)
    ap.add_argument("--buildings", type=int, default=500_000)
    ap.add_argument("--stations", type=int, default=1_000)
    ap.add_argument("--radius-m", type=float, default=500.0, help="Service radius, metres.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="Directory for the pages (temp).")
    args = ap.parse_args()

    layers, t_synth = timed(
        lambda: generate_city(
            grids=args.grids, buildings=args.buildings, stations=args.stations, seed=args.seed
        )
    )
    print(f"city: {t_synth:.1f} s")
    inputs, t_inputs = timed(lambda: map_inputs(layers, args.radius_m))
    print(f"inputs: {t_inputs:.1f} s; uncovered {len(inputs['uncovered'])}")
    settings = MapSettings()

    out = args.out or Path(tempfile.mkdtemp(prefix="wangge-bench-maps-"))
    out.mkdir(parents=True, exist_ok=True)
    grid_html, t_grid = timed(
        lambda: grid_map(
            inputs["grids"],
            streets=inputs["streets"],
            communities=inputs["communities"],
            stations=inputs["stations"],
            settings=settings,
        )
    )
    cov_html, t_cov = timed(
        lambda: coverage_map(
            inputs["stations"],
            radius_m=args.radius_m,
            uncovered=inputs["uncovered"],
            grids=inputs["grids"],
            settings=settings,
        )
    )
    served_grid = grid_map(
        inputs["grids"],
        streets=inputs["streets"],
        communities=inputs["communities"],
        stations=inputs["stations"],
        settings=settings,
        asset_base="/static/vendor",
    )
    (out / "grid_map.html").write_text(grid_html, encoding="utf-8")
    (out / "coverage_map.html").write_text(cov_html, encoding="utf-8")

    # The obvious alternative: full-precision GeoJSON of every grid and every building.
    naive = len(inputs["grids"].drop(columns=["team"], errors="ignore").to_json()) + len(
        layers["building"].to_json()
    )

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROME_ARGS)
        render_ms(browser, out / "grid_map.html")  # warm-up (disk cache, JIT)
        grid_ms, grid_busy, grid_err, grid_out = render_ms(browser, out / "grid_map.html")
        cov_ms, cov_busy, cov_err, cov_out = render_ms(browser, out / "coverage_map.html")
        load = os.getloadavg()[0]
        browser.close()

    gb, cb = len(grid_html.encode()), len(cov_html.encode())
    figures = {
        "grids": args.grids,
        "buildings": args.buildings,
        "stations": args.stations,
        "radius_m": args.radius_m,
        "uncovered_buildings": int(len(inputs["uncovered"])),
        "strategy": (
            "display simplification (topology-preserving, "
            f"{settings.map_simplify_m} m) + {settings.map_coordinate_decimals}-decimal "
            "coordinates; GeoJSON written once per page, styles/popups built in JS; canvas "
            f"renderer above {settings.map_svg_max_features} features; uncovered buildings "
            f"as clustered points up to {settings.map_max_points}, else per-grid aggregate only"
        ),
        "grid_map_bytes": gb,
        "grid_map_render_ms": round(grid_ms, 1),
        "coverage_map_bytes": cb,
        "coverage_map_render_ms": round(cov_ms, 1),
        "grid_map_main_thread_ms": round(grid_busy, 1),
        "coverage_map_main_thread_ms": round(cov_busy, 1),
        "load_average_1min_at_render": round(load, 2),
        "grid_map_served_bytes": len(served_grid.encode()),
        "grid_map_build_s": round(t_grid, 2),
        "coverage_map_build_s": round(t_cov, 2),
        "naive_geojson_bytes": naive,
        "naive_over_grid_plus_coverage": round(naive / (gb + cb), 1),
        "console_errors": grid_err + cov_err,
        "outside_requests": grid_out + cov_out,
        "targets": {"bytes_lt": 15_000_000, "render_ms_lt": 5000},
        "targets_met": gb < 15e6 and cb < 15e6 and grid_ms < 5000 and cov_ms < 5000,
        "pages_dir": str(out),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(
        json.dumps(
            {
                k: figures[k]
                for k in (
                    "grid_map_bytes",
                    "grid_map_render_ms",
                    "coverage_map_bytes",
                    "coverage_map_render_ms",
                )
            }
        )
    )
    write_results("maps", figures)


if __name__ == "__main__":
    main()
