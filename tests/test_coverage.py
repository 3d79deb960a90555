"""Coverage counts against an independent shapely computation, and the kind-share targets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import shapely
from circles_testnet import ORIGIN_M, add_station, make_lattice, to_wgs84
from pyproj import Transformer
from shapely import wkb
from shapely.geometry import Point
from sqlalchemy import text

from geo.circles.build import build_circles
from geo.circles.coverage import (
    coverage_by_level,
    export_uncovered,
    run_coverage,
    uncovered_geojson,
)
from geo.circles.runs import CircleSettings
from geo.circles.shares import kind_shares

X0, Y0 = ORIGIN_M
TO_M = Transformer.from_crs(4326, 32650, always_xy=True)
COMMUNITIES = ["350104001001", "350104001002", "350104002001"]


def _to_m(xy):
    x, y = TO_M.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def _areas(conn) -> None:
    """District, two streets, three communities as vertical strips of the 1.2 km lattice."""
    gen = conn.execute(text("INSERT INTO generation (note) VALUES ('t') RETURNING id")).scalar()

    def poly(xa, xb):
        (a, b), (c, d) = to_wgs84(X0 + xa, Y0 - 50), to_wgs84(X0 + xb, Y0 + 1250)
        return f"SRID=4326;MULTIPOLYGON((({a} {b}, {c} {b}, {c} {d}, {a} {d}, {a} {b})))"

    rows = [("district", "350104", None, -50, 1250, 32650),
            ("street", "350104001", "350104", -50, 800, None),
            ("street", "350104002", "350104", 800, 1250, None),
            ("community", COMMUNITIES[0], "350104001", -50, 400, None),
            ("community", COMMUNITIES[1], "350104001", 400, 800, None),
            ("community", COMMUNITIES[2], "350104002", 800, 1250, None)]
    for level, code, parent, xa, xb, srid in rows:
        conn.execute(
            text("INSERT INTO area (level, code, parent_code, name, geom, generation_low,"
                 " metric_srid) VALUES (:l, :c, :p, :c, ST_GeomFromEWKT(:g), :gen, :s)"),
            {"l": level, "c": code, "p": parent, "g": poly(xa, xb), "gen": gen, "s": srid},
        )


def _buildings(conn, n: int = 400, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    xs, ys = rng.uniform(0, 1200, n), rng.uniform(0, 1200, n)
    res = rng.integers(0, 60, n)
    hh = res // 3
    comm = np.where(xs < 400, 0, np.where(xs < 800, 1, 2))
    grid = [f"{COMMUNITIES[c]}{1 + int(y // 600):03d}" for c, y in zip(comm, ys, strict=False)]
    rows = []
    for i in range(n):
        lon, lat = to_wgs84(X0 + xs[i], Y0 + ys[i])
        rows.append({"c": f"B{i}", "lon": lon, "lat": lat, "r": int(res[i]), "h": int(hh[i]),
                     "g": grid[i]})
    conn.execute(
        text("INSERT INTO building (code, location, residents, households, grid_code) VALUES "
             "(:c, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), :r, :h, :g)"),
        rows,
    )
    ids = conn.execute(text("SELECT id, code FROM building ORDER BY id")).all()
    df = pd.DataFrame({"x": X0 + xs, "y": Y0 + ys, "residents": res, "households": hh,
                       "grid": grid, "code": [f"B{i}" for i in range(n)]})
    return df.merge(pd.DataFrame(ids, columns=["id", "code"]), on="code")


def test_coverage_agrees_with_shapely(conn, tmp_path):
    make_lattice(conn, nx=13, ny=13)
    _areas(conn)
    df = _buildings(conn)
    s1 = add_station(conn, "S1", X0 + 250, Y0 + 300, "social_work_station", COMMUNITIES[0])
    s2 = add_station(conn, "S2", X0 + 650, Y0 + 900, "elder_canteen", COMMUNITIES[1])
    s3 = add_station(conn, "S3", X0 + 610, Y0 + 820, "social_work_station", COMMUNITIES[1])
    settings = CircleSettings()
    circles = build_circles(conn, settings, tiers_m=[300, 500])
    run = run_coverage(conn, settings, circles_run_id=circles, tier_m=300)

    polys = {
        sid: shapely.transform(wkb.loads(bytes(g)), _to_m)
        for sid, g in conn.execute(
            text("SELECT station_id, ST_AsBinary(geom) FROM service_circle "
                 "WHERE run_id = :r AND tier_m = 300"), {"r": circles})
    }
    assert set(polys) == {s1, s2, s3}
    pts = [Point(x, y) for x, y in zip(df.x, df.y, strict=False)]
    by = {sid: np.array([p.covers(pt) for pt in pts]) for sid, p in polys.items()}
    df["covered"] = np.any(np.column_stack(list(by.values())), axis=1)
    assert 0 < df.covered.sum() < len(df)  # the instance is not degenerate

    got = dict(conn.execute(text("SELECT building_id, covered FROM building_coverage "
                                 "WHERE run_id = :r"), {"r": run}).all())
    assert {i: bool(c) for i, c in zip(df.id, df.covered, strict=False)} == got
    ids = dict(conn.execute(text("SELECT building_id, station_ids FROM building_coverage "
                                 "WHERE run_id = :r"), {"r": run}).all())
    for i, row in df.iterrows():
        want = sorted(s for s, m in by.items() if m[i])
        assert ids[row.id] == want

    # per community and street totals
    df["community"] = df.grid.str[:12]
    df["street"] = df.grid.str[:9]
    df["district"] = df.grid.str[:6]
    df["city"] = df.grid.str[:4]
    for level in ("grid", "community", "street", "district", "city"):
        key = level
        want = df.groupby(key).apply(
            lambda g: (int(g.residents.sum()), int(g.residents[g.covered].sum()),
                       int(g.households[g.covered].sum())), include_groups=False).to_dict()
        got = {r["code"]: (r["residents"], r["residents_covered"], r["households_covered"])
               for r in coverage_by_level(conn, run, level)}
        assert got == want

    fc = uncovered_geojson(conn, run)
    assert len(fc["features"]) == int((~df.covered).sum())
    n = export_uncovered(conn, run, tmp_path / "u.gpkg")
    assert n == int((~df.covered).sum())
    export_uncovered(conn, run, tmp_path / "u.geojson")
    data = json.loads((tmp_path / "u.geojson").read_text())
    assert len(data["features"]) == n


def test_independent_network_circle(conn):
    """Buildings well inside/outside an independently drawn circle (networkx reach + shapely
    buffer) get the same verdict from the service."""
    import networkx as nx

    lat = make_lattice(conn, nx=13, ny=13)
    _areas(conn)
    df = _buildings(conn, n=300, seed=5)
    add_station(conn, "S1", X0 + 600, Y0 + 600, "social_work_station", COMMUNITIES[1])
    s = CircleSettings(circle_buffer_m=30.0)
    run = run_coverage(conn, s, circles_run_id=build_circles(conn, s, tiers_m=[300]))
    g = nx.Graph()
    for _, u, v, length, _ok in lat.edges:
        g.add_edge(u, v, weight=length)
    start = 6 * 13 + 6 + 1
    dist = nx.single_source_dijkstra_path_length(g, start, cutoff=300)
    lines = []
    for _, u, v, length, _ok in lat.edges:
        for a, b, da in ((u, v, dist.get(u)), (v, u, dist.get(v))):
            if da is not None and da < 300:
                f = min(1.0, (300 - da) / length)
                (px, py), (qx, qy) = lat.nodes[a], lat.nodes[b]
                lines.append(shapely.LineString([(px, py), (px + f * (qx - px),
                                                            py + f * (qy - py))]))
    circle = shapely.union_all([ln.buffer(30) for ln in lines])
    got = dict(conn.execute(text("SELECT building_id, covered FROM building_coverage "
                                 "WHERE run_id = :r"), {"r": run}).all())
    checked = 0
    for row in df.itertuples():
        p = Point(row.x, row.y)
        if circle.boundary.distance(p) < 2:
            continue
        assert got[row.id] == circle.contains(p)
        checked += 1
    assert checked > 250


def test_kind_shares_against_targets(conn):
    make_lattice(conn, nx=3, ny=3)
    _areas(conn)
    add_station(conn, "S1", X0 + 100, Y0 + 100, "social_work_station", COMMUNITIES[0])
    add_station(conn, "S2", X0 + 500, Y0 + 100, "social_work_station")  # community by location
    add_station(conn, "S3", X0 + 900, Y0 + 100, "elder_canteen", COMMUNITIES[2])
    shares = {r["kind"]: r for r in kind_shares(conn, CircleSettings())}
    sw = shares["social_work_station"]
    assert (sw["communities_with"], sw["communities"]) == (2, 3)
    assert (sw["streets_with"], sw["streets"]) == (1, 2)
    assert sw["community_target"] == 0.7 and sw["meets_targets"] is False
    assert shares["elder_canteen"]["communities_with"] == 1
    assert shares["health_station"]["communities_with"] == 0


def test_clip_to_community(conn):
    """With clip=community the circle stays inside the station's community (x < ~400 m)."""
    make_lattice(conn, nx=13, ny=13)
    _areas(conn)
    sid = add_station(conn, "S1", X0 + 350, Y0 + 600, "social_work_station", COMMUNITIES[0])
    s = CircleSettings()
    run = build_circles(conn, s, tiers_m=[300], clip="community", station_ids=[sid])
    raw = conn.execute(text("SELECT ST_AsBinary(geom) FROM service_circle WHERE run_id = :r"),
                       {"r": run}).scalar_one()
    g = shapely.transform(wkb.loads(bytes(raw)), _to_m)
    comm = conn.execute(text("SELECT ST_AsBinary(geom) FROM area WHERE code = :c"),
                        {"c": COMMUNITIES[0]}).scalar_one()
    assert shapely.transform(wkb.loads(bytes(comm)), _to_m).buffer(0.5).contains(g)
    assert g.bounds[2] <= X0 + 420
    assert g.bounds[0] < X0 + 120  # still reaches 300 m west along the street (x = 50 m)
    unclipped = build_circles(conn, s, tiers_m=[300], station_ids=[sid])
    raw2 = conn.execute(text("SELECT ST_AsBinary(geom) FROM service_circle WHERE run_id = :r"),
                        {"r": unclipped}).scalar_one()
    assert shapely.transform(wkb.loads(bytes(raw2)), _to_m).bounds[2] > X0 + 600


def test_shapely_join_equals_postgis_join(conn):
    """The point-in-circle join done in shapely gives exactly PostGIS's ST_Intersects pairs."""
    make_lattice(conn, nx=13, ny=13, river_between_rows=6, bridge_cols=(3,))
    _areas(conn)
    _buildings(conn, n=600, seed=9)
    kinds = ["social_work_station", "elder_canteen", "health_station"]
    for i, (x, y) in enumerate([(250, 300), (650, 900), (610, 820), (1000, 200), (90, 1100)]):
        add_station(conn, f"S{i}", X0 + x, Y0 + y, kinds[i % 3])
    s = CircleSettings()
    circles = build_circles(conn, s, tiers_m=[300, 500])
    run = run_coverage(conn, s, circles_run_id=circles, tier_m=500)
    want = sorted(conn.execute(text(
        "SELECT b.id, c.station_id FROM service_circle c JOIN building b"
        " ON ST_Intersects(c.geom, b.location) WHERE c.run_id = :r AND c.tier_m = 500"),
        {"r": circles}).all())
    got = sorted(conn.execute(text(
        "SELECT building_id, unnest(station_ids) FROM building_coverage WHERE run_id = :r"),
        {"r": run}).all())
    assert len(want) > 100 and got == want
    # one row per building; kinds as PostGIS would aggregate them; uncovered rows empty
    want_rows = conn.execute(text(
        "SELECT b.id, count(c.station_id) > 0, coalesce(array_agg(DISTINCT c.station_id"
        " ORDER BY c.station_id) FILTER (WHERE c.station_id IS NOT NULL), '{}'),"
        " coalesce(array_agg(DISTINCT s.kind ORDER BY s.kind) FILTER (WHERE s.kind IS NOT NULL),"
        " '{}') FROM building b LEFT JOIN service_circle c ON c.run_id = :r AND c.tier_m = 500"
        " AND ST_Intersects(c.geom, b.location) LEFT JOIN station s ON s.id = c.station_id"
        " GROUP BY b.id ORDER BY b.id"), {"r": circles}).all()
    got_rows = conn.execute(text(
        "SELECT building_id, covered, station_ids, kinds FROM building_coverage"
        " WHERE run_id = :r ORDER BY building_id"), {"r": run}).all()
    assert got_rows == want_rows
    assert any(len(r[3]) > 1 for r in got_rows)  # some building has two kinds


# --- per-building walking distances and life-circle completeness on the real demo network --------


@pytest.fixture(scope="module")
def demo_run(fresh_database):
    """A distance coverage run on the demo district (Helsinki walk network): engine, run id."""
    from circles_testnet import demo_database

    from geo.core.db import make_engine

    eng = make_engine(demo_database(fresh_database))
    with eng.begin() as c:
        run = run_coverage(c, CircleSettings(), tier_m=300)
    yield eng, run
    with eng.begin() as c:
        c.execute(text("DELETE FROM analysis_run WHERE id = :r"), {"r": run})
    eng.dispose()


def _snap_sql(table: str, geom: str) -> str:
    # nearest usable edge by distance in the metric CRS, independent of the STRtree
    return f"""
SELECT t.id, n.edge_id, n.frac, n.d FROM {table} t CROSS JOIN LATERAL (
  SELECT e.id AS edge_id,
         ST_LineLocatePoint(ST_Transform(e.geom, 32635), ST_Transform(t.{geom}, 32635)) AS frac,
         ST_Distance(ST_Transform(e.geom, 32635), ST_Transform(t.{geom}, 32635)) AS d
  FROM walk_edge e WHERE NOT EXISTS (SELECT 1 FROM _cs_blocked x WHERE x.edge_id = e.id)
  ORDER BY d LIMIT 1) n WHERE t.id = ANY(:ids)
"""


def test_building_distances_equal_networkx(demo_run):
    """Each sampled building's distance to the nearest station of every kind equals networkx
    Dijkstra over the usable walk edges from the door's access point (nearest usable edge found
    by PostGIS), access legs included; NULL exactly where networkx finds nothing within the
    limit. Coverage at 300 m follows from the distances."""
    import networkx as nx

    from geo.circles.build import BLOCKED_SQL
    from geo.circles.coverage import distances_frame

    eng, run = demo_run
    s = CircleSettings()
    with eng.connect() as c:
        tx = c.begin()
        kinds, df = distances_frame(c, run)
        c.execute(text(BLOCKED_SQL), {"kinds": list(s.circle_barrier_kinds)})
        edges = c.execute(text(
            "SELECT id, source, target, length_m FROM walk_edge e WHERE NOT"
            " EXISTS (SELECT 1 FROM _cs_blocked x WHERE x.edge_id = e.id)")).all()
        sample = df["id"].sample(40, random_state=1).tolist()
        bsnap = c.execute(text(_snap_sql("building", "location")), {"ids": sample}).all()
        st = c.execute(text("SELECT id, kind FROM station")).all()
        ssnap = c.execute(text(_snap_sql("station", "location")),
                          {"ids": [r[0] for r in st]}).all()
        tx.rollback()
    ends = {e[0]: (e[1], e[2], e[3]) for e in edges}
    kind_of = dict(st)
    g = nx.Graph()
    for _, u, v, w in edges:  # of parallel edges, the shortest
        if not g.has_edge(u, v) or g[u][v]["weight"] > w:
            g.add_edge(u, v, weight=w)
    for sid, eid, f, d in ssnap:
        u, v, length = ends[eid]
        g.add_edge(("s", sid), u, weight=d + f * length)
        g.add_edge(("s", sid), v, weight=d + (1 - f) * length)
    for bid, eid, f, d in bsnap:
        u, v, length = ends[eid]
        g.add_edge(("b", bid), u, weight=d + f * length)
        g.add_edge(("b", bid), v, weight=d + (1 - f) * length)
        for sid, seid, sf, sd in ssnap:  # a station on the same edge: straight along it
            if seid == eid:
                g.add_edge(("b", bid), ("s", sid), weight=d + sd + abs(f - sf) * length)
    checked = 0
    for kind in kinds:
        sources = [("s", sid) for sid, *_ in ssnap if kind_of[sid] == kind]
        want = nx.multi_source_dijkstra_path_length(g, sources, cutoff=s.distance_limit_m) \
            if sources else {}
        for bid in sample:
            got = df.loc[df["id"] == bid, f"{kind}_m"].iloc[0]
            w = want.get(("b", bid))
            if w is None:
                assert np.isnan(got), (bid, kind, got)
            else:
                assert got == pytest.approx(w, abs=0.15), (bid, kind)
                checked += 1
    assert checked > 100
    near = df[[f"{k}_m" for k in kinds]].min(axis=1)
    assert (df["covered"] == (near <= 300)).all()


def test_completeness_equals_pandas(demo_run):
    """Life-circle shares per community and street equal a pandas computation from the stored
    per-building distances; a kind is listed missing when under the gap share."""
    from geo.circles.completeness import completeness
    from geo.circles.coverage import distances_frame

    eng, run = demo_run
    s = CircleSettings()
    with eng.connect() as c:
        kinds, df = distances_frame(c, run)
        got = {lv: completeness(c, s, run, lv) for lv in ("community", "street", "district")}
    for level, n in (("community", 12), ("street", 9), ("district", 6)):
        df["area"] = df["grid_code"].str[:n]
        assert [a["code"] for a in got[level]] == sorted(df["area"].unique())
        for a in got[level]:
            part = df[df["area"] == a["code"]]
            res = part["residents"].sum()
            assert a["residents"] == res
            for minutes, dist in s.life_circle_m.items():
                want = [k for k in s.life_circle_kinds[minutes] if k in kinds]
                ok = np.ones(len(part), bool)
                shares = {}
                for k in want:
                    within = (part[f"{k}_m"] <= dist).to_numpy()
                    ok &= within
                    shares[k] = part["residents"][within].sum() / res
                t = a["tiers"][minutes]
                assert t["share_served"] == pytest.approx(part["residents"][ok].sum() / res,
                                                          abs=1e-4)
                assert t["kind_shares"] == pytest.approx(shares, abs=1e-4)
                assert t["missing_kinds"] == sorted(k for k, v in shares.items()
                                                    if v < s.life_circle_gap_share)
