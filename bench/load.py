"""Mixed traffic for 60 s against uvicorn on localhost, with the access policy on.

    .venv/bin/python -m bench.load --seconds 60 --grids 300

wrk sends, at random: point lookups (70 %, API key), incident reports (20 %, a grid worker's
bearer token) and the grid map page (10 %, a commander's token). Every non-2xx/3xx answer and
every socket error or timeout counts as an error; ``unexpected_401`` counts the 401 answers
(every request carries valid credentials, so each is a token or key refused by a worker that
does not share the signing secret). The workers get no WANGGE_JWT_SECRET: they share the
one kept in the state directory. Writes bench/results/load.json.
"""

from __future__ import annotations

import argparse
import os
import random
import re

import httpx
from shapely import Point
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import run_wrk, uvicorn_server, write_results
from geo.auth.service import AuthSettings, create_api_key, create_user
from geo.core import embedded
from geo.core.db import make_engine, migrate, resolve_url
from geo.core.settings import DatabaseSettings


def prepare(grids: int) -> tuple[str, str, list[tuple[float, float]]]:
    """A fresh bench database with the synthetic city, a key, users; points inside grids."""
    from geo.data.store import write_layers
    from geo.samples.synth import generate_city

    settings = DatabaseSettings()
    base = resolve_url(settings)
    name = f"wangge_bench_load_{grids}"
    embedded.drop_database(settings, name)
    embedded.ensure_database(settings, name)
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    city = generate_city(grids=grids, buildings=grids * 40, stations=max(5, grids // 2),
                         seed=11)
    eng = make_engine(url)
    auth = AuthSettings()
    with eng.begin() as conn:
        write_layers(conn, city)
        key = create_api_key(conn, "load-bench", scopes=("lookup", "open311"),
                             rate_per_minute=10_000_000)
        create_user(conn, "commander", "commander-password", "commander",
                    area_code=city["district"].code.iloc[0], settings=auth)
        create_user(conn, "worker", "worker-password", "grid_worker",
                    area_code=city["district"].code.iloc[0], settings=auth)
        conn.execute(text("SELECT 1"))
    eng.dispose()
    rng = random.Random(5)
    utm = int(city["district"].metric_srid.iloc[0])
    inner = city["grid"].to_crs(utm).geometry.buffer(-20).to_crs(4326)
    points: list[tuple[float, float]] = []
    while len(points) < 2000:
        g = inner.iloc[rng.randrange(len(inner))]
        x0, y0, x1, y1 = g.bounds
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if g.contains(Point(x, y)):
            points.append((round(x, 7), round(y, 7)))
    return name, key, points


def lua_script(points: list[tuple[float, float]], key: str, worker: str, commander: str) -> str:
    cats = ["rubbish", "noise", "parking", "snow_ice", "sewer_blocked", "road_damage"]
    return (
        "pts = {" + ",".join(f"{{{x!r},{y!r}}}" for x, y in points) + "}\n"
        f"cats = {{{','.join(repr(c) for c in cats)}}}\n"
        "math.randomseed(7)\n"
        "request = function()\n"
        "  local r = math.random()\n"
        "  local p = pts[math.random(#pts)]\n"
        "  if r < 0.7 then\n"
        f"    return wrk.format('GET', '/v1/lookup?lon=' .. p[1] .. '&lat=' .. p[2], "
        f"{{['X-API-Key']='{key}'}})\n"
        "  elseif r < 0.9 then\n"
        "    local body = '{\"category\":\"' .. cats[math.random(#cats)] .. '\",\"lon\":' .. "
        "p[1] .. ',\"lat\":' .. p[2] .. ',\"description\":\"load test\"}'\n"
        f"    return wrk.format('POST', '/v1/incidents', {{['Authorization']='Bearer {worker}', "
        "['Content-Type']='application/json'}, body)\n"
        "  else\n"
        f"    return wrk.format('GET', '/maps/grids', {{['Authorization']='Bearer {commander}'}})\n"
        "  end\n"
        "end\n"
        # 401s counted per thread and summed at the end: a token signed by another worker
        # (a secret per process) would show here
        "threads = {}\n"
        "setup = function(thread) table.insert(threads, thread) end\n"
        "init = function(args) n401 = 0 end\n"
        "response = function(status, headers, body)\n"
        "  if status == 401 then n401 = n401 + 1 end\n"
        "end\n"
        "done = function(summary, latency, requests)\n"
        "  local n = 0\n"
        "  for _, t in ipairs(threads) do n = n + t:get('n401') end\n"
        "  io.write('unexpected_401: ' .. n .. '\\n')\n"
        "end\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--grids", type=int, default=300)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    args = ap.parse_args()

    name, key, points = prepare(args.grids)
    # No WANGGE_JWT_SECRET: the workers must share the secret kept in the state directory.
    # One token stands for a whole crowd here, so the per-user rate limit is lifted.
    env = {k: v for k, v in os.environ.items() if k != "WANGGE_JWT_SECRET"}
    env.update({"WANGGE_DB_NAME": name, "WANGGE_ENFORCE_ACCESS": "true",
                "WANGGE_USER_RATE_PER_MINUTE": "100000000"})
    with uvicorn_server(env, workers=args.workers) as base:
        tokens = {}
        for user in ("commander", "worker"):
            r = httpx.post(base + "/v1/auth/token",
                           data={"username": user, "password": f"{user}-password"})
            r.raise_for_status()
            tokens[user] = r.json()["access_token"]
        for _ in range(2 * args.workers):  # warm each worker's lookup index and map code
            httpx.get(base + "/v1/lookup", params={"lon": points[0][0], "lat": points[0][1]},
                      headers={"X-API-Key": key}, timeout=120).raise_for_status()
            httpx.get(base + "/maps/grids", timeout=120,
                      headers={"Authorization": f"Bearer {tokens['commander']}"}
                      ).raise_for_status()
        result = run_wrk(base + "/v1/ping", seconds=args.seconds, connections=args.connections,
                         lua=lua_script(points, key, tokens["worker"], tokens["commander"]))
        eng = make_engine(make_url(resolve_url(DatabaseSettings()))
                          .set(database=name).render_as_string(hide_password=False))
        with eng.connect() as c:
            reports = c.execute(text("SELECT count(*) FROM incident")).scalar()
        eng.dispose()
    raw = result.pop("raw")
    print(raw)
    found = re.search(r"unexpected_401: (\d+)", raw)
    unexpected_401 = int(found.group(1)) if found else None
    write_results("load", {
        "duration_s": args.seconds,
        "requests": result["requests"],
        "errors": result["errors"],
        "rps": result["rps"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "non2xx": result["non2xx"],
        "socket_errors": result["socket_errors"],
        "reports_stored": reports,
        "mix": {"lookup": 0.7, "report": 0.2, "grid_map_page": 0.1},
        "grids": args.grids,
        "connections": args.connections,
        "uvicorn_workers": args.workers,
        "workers": args.workers,
        "unexpected_401": unexpected_401,
        "load_generator": "wrk 4 (Debian), 1 thread, Lua request mix",
        "access_policy": "on (API key for lookups, bearer tokens for reports and maps)",
    })


if __name__ == "__main__":
    main()
