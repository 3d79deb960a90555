"""OGC API Features and Tiles: wangge against tipg on the same PostGIS tables, one run.

    .venv/bin/python -m bench.ogc --grids 10000

A synthetic city (``geo.samples.synth``) is written to a fresh database; wangge (uvicorn, one
worker, access policy on, HTTP Basic with an API key that carries the commander role) and tipg
(PyPI, in a private venv the bench makes, one worker, no access control: it has none) serve
it. wrk (Debian) loads each in turn with the same Lua-chosen requests:

- items: GeoJSON pages of the grids, ``limit=100`` at random offsets (wangge
  ``/ogc/collections/grids/items``; tipg ``/collections/public.area_current/items?level=grid``,
  the same rows: the current grids);
- tiles: grid MVT tiles at z14-z16 covering the city, in random order (``tile_p95_ms`` under
  the same concurrent load; ``*_one_connection``: one request at a time, no queueing).
  wangge's tiles come from its cache after the first request of each (the cache is the
  feature; a hit is answered before FastAPI's routing, the access policy still applied); the
  cold figure (``tile_cold_p95_ms``: every tile asked once, in order, cache empty) is
  reported too.

The machine is shared: ``load_average`` holds the 1-minute load average just before and just
after each tile run (wangge and tipg, one after the other in the same run).

Writes bench/results/ogc.json: grids, items_per_s, tipg_items_per_s, tiles_per_s,
tipg_tiles_per_s, tile_p95_ms (wangge, under load), and the raw wrk figures.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import morecantile
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import free_port, uvicorn_server, write_results
from geo.auth.service import create_api_key
from geo.core import embedded
from geo.core.db import make_engine, migrate, resolve_url
from geo.core.settings import DatabaseSettings

TIPG_VENV = Path(os.environ.get("WANGGE_BENCH_TIPG_VENV")
                 or Path(tempfile.gettempdir()) / "wangge-bench-tipg")


def prepare(grids: int, buildings: int) -> tuple[str, str, tuple[float, ...]]:
    """A fresh database with the city; an API key with the commander role; the city bounds."""
    from geo.data.store import write_layers
    from geo.samples.synth import generate_city

    settings = DatabaseSettings()
    name = f"wangge_bench_ogc_{grids}"
    embedded.drop_database(settings, name)
    embedded.ensure_database(settings, name)
    url = make_url(resolve_url(settings)).set(database=name).render_as_string(
        hide_password=False)
    migrate(url)
    t0 = time.perf_counter()
    city = generate_city(grids=grids, buildings=buildings, stations=max(5, grids // 20),
                         seed=11, team=False)
    eng = make_engine(url)
    with eng.begin() as conn:
        write_layers(conn, city)
        key = create_api_key(conn, "ogc-bench", scopes=("ogc",), rate_per_minute=100_000_000)
        conn.execute(text("UPDATE api_key SET role = 'commander', area_code = :a "
                          "WHERE name = 'ogc-bench'"), {"a": city["district"].code.iloc[0]})
        bounds = conn.execute(text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom)"
            " e FROM area_current WHERE level = 'grid') s")).one()
        conn.execute(text("ANALYZE"))
    eng.dispose()
    print(f"city of {grids} grids ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return url, key, tuple(float(v) for v in bounds)


def tipg_python() -> str:
    """tipg lives in its own venv: its pins (FastAPI, morecantile) are not wangge's."""
    py = TIPG_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TIPG_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "tipg", "uvicorn"], check=True)
    return str(py)


class Tipg:
    """tipg under uvicorn on ``url``'s database, serving the public schema."""

    def __init__(self, url: str) -> None:
        u = make_url(url)
        self.dsn = f"postgresql://{u.username}@{u.host}:{u.port}/{u.database}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        env = {**os.environ, "DATABASE_URL": self.dsn, "TIPG_DB_SCHEMAS": '["public"]',
               "TIPG_MAX_FEATURES_PER_QUERY": "10000"}
        self.proc = subprocess.Popen(
            [tipg_python(), "-m", "uvicorn", "tipg.main:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
            env=env, start_new_session=True)
        for _ in range(300):
            try:
                if httpx.get(self.base + "/collections", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        return self.base

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


LUA = """
local paths = {%s}
local header = %s
math.randomseed(%d)
request = function()
  local p = paths[math.random(#paths)]
  if header ~= "" then
    return wrk.format("GET", p, {["Authorization"] = header})
  end
  return wrk.format("GET", p)
end
done = function(summary, latency, requests)
  io.write(string.format("P95_US %%d\\n", latency:percentile(95)))
end
"""


def wrk(base: str, paths: list[str], header: str, seconds: int, connections: int) -> dict:
    """wrk with requests drawn from ``paths``: rps, p95 (ms), errors."""
    script = LUA % (", ".join(f'"{p}"' for p in paths), f'"{header}"', 7)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                          "-s", f.name, base + paths[0]], capture_output=True, text=True,
                         check=True).stdout
    os.unlink(f.name)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p95_ms": int(re.search(r"P95_US (\d+)", out).group(1)) / 1000,
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


def cold_p95(base: str, paths: list[str], headers: dict[str, str]) -> float:
    """p95 (ms) of asking every path once, in order, one at a time."""
    times = []
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        for p in paths:
            t0 = time.perf_counter()
            r = client.get(p)
            times.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
    times.sort()
    return round(times[int(0.95 * (len(times) - 1))], 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grids", type=int, default=10_000)
    ap.add_argument("--buildings-per-grid", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--max-tiles", type=int, default=400)
    args = ap.parse_args()
    url, key, (x0, y0, x1, y1) = prepare(args.grids, args.grids * args.buildings_per_grid)
    rng = random.Random(3)
    offsets = [rng.randrange(0, max(1, args.grids - 100)) for _ in range(500)]
    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = [t for z in (14, 15, 16) for t in tms.tiles(x0, y0, x1, y1, [z])]
    rng.shuffle(tiles)
    tiles = tiles[:args.max_tiles]
    basic = "Basic " + base64.b64encode(f"bench:{key}".encode()).decode()
    env = {**os.environ, "WANGGE_DATABASE_URL": url, "WANGGE_ENFORCE_ACCESS": "true",
           "WANGGE_POOL_SIZE": "10"}
    figures: dict = {"grids": args.grids, "buildings": args.grids * args.buildings_per_grid,
                     "tiles_in_rotation": len(tiles), "zooms": [14, 15, 16],
                     "seconds": args.seconds, "connections": args.connections}
    w_items = [f"/ogc/collections/grids/items?limit=100&offset={o}" for o in offsets]
    w_tiles = [f"/ogc/collections/grids/tiles/WebMercatorQuad/{t.z}/{t.y}/{t.x}" for t in tiles]
    with uvicorn_server(env) as base:
        figures["tile_cold_p95_ms"] = cold_p95(base, w_tiles, {"Authorization": basic})
        items = wrk(base, w_items, basic, args.seconds, args.connections)
        load = {"wangge_tiles_before": os.getloadavg()[0]}
        tiles_run = wrk(base, w_tiles, basic, args.seconds, args.connections)
        load["wangge_tiles_after"] = os.getloadavg()[0]
        tiles_one = wrk(base, w_tiles, basic, max(5, args.seconds // 4), 1)
    t_items = [f"/collections/public.area_current/items?level=grid&limit=100&offset={o}"
               for o in offsets]
    t_tiles = [f"/collections/public.area_current/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}"
               "?level=grid" for t in tiles]
    with Tipg(url) as tbase:
        figures["tipg_tile_cold_p95_ms"] = cold_p95(tbase, t_tiles, {})
        tipg_items = wrk(tbase, t_items, "", args.seconds, args.connections)
        load["tipg_tiles_before"] = os.getloadavg()[0]
        tipg_tiles = wrk(tbase, t_tiles, "", args.seconds, args.connections)
        load["tipg_tiles_after"] = os.getloadavg()[0]
        tipg_tiles_one = wrk(tbase, t_tiles, "", max(5, args.seconds // 4), 1)
    figures.update({
        "items_per_s": items["rps"], "tipg_items_per_s": tipg_items["rps"],
        "tiles_per_s": tiles_run["rps"], "tipg_tiles_per_s": tipg_tiles["rps"],
        "tile_p95_ms": tiles_run["p95_ms"], "tipg_tile_p95_ms": tipg_tiles["p95_ms"],
        "tile_p95_ms_one_connection": tiles_one["p95_ms"],
        "tipg_tile_p95_ms_one_connection": tipg_tiles_one["p95_ms"],
        "items_p95_ms": items["p95_ms"], "tipg_items_p95_ms": tipg_items["p95_ms"],
        "load_average": {k: round(v, 2) for k, v in load.items()},
        "errors": {"wangge_items": items["non2xx"], "wangge_tiles": tiles_run["non2xx"],
                   "tipg_items": tipg_items["non2xx"], "tipg_tiles": tipg_tiles["non2xx"]},
        "targets_met": {"items": items["rps"] >= tipg_items["rps"],
                        "tiles": tiles_run["rps"] >= tipg_tiles["rps"],
                        "tile_p95_under_50ms": tiles_run["p95_ms"] < 50},
        "method": "one uvicorn worker each; wrk 1 thread; wangge with its access policy on "
                  "(HTTP Basic, API key with a role), tipg without access control; wangge "
                  "tiles served from its tile cache after the cold pass (answered before "
                  "routing, policy on)",
    })
    write_results("ogc", figures)


if __name__ == "__main__":
    main()
