"""The console in Chromium on the 10,000-grid synthetic city with 1,000,000 incidents.

    .venv/bin/python -m bench.console --grids 10000 --incidents 1000000

1. A synthetic city (``geo.samples.synth``: districts to grids, 2+5+N teams, buildings) in its
   own database, filled with incidents by ``bench.incidents.bulk_fill`` (3 years, ~1.6 % open).
2. The service under uvicorn (one worker); headless Debian Chromium signs in through the
   console's own session route.
3. ``commander_first_view_ms``: a commander of the whole district opens /console/commander; ms
   from navigation start until the base map (streets, communities, grids), every open and
   recently closed case in its clusters, the counts table and chart and the trend chart are
   drawn (the page's ``data-ready-ms``: data in, two animation frames painted).
   ``worker_desk_ms``: the same for a grid worker's desk at 390 px (cases of the grid with the
   most open cases, sorted by SLA state, and what is due today). Medians of ``--repeat`` loads
   with a warm server (the first, cold load is reported too); ``page_bytes``: everything the
   commander's view transferred (HTML, scripts, styles, JSON).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.common import uvicorn_server, write_results
from bench.incidents import bulk_fill
from geo.core.db import make_engine, migrate, resolve_url
from geo.core.settings import DatabaseSettings

DB_NAME = "wangge_bench_console"
PASSWORD = "bench-console-password"
CHROMIUM = "/usr/bin/chromium"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync"]


def setup_database(grids: int, incidents: int, fresh: bool) -> tuple[str, str]:
    """The bench database (reused when it already holds the sizes asked for, unless ``fresh``);
    returns its URL and the grid code of the grid worker's grid."""
    from geo.auth.service import AuthSettings, create_user
    from geo.data.store import write_layers
    from geo.samples.synth import generate_city

    base = resolve_url(DatabaseSettings())
    url = make_url(base).set(database=DB_NAME).render_as_string(hide_password=False)
    admin = create_engine(make_url(base).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        exists = c.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"),
                           {"d": DB_NAME}).first()
    if exists and not fresh:
        eng = make_engine(url)
        with eng.connect() as c:
            have = c.execute(text("SELECT (SELECT count(*) FROM area_current WHERE level ="
                                  " 'grid'), (SELECT count(*) FROM incident)")).first()
        eng.dispose()
        fresh = tuple(have) != (grids, incidents)
    if not exists or fresh:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
        migrate(url)
        layers = generate_city(grids=grids, buildings=grids * 2, stations=20, seed=1)
        keep = ("district", "street", "community", "grid", "grid_team", "building", "station")
        eng = make_engine(url)
        with eng.begin() as c:
            write_layers(c, {k: v for k, v in layers.items() if k in keep}, note="bench console")
        eng.dispose()
        bulk_fill(url, incidents)
    admin.dispose()
    eng = make_engine(url)
    with eng.begin() as c:
        district = c.execute(text("SELECT code FROM area_current WHERE level = 'district'"
                                  " LIMIT 1")).scalar()
        grid = c.execute(text("SELECT grid_code FROM incident WHERE is_open GROUP BY 1"
                              " ORDER BY count(*) DESC LIMIT 1")).scalar()
        c.execute(text("DELETE FROM app_user WHERE username IN ('bench-cmd', 'bench-worker')"))
        auth = AuthSettings()
        create_user(c, "bench-cmd", PASSWORD, "commander", area_code=district, settings=auth)
        create_user(c, "bench-worker", PASSWORD, "grid_worker", area_code=grid, settings=auth)
    eng.dispose()
    return url, grid


def load_ms(browser, base: str, user: str, path: str, viewport: dict,
            repeat: int) -> dict:
    """Sign in as ``user`` and open ``path`` ``repeat`` + 1 times; the page's ready times."""
    ctx = browser.new_context(viewport=viewport, locale="zh-CN", timezone_id="Asia/Shanghai")
    page = ctx.new_page()
    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: r.url.startswith(base) or r.url.startswith("data:")
            or outside.append(r.url))
    r = page.request.post(f"{base}/v1/console/session",
                          form={"username": user, "password": PASSWORD})
    assert r.ok, r.text()
    times, sizes = [], []
    for _ in range(repeat + 1):
        page.goto(f"{base}{path}", wait_until="commit")
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        times.append(int(page.locator("body").get_attribute("data-ready-ms")))
        sizes.append(page.evaluate(
            """() => performance.getEntriesByType('navigation').concat(
                 performance.getEntriesByType('resource'))
               .reduce((a, e) => a + (e.encodedBodySize || 0), 0)"""))
    marks = page.evaluate("() => WG.marks")
    counts = page.evaluate("() => window.commander ? commander.cases.size : "
                           "document.querySelectorAll('#cases li').length")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"bench-console-{path.rsplit('/', 1)[-1]}.png"))
    ctx.close()
    return {"cold_ms": times[0], "median_ms": statistics.median(times[1:]), "all_ms": times,
            "bytes": sizes[-1], "items": counts, "marks_ms": marks, "console_errors": errors,
            "outside_requests": outside}


ARTIFACTS = Path(__file__).resolve().parent / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grids", type=int, default=10_000)
    ap.add_argument("--incidents", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--fresh", action="store_true", help="Rebuild the bench database.")
    args = ap.parse_args()
    from maps import assets

    assets.fetch()
    url, grid = setup_database(args.grids, args.incidents, args.fresh)
    import os

    env = {**os.environ, "WANGGE_DATABASE_URL": url, "WANGGE_JWT_SECRET": "bench-" + "k" * 40}
    from playwright.sync_api import sync_playwright

    with uvicorn_server(env) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        cmd = load_ms(browser, base, "bench-cmd", "/console/commander",
                      {"width": 1280, "height": 820}, args.repeat)
        desk = load_ms(browser, base, "bench-worker", "/console/worker",
                       {"width": 390, "height": 844}, args.repeat)
        browser.close()
    eng = make_engine(url)
    with eng.connect() as c:
        n, open_n = c.execute(text("SELECT count(*), count(*) FILTER (WHERE is_open)"
                                   " FROM incident")).first()
    eng.dispose()
    result = {
        "grids": args.grids, "incidents": n, "open_incidents": open_n,
        "commander_first_view_ms": cmd["median_ms"], "commander_first_view_cold_ms":
        cmd["cold_ms"], "worker_desk_ms": desk["median_ms"], "worker_desk_cold_ms":
        desk["cold_ms"], "page_bytes": cmd["bytes"], "worker_page_bytes": desk["bytes"],
        "commander_cases_on_map": cmd["items"], "worker_cases_listed": desk["items"],
        "worker_grid": grid, "repeat": args.repeat,
        "targets_ms": {"commander_first_view": 3000, "worker_desk": 1500},
        "runs_ms": {"commander": cmd["all_ms"], "worker": desk["all_ms"]},
        "commander_parts_ms": cmd["marks_ms"],
        "console_errors": cmd["console_errors"] + desk["console_errors"],
        "outside_requests": cmd["outside_requests"] + desk["outside_requests"],
    }
    write_results("console", result)


if __name__ == "__main__":
    main()
