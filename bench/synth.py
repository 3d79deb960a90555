"""Benchmark: ``wangge synth`` at two scales, and the GeoPackage export + re-import of the city.

Each step runs the real CLI in a subprocess against a private database (wangge_bench_synth),
so the times include start-up and the peak RSS is that step's own process (os.wait4).

    .venv/bin/python -m bench.synth                       # 1,000 and 10,000 grids
    .venv/bin/python -m bench.synth --scales 1000 --scales 10000 --buildings-per-grid 50

Also compares the COPY writer against row-by-row INSERTs (executemany) on a sample of buildings.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from bench.common import write_results
from geo.core import embedded
from geo.core.db import make_engine, migrate
from geo.core.settings import PROJECT_ROOT, DatabaseSettings

WANGGE = str(PROJECT_ROOT / ".venv" / "bin" / "wangge")


def run_rss(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Like ``run`` but measures the child's own peak RSS with os.wait4."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        log.seek(0)
        out = log.read()
    if os.waitstatus_to_exitcode(status):
        print(out[-4000:], file=sys.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    for line in out.splitlines():
        if any(k in line for k in ("rows in", "synthetic city", "合成城市", "imported", "已导入",
                                   "validat")):
            print("   ", line.strip()[-150:])
    return wall, usage.ru_maxrss / 1024


def copy_vs_insert(url: str, n: int) -> dict[str, float]:
    """COPY (write_layers) against executemany INSERT for ``n`` buildings; rolled back."""
    from geo.data.store import _building_frame, write_layers
    from geo.samples.synth import generate_city

    layers = generate_city(grids=max(1, n // 50), buildings=n, stations=0, seed=1, team=False)
    b = layers["building"]
    eng = make_engine(url)
    with eng.connect() as conn:
        tx = conn.begin()
        conn.execute(text("DELETE FROM building"))
        t0 = time.perf_counter()
        write_layers(conn, {"building": b})
        t_copy = time.perf_counter() - t0
        tx.rollback()
        tx = conn.begin()
        conn.execute(text("DELETE FROM building"))
        frame = _building_frame(b)
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        t0 = time.perf_counter()
        conn.execute(text(
            "INSERT INTO building (code, name, location, footprint, households, residents, "
            "floors, grid_code, source) VALUES (:code, :name, ST_GeomFromEWKB(decode(:location, "
            "'hex')), ST_GeomFromEWKB(decode(:footprint, 'hex')), :households, :residents, "
            ":floors, :grid_code, :source)"), rows)
        t_insert = time.perf_counter() - t0
        tx.rollback()
    eng.dispose()
    return {"buildings": n, "copy_s": round(t_copy, 2), "insert_s": round(t_insert, 2),
            "insert_over_copy": round(t_insert / t_copy, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, action="append",
                    help="grid counts (repeatable); default 1000 and 10000")
    ap.add_argument("--buildings-per-grid", type=int, default=50)
    ap.add_argument("--stations-per-grid", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--insert-sample", type=int, default=20_000,
                    help="buildings for the COPY vs INSERT comparison (0 skips it)")
    ap.add_argument("--no-import", action="store_true", help="skip export + re-import")
    args = ap.parse_args()
    scales = args.scales or [1000, 10000]

    settings = DatabaseSettings()
    name = "wangge_bench_synth"
    if not settings.database_url:
        embedded.start(settings)
        embedded.drop_database(settings, name)
        embedded.ensure_database(settings, name)
        url = embedded.url(settings, name)
    else:
        url = settings.database_url
    migrate(url)
    env = {**os.environ, "WANGGE_DATABASE_URL": url}

    runs = []
    with tempfile.TemporaryDirectory(prefix="wangge_bench_synth_") as tmp:
        for grids in scales:
            buildings = grids * args.buildings_per_grid
            stations = int(grids * args.stations_per_grid)
            print(f"synth {grids} grids, {buildings} buildings, {stations} stations")
            synth_s, synth_rss = run_rss(
                [WANGGE, "synth", "--grids", str(grids), "--buildings", str(buildings),
                 "--stations", str(stations), "--seed", str(args.seed)], env)
            print(f"  synth (generate + write): {synth_s:.1f} s, peak RSS {synth_rss:.0f} MB")
            row = {"grids": grids, "buildings": buildings, "stations": stations,
                   "synth_s": round(synth_s, 1), "synth_peak_rss_mb": round(synth_rss)}
            if not args.no_import:
                gpkg = Path(tmp) / f"city_{grids}.gpkg"
                export_s, export_rss = run_rss([WANGGE, "export", str(gpkg)], env)
                print(f"  export to GeoPackage: {export_s:.1f} s ({gpkg.stat().st_size / 1e6:.0f}"
                      f" MB), peak RSS {export_rss:.0f} MB")
                import_s, import_rss = run_rss([WANGGE, "import", str(gpkg)], env)
                print(f"  re-import (validate + write): {import_s:.1f} s, peak RSS "
                      f"{import_rss:.0f} MB")
                row.update({"export_s": round(export_s, 1), "import_s": round(import_s, 1),
                            "import_via": "wangge export / wangge import (geo.data.io)",
                            "gpkg_mb": round(gpkg.stat().st_size / 1e6, 1),
                            "import_peak_rss_mb": round(import_rss)})
                row["peak_rss_mb"] = round(max(synth_rss, export_rss, import_rss))
            else:
                row["peak_rss_mb"] = round(synth_rss)
            runs.append(row)
    figures: dict = {"runs": runs,
                     "method": "each step is the CLI in a subprocess on a private database; "
                               "peak_rss_mb = max over that scale's steps (os.wait4)"}
    if args.insert_sample:
        cmp = copy_vs_insert(url, args.insert_sample)
        print(f"COPY vs executemany INSERT, {cmp['buildings']} buildings: "
              f"{cmp['copy_s']} s vs {cmp['insert_s']} s ({cmp['insert_over_copy']}x)")
        figures["copy_vs_insert"] = cmp
    write_results("synth", figures)


if __name__ == "__main__":
    main()
