"""Incident benchmark: reports/s over HTTP, and overdue / per-grid statistics at 1 M and 5 M.

1. A synthetic district (geo.samples.synth, 852 grids like Fuzhou Cangshan) in its own database.
2. uvicorn (``--workers``) serves the app; ``wrk`` with a Lua script POSTs Open311 requests
   (form-encoded, api_key, random category, points sampled inside the grids) for
   ``--seconds``: every request is located with the lookup, duplicate-checked (ST_DWithin on the
   partial geography index) and committed with its history row before the answer.
3. Incidents are bulk-generated in SQL (generate_series; 3 years, ~3 % still open) up to each
   size in ``--sizes``; at each size the queries "overdue cases in street X" and "per-grid
   statistics of street X over the last 30 days" are timed (median of ``--repeat`` runs), and
   against the obvious alternative: the same overdue query with the partial index disabled
   (sequential scan), and per-grid statistics over the whole district and all time.

    .venv/bin/python -m bench.incidents --sizes 1000000,5000000 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from tqdm import tqdm

from bench.common import run_wrk, uvicorn_server, write_results
from geo import incidents as inc
from geo.core.db import make_engine, migrate, resolve_url
from geo.core.settings import DatabaseSettings

DB_NAME = "wangge_bench_incidents"

LUA = """
local points = {%s}
local cats = {%s}
local key = "%s"
math.randomseed(os.time())
request = function()
  local p = points[math.random(#points)]
  local c = cats[math.random(#cats)]
  local body = "api_key=" .. key .. "&service_code=" .. c .. "&lat=" .. p[2] .. "&long=" ..
               p[1] .. "&description=bench"
  return wrk.format("POST", "/open311/v2/requests.json",
                    {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
"""

BULK_SQL = """
WITH g AS (
    SELECT array_agg(code ORDER BY code) AS codes,
           array_agg(parent_code ORDER BY code) AS comms,
           array_agg(ST_X(ST_PointOnSurface(geom)) ORDER BY code) AS xs,
           array_agg(ST_Y(ST_PointOnSurface(geom)) ORDER BY code) AS ys,
           count(*)::int AS n
    FROM area_current WHERE level = 'grid'
), cats AS (
    SELECT array_agg(code ORDER BY code) AS codes, count(*)::int AS n FROM incident_category
), s AS (
    SELECT i,
           1 + (hashint4(i) & 2147483647) % g.n AS gi,
           1 + (hashint4(i + 7) & 2147483647) % cats.n AS ci,
           :t0 + ((i - :blo)::float8 / :bn) * :span * interval '1 second' AS rep,
           ((hashint4(i + 13) & 2147483647) % 10000) / 10000.0 AS u,
           g.codes, g.comms, g.xs, g.ys, cats.codes AS ccodes
    FROM generate_series(:lo, :hi) AS i, g, cats
)
INSERT INTO incident (category_code, description, location, district_code, street_code,
    community_code, grid_code, status, department_ids, source, reported_at, updated_at,
    checkin_due, amber_at, resolve_due, checked_in_at, consulting_at, in_progress_at,
    feedback_at, rated_at, closed_at, rating)
SELECT ccodes[ci], 'bulk',
       ST_SetSRID(ST_MakePoint(xs[gi] + (u - 0.5) * 0.0004, ys[gi] + (u - 0.5) * 0.0003), 4326),
       left(codes[gi], 6), left(codes[gi], 9), comms[gi], codes[gi],
       st, '{1}', 'bulk', rep, rep,
       rep + interval '1 day', rep + interval '3.2 days', rep + interval '4 days',
       CASE WHEN st <> 'reported' THEN rep + interval '3 hours' END,
       CASE WHEN st IN ('consulting', 'in_progress', 'feedback', 'rated', 'closed')
            THEN rep + interval '8 hours' END,
       CASE WHEN st IN ('in_progress', 'feedback', 'rated', 'closed')
            THEN rep + interval '1 day' END,
       CASE WHEN st IN ('feedback', 'rated', 'closed') THEN rep + (1 + 3 * u) * interval '1 day'
       END,
       CASE WHEN st IN ('rated', 'closed') THEN rep + (2 + 3 * u) * interval '1 day' END,
       CASE WHEN st = 'closed' THEN rep + (2 + 3 * u) * interval '1 day' END,
       CASE WHEN st IN ('rated', 'closed') THEN 1 + (hashint4(i + 3) & 2147483647) % 5 END
FROM (SELECT s.*, CASE
        WHEN rep < now() - interval '30 days' AND u < 0.998 THEN 'closed'
        WHEN rep < now() - interval '30 days' THEN 'in_progress'
        WHEN u < 0.5 THEN 'closed'
        WHEN u < 0.6 THEN 'reported'
        WHEN u < 0.7 THEN 'checked_in'
        WHEN u < 0.8 THEN 'in_progress'
        ELSE 'feedback' END AS st FROM s) x
"""


def _admin(url: str):
    return create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def setup_database(grids: int) -> str:
    """A fresh migrated bench database holding a synthetic district."""
    from geo.auth.service import create_api_key
    from geo.data.store import write_layers
    from geo.samples.synth import generate_city

    base = resolve_url(DatabaseSettings())
    admin = _admin(base)
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    admin.dispose()
    url = make_url(base).set(database=DB_NAME).render_as_string(hide_password=False)
    migrate(url)
    layers = generate_city(grids=grids, buildings=grids * 2, stations=20, seed=1, team=False)
    layers = {k: v for k, v in layers.items() if k in ("district", "street", "community", "grid")}
    eng = make_engine(url)
    with eng.begin() as c:
        write_layers(c, layers, note="bench incidents")
        key = create_api_key(c, "bench", scopes=("open311",), rate_per_minute=10**9)
    eng.dispose()
    return url, key


def sample_points(url: str, n: int) -> list[tuple[float, float]]:
    eng = make_engine(url)
    with eng.connect() as c:
        rows = c.execute(text(
            "SELECT ST_X(p.geom), ST_Y(p.geom) FROM (SELECT (ST_Dump(ST_GeneratePoints("
            "ST_Union(geom), :n, 7))).geom FROM area_current WHERE level = 'grid') p"),
            {"n": n}).all()
    eng.dispose()
    return [(float(x), float(y)) for x, y in rows]


def http_reports(url: str, key: str, seconds: int, workers: int, connections: int,
                 pool_size: int = 8) -> dict:
    """Committed reports/s over HTTP: wrk POSTs Open311 requests to uvicorn on localhost."""
    pts = sample_points(url, 2000)
    env = {**os.environ, "WANGGE_DATABASE_URL": url, "WANGGE_POOL_SIZE": str(pool_size),
           "WANGGE_DUPLICATE_WINDOW_HOURS": "1"}
    with uvicorn_server(env, workers=workers) as base:
        # warm every worker's lookup index
        for _ in range(workers * 4):
            httpx.post(base + "/open311/v2/requests.json", timeout=60,
                       data={"api_key": key, "service_code": "noise", "lat": pts[0][1],
                             "long": pts[0][0]})
        eng = make_engine(url)
        with eng.connect() as c:
            before = c.execute(text("SELECT count(*) FROM incident")).scalar()
        if not shutil.which("wrk"):  # pragma: no cover
            raise SystemExit("wrk not found")
        lua = LUA % (", ".join(f"{{{x:.7f},{y:.7f}}}" for x, y in pts),
                     ", ".join(f'"{c}"' for c in (r[0] for r in inc_categories(url))), key)
        result = run_wrk(base, seconds=seconds, connections=connections, threads=2, lua=lua)
        print(result.pop("raw"))
        with eng.connect() as c:
            after = c.execute(text("SELECT count(*) FROM incident")).scalar()
            kinds = dict(c.execute(text(
                "SELECT status = 'duplicate', count(*) FROM incident GROUP BY 1")).all())
        eng.dispose()
        committed = after - before
        return {"tool": "wrk", "seconds": seconds, "uvicorn_workers": workers,
                "pool_size_per_worker": pool_size,
                "connections": connections, "committed_reports": committed,
                "reports_per_s": round(committed / seconds, 1), "non_2xx": result["non2xx"],
                "socket_errors": result["socket_errors"], "p50_ms": result["p50_ms"],
                "p99_ms": result["p99_ms"], "duplicates_linked": kinds.get(True, 0)}


def inc_categories(url: str) -> list:
    eng = make_engine(url)
    with eng.connect() as c:
        rows = c.execute(text("SELECT code FROM incident_category ORDER BY code")).all()
    eng.dispose()
    return rows


def bulk_fill(url: str, target: int, chunk: int = 250_000) -> None:
    """Add SQL-generated incidents until the table holds ``target``; the added rows are
    time-ordered over the last 3 years (each fill is one more sweep over those years)."""
    eng = make_engine(url)
    with eng.connect() as c:
        have = c.execute(text("SELECT coalesce(max(id), 0) FROM incident")).scalar()
    now = datetime.now(UTC)
    t0 = now - timedelta(days=3 * 365)
    span = (now - timedelta(hours=1) - t0).total_seconds()
    with eng.begin() as c:  # the monthly partitions of those years (migration 0016)
        from geo.incidents.partitions import ensure_partitions

        ensure_partitions(c, start=t0.date(), ahead=12)
    lo = blo = have + 1
    with tqdm(total=target - have, desc=f"incidents → {target:,}", unit="row") as bar:
        while lo <= target:
            hi = min(lo + chunk - 1, target)
            with eng.begin() as c:
                c.execute(text(BULK_SQL), {"t0": t0, "blo": blo, "bn": target - have,
                                           "span": span, "lo": lo, "hi": hi})
            bar.update(hi - lo + 1)
            lo = hi + 1
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE incident"))
    eng.dispose()


def bulk_fill_months(url: str, target: int) -> None:
    """Fill an empty ``incident`` with ``target`` SQL-generated cases over the last 3 years, a
    month at a time the way a bulk load into a partitioned table is done: the month is
    written into a plain table without indexes, which then replaces the empty monthly
    partition (ATTACH PARTITION builds its indexes in one sorted pass each)."""
    from geo.incidents.partitions import ensure_partitions

    eng = make_engine(url)
    now = datetime.now(UTC)
    t0 = now - timedelta(days=3 * 365)
    span = (now - timedelta(hours=1) - t0).total_seconds()
    with eng.begin() as c:
        if c.execute(text("SELECT count(*) FROM incident")).scalar():
            raise SystemExit("bulk_fill_months fills an empty incident table")
        ensure_partitions(c, start=t0.date(), ahead=12)
    month = t0.date().replace(day=1)
    insert = BULK_SQL.replace("INSERT INTO incident (", "INSERT INTO bulk_month (").replace(
        "ELSE 'feedback' END AS st FROM s) x",
        "ELSE 'feedback' END AS st FROM s) x WHERE rep >= :ma AND rep < :mb")
    with tqdm(total=target, desc=f"incidents → {target:,} (by month)", unit="row") as bar:
        while month <= now.date():
            nxt = (month + timedelta(days=32)).replace(day=1)
            a = datetime(month.year, month.month, 1, tzinfo=UTC)
            b = datetime(nxt.year, nxt.month, 1, tzinfo=UTC)
            lo = max(1, int((a - t0).total_seconds() / span * target) - 2)
            hi = min(target, int((b - t0).total_seconds() / span * target) + 2)
            name = f"incident_y{month.year:04d}m{month.month:02d}"
            with eng.begin() as c:
                c.execute(text("CREATE TABLE bulk_month (LIKE incident INCLUDING DEFAULTS"
                               " INCLUDING GENERATED INCLUDING CONSTRAINTS)"))
                if lo <= hi:
                    c.execute(text(insert), {"t0": t0, "blo": 1, "bn": target, "span": span,
                                             "lo": lo, "hi": hi, "ma": a, "mb": b})
                n = c.execute(text("SELECT count(*) FROM bulk_month")).scalar()
                c.execute(text(f"ALTER TABLE incident DETACH PARTITION {name}"))
                c.execute(text(f"DROP TABLE {name}"))
                c.execute(text(f"ALTER TABLE bulk_month RENAME TO {name}"))
                c.execute(text(f"ALTER TABLE incident ATTACH PARTITION {name}"
                               " FOR VALUES FROM (:a) TO (:b)".replace(":a", f"'{a.isoformat()}'")
                               .replace(":b", f"'{b.isoformat()}'")))
            bar.update(n)
            month = nxt
    with eng.begin() as c:
        c.execute(text("SELECT setval('incident_id_seq', :n)"), {"n": target})
    rebuild_rollup(eng)
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE incident"))
        c.execute(text("VACUUM ANALYZE incident_grid_day"))
    eng.dispose()


def rebuild_rollup(eng) -> float:
    """ATTACH PARTITION fires no trigger: the daily roll-up (migration 0017) is made again
    from the filled table; seconds taken."""
    t = time.perf_counter()
    with eng.begin() as c:
        rows = c.execute(text("SELECT wangge_incident_rollup_rebuild()")).scalar()
    took = time.perf_counter() - t
    print(f"roll-up rebuilt: {rows:,} rows in {took:.1f} s")
    return took


def _median_ms(conn, fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2)


def time_queries(url: str, repeat: int, baseline_max: int = 1_000_000) -> dict:
    eng = make_engine(url)
    now = datetime.now(UTC)
    with eng.connect() as c:
        n = c.execute(text("SELECT count(*) FROM incident")).scalar()
        street = c.execute(text("SELECT street_code FROM incident WHERE is_open"
                                " GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")).scalar()
        res: dict = {"incidents": n, "street": street}
        res["overdue_rows"] = len(inc.overdue(c, street=street, now=now, limit=1000))
        res["overdue_query_ms"] = _median_ms(
            c, lambda: inc.overdue(c, street=street, now=now, limit=1000), repeat)
        start = now - timedelta(days=30)
        res["grid_stats_rows"] = len(inc.stats(c, by="grid", street=street, start=start, now=now))
        res["grid_stats_query_ms"] = _median_ms(
            c, lambda: inc.stats(c, by="grid", street=street, start=start, now=now), repeat)
        res["grid_stats_raw_query_ms"] = _median_ms(  # the same numbers from incident alone
            c, lambda: inc.stats(c, by="grid", street=street, start=start, now=now,
                                 rollup=False), max(1, repeat // 2))
        res["grid_stats_geojson_ms"] = _median_ms(
            c, lambda: inc.stats_geojson(c, by="grid", street=street, start=start, now=now),
            repeat)
        # the obvious alternatives
        c.rollback()
        tx = c.begin()
        c.execute(text("SET LOCAL enable_indexscan = off"))
        c.execute(text("SET LOCAL enable_bitmapscan = off"))
        res["overdue_seqscan_ms"] = _median_ms(
            c, lambda: inc.overdue(c, street=street, now=now, limit=1000), max(1, repeat // 3))
        tx.rollback()
        if n <= baseline_max:  # minutes at 5 M on this machine: measured at the small size only
            res["grid_stats_all_district_all_time_ms"] = _median_ms(
                c, lambda: inc.stats(c, by="grid", now=now), 1)
        res["overdue_speedup_vs_seqscan"] = round(res["overdue_seqscan_ms"]
                                                  / max(res["overdue_query_ms"], 1e-3), 1)
        sizes = dict(c.execute(text(  # summed over the monthly partitions (migration 0016)
            "SELECT relname, coalesce((SELECT sum(pg_relation_size(relid))"
            " FROM pg_partition_tree(oid)), pg_relation_size(oid))"
            " FROM pg_class WHERE relname IN"
            " ('incident', 'ix_incident_reported_brin', 'ix_incident_open_street_due',"
            " 'ix_incident_grid_time', 'ix_incident_street_time', 'ix_incident_open_geog',"
            " 'incident_grid_day')"
        )).all())
        res["relation_mb"] = {k: round(float(v) / 2**20, 2) for k, v in sizes.items()}
    eng.dispose()
    print(res)
    return res


def explain_queries(url: str, path: Path) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the exact statements ``overdue`` and ``stats`` (by grid,
    last 30 days) send for the street with most open cases, written to ``path``."""
    from sqlalchemy import event

    eng = make_engine(url)
    sent: list[tuple[str, object]] = []
    event.listen(eng, "before_cursor_execute",
                 lambda _c, _cur, stmt, params, _ctx, _many: sent.append((stmt, params)))
    now = datetime.now(UTC)
    with eng.connect() as c:
        street = c.execute(text("SELECT street_code FROM incident WHERE is_open"
                                " GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")).scalar()
        sent.clear()
        inc.overdue(c, street=street, now=now, limit=1000)
        inc.stats(c, by="grid", street=street, start=now - timedelta(days=30), now=now)
        inc.stats(c, by="grid", street=street, start=now - timedelta(days=30), now=now,
                  rollup=False)
        queries = list(sent)
        out = []
        names = ("overdue", "grid_stats (roll-up + partial days)", "grid_stats overdue count",
                 "grid_stats raw (reference)")
        for name, (stmt, params) in zip(names, queries, strict=True):
            cur = c.connection.dbapi_connection.cursor()
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + stmt, params)
            out.append(f"-- {name}\n{stmt}\n-- {params}\n"
                       + "\n".join(r[0] for r in cur.fetchall()))
    eng.dispose()
    path.write_text("\n\n".join(out) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,5000000", help="Comma-separated table sizes.")
    ap.add_argument("--grids", type=int, default=852, help="Grids of the synthetic district.")
    ap.add_argument("--seconds", type=int, default=20, help="wrk duration.")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers.")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections.")
    ap.add_argument("--pool-size", type=int, default=8,
                    help="Database connections per uvicorn worker.")
    ap.add_argument("--repeat", type=int, default=9, help="Query repetitions (median).")
    ap.add_argument("--skip-http", action="store_true", help="Only the query timings.")
    ap.add_argument("--http-only", action="store_true",
                    help="Re-measure only reports/s, on the existing bench database (holding "
                    "the largest size filled); keep the query figures of the last JSON.")
    ap.add_argument("--reuse", action="store_true",
                    help="Keep the existing bench database and the HTTP figures and smaller "
                    "sizes of bench/results/incidents.json; only fill and time --sizes.")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    per_size: list[dict] = []
    http = None
    if args.reuse or args.http_only:
        import json
        import uuid

        from bench.common import RESULTS_DIR
        from geo.auth.service import create_api_key

        old = json.loads((RESULTS_DIR / "incidents.json").read_text())
        http = old.get("http")
        per_size = [p for p in old.get("per_size", [])
                    if args.http_only or p["incidents"] < sizes[0]]
        url = make_url(resolve_url(DatabaseSettings())).set(database=DB_NAME).render_as_string(
            hide_password=False)
        if args.http_only:
            sizes = []
            migrate(url)
            eng = make_engine(url)
            with eng.begin() as c:
                key = create_api_key(c, f"bench-{uuid.uuid4().hex[:8]}", scopes=("open311",),
                                     rate_per_minute=10**9)
                held = c.execute(text("SELECT count(*) FROM incident")).scalar()
            eng.dispose()
            http = http_reports(url, key, args.seconds, args.workers, args.connections,
                                args.pool_size)
            http["incidents_in_table"] = int(held)
    else:
        url, key = setup_database(args.grids)
        http = None if args.skip_http else http_reports(url, key, args.seconds, args.workers,
                                                        args.connections, args.pool_size)
    for size in sizes:
        bulk_fill(url, size)
        per_size.append(time_queries(url, args.repeat))
    write_results("incidents", {
        "grids": args.grids,
        "incidents": [p["incidents"] for p in per_size],
        "reports_per_s": http["reports_per_s"] if http else None,
        "http": http,
        "overdue_query_ms": [p["overdue_query_ms"] for p in per_size],
        "grid_stats_query_ms": [p["grid_stats_query_ms"] for p in per_size],
        "per_size": per_size,
        "queries": {
            "overdue_query_ms": "inc.overdue(street=X): open cases of the street with most open"
                                " cases past resolve_due (partial index on open cases)",
            "grid_stats_query_ms": "inc.stats(by='grid', street=X, last 30 days): counts, "
                                   "median hours per step, satisfaction per grid",
        },
        "targets": {"reports_per_s": 500, "query_ms_at_5M": 100},
    })


if __name__ == "__main__":
    main()
