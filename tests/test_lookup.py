"""Point lookup on the real database: hand-made geometry with known answers, agreement with
PostGIS on a synthetic city, swapped/outside/no-grid answers, refresh and dated lookups."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from factories import (
    AREAS_GEN1,
    C1,
    G11,
    G12,
    G21,
    G22,
    D,
    S,
    box,
    seed_hand_made,
    write_generation,
)
from sqlalchemy import text

from geo import lookup
from geo.core.db import make_engine
from geo.core.errors import InvalidInput, NotFound, OutsideDistrict, SwappedCoordinates, UnknownCRS
from geo.data.coords import from_wgs84
from geo.lookup import cache as lookup_cache


@pytest.fixture(scope="module")
def hand_made(fresh_database):
    eng = seed_hand_made(fresh_database())
    yield eng
    eng.dispose()


@pytest.mark.parametrize("lon,lat,grid", [
    (119.31, 26.01, G11),
    (119.31, 26.03, G12),
    (119.33, 26.005, G21),  # first part of the multipolygon
    (119.33, 26.035, G21),  # second part
    (119.33, 26.02, G22),
    (119.32, 26.015, G11),  # shared boundary G11|G22: smallest code
    (119.31, 26.02, G11),  # shared boundary G11|G12
    (119.33, 26.03, G21),  # shared boundary G21|G22
    (119.32, 26.02, G11),  # corner of three grids
    (119.305, 26.006, G11),  # on the hole's ring: the closed polygon holds it
    (119.34, 26.02, G22),  # on the district's outer edge
])
def test_known_answers(hand_made, lon, lat, grid):
    with hand_made.connect() as c:
        res = lookup.locate_point(c, lon, lat)
    assert res.grid["code"] == grid
    assert res.community["code"] == grid[:12] and res.street["code"] == S
    assert res.district["code"] == D
    assert [a["type"] for a in res.areas] == ["district", "street", "community", "grid"]


def test_team_and_boundary_distance(hand_made):
    with hand_made.connect() as c:
        res = lookup.locate_point(c, 119.31, 26.01)
    assert {m["role"] for m in res.grid["team"]} == {"grid_leader", "grid_worker"}
    # independently: the nearest boundary point in degrees, then the geodesic distance to it
    import pyproj
    from shapely.ops import nearest_points

    geod = pyproj.Geod(ellps="WGS84")
    ring = shapely.from_wkt(AREAS_GEN1[4][4])
    nearest = nearest_points(ring.boundary, shapely.Point(119.31, 26.01))[0]
    _, _, d = geod.inv(119.31, 26.01, nearest.x, nearest.y)
    assert res.boundary_distance_m == pytest.approx(d, rel=0.01)


def test_hole_outside_swapped_bad(hand_made):
    with hand_made.connect() as c:
        with pytest.raises(NotFound):
            lookup.locate_point(c, 119.306, 26.006)  # in the hole
        with pytest.raises(OutsideDistrict):
            lookup.locate_point(c, 119.40, 26.02)
        with pytest.raises(SwappedCoordinates):
            lookup.locate_point(c, 26.01, 119.31)
        with pytest.raises(InvalidInput) as exc:
            lookup.locate_point(c, "abc", 26.01)
        assert exc.value.problems[0].field == "lon"
        with pytest.raises(InvalidInput) as exc:
            lookup.locate_point(c, 119.31, 95.0)
        assert exc.value.problems[0].field == "lat"
        with pytest.raises(UnknownCRS):
            lookup.locate_point(c, 119.31, 26.01, crs="osgb36")


def test_gcj02_and_bd09_input(hand_made):
    # A WGS 84 point 20 m inside G22's south edge; its GCJ-02 value alone would fall ~500 m off.
    lon, lat = 119.335, 26.0102
    with hand_made.connect() as c:
        for crs in ("gcj02", "bd09"):
            x, y = from_wgs84(lon, lat, crs)
            res = lookup.locate_point(c, float(x), float(y), crs=crs)
            assert res.grid["code"] == G22
            assert res.lon == pytest.approx(lon, abs=1e-7)
            assert res.lat == pytest.approx(lat, abs=1e-7)


def test_batch_flags_in_input_order(hand_made):
    lon = np.array([119.31, 119.306, 119.40, 26.01, np.nan, 119.33, 200.0])
    lat = np.array([26.01, 26.006, 26.02, 119.31, 26.0, 26.035, 26.0])
    res = lookup.locate_batch(hand_made, lon, lat)
    names = [lookup.STATUS_NAMES[int(s)] for s in res["status"]]
    assert names == ["ok", "no_grid", "outside_district", "swapped", "not_a_number", "ok",
                     "out_of_range"]
    assert list(res["grid_code"][[0, 5]]) == [G11, G21]


def test_agrees_with_postgis_on_synthetic_city(fresh_database):
    from geo.data.store import write_layers
    from geo.samples.synth import generate_city

    eng = make_engine(fresh_database())
    layers = generate_city(grids=400, buildings=800, stations=10, seed=4)
    with eng.begin() as c:
        write_layers(c, layers)
    minx, miny, maxx, maxy = layers["district"].total_bounds
    rng = np.random.default_rng(11)
    n = 20_000
    x = rng.uniform(minx - 0.002, maxx + 0.002, n)
    y = rng.uniform(miny - 0.002, maxy + 0.002, n)
    res = lookup.locate_batch(eng, x, y)
    with eng.connect() as c:
        rows = c.execute(text(
            "WITH p AS (SELECT i, ST_SetSRID(ST_MakePoint(x, y), 4326) AS g "
            " FROM unnest(CAST(:x AS float8[]), CAST(:y AS float8[]))"
            " WITH ORDINALITY AS t(x, y, i))"
            " SELECT p.i, count(a.code) AS n, min(a.code) AS code FROM p LEFT JOIN area a"
            " ON a.level = 'grid' AND a.generation_high IS NULL AND ST_Contains(a.geom, p.g)"
            " GROUP BY p.i ORDER BY p.i"), {"x": x.tolist(), "y": y.tolist()}).all()
        inside_district = c.execute(text(
            "SELECT count(*) FROM unnest(CAST(:x AS float8[]), CAST(:y AS float8[])) AS t(x, y)"
            " JOIN area a ON a.level = 'district' AND a.generation_high IS NULL"
            " AND ST_Contains(a.geom, ST_SetSRID(ST_MakePoint(x, y), 4326))"),
            {"x": x.tolist(), "y": y.tolist()}).scalar()
    counts = np.array([r.n for r in rows])
    expected = np.array([r.code for r in rows], dtype=object)
    assert (counts > 1).sum() < 5  # ST_Contains excludes boundaries: overlaps are errors
    got = res["grid_code"]
    single = counts == 1
    assert single.sum() > 10_000
    assert (got[single] == expected[single]).all()
    none = counts == 0
    assert all(g is None for g in got[none])
    assert (res["status"] == lookup.OK).sum() == single.sum()
    ok_or_nogrid = np.isin(res["status"], [lookup.OK, lookup.NO_GRID]).sum()
    assert abs(ok_or_nogrid - inside_district) <= 2  # boundary points aside
    eng.dispose()


def test_refresh_without_restart_and_dated_lookups(fresh_database):
    eng = seed_hand_made(fresh_database())
    with eng.connect() as c:
        assert lookup.locate_point(c, 119.31, 26.03).grid["code"] == G12
    # Generation 2 from 2026-01-01: the west community is re-split into east-west halves.
    gen2 = [a for a in AREAS_GEN1 if a[0] != "grid" or a[2] != C1] + [
        ("grid", G11, C1, "W west", box(119.30, 26.00, 119.31, 26.04)),
        ("grid", G12, C1, "W east", box(119.31, 26.00, 119.32, 26.04)),
    ]
    with eng.begin() as c:
        write_generation(c, gen2, "2026-01-01T00:00:00+08:00", close_previous=True)
    with eng.connect() as c:
        assert lookup.locate_point(c, 119.305, 26.03).grid["code"] == G11  # current: new
        assert lookup.locate_point(c, 119.305, 26.03, at="2025-06-01").grid["code"] == G12
        assert lookup.locate_point(c, 119.305, 26.03, at="2026-06-01").grid["code"] == G11
        with pytest.raises(NotFound) as exc:
            lookup.locate_point(c, 119.305, 26.03, at="2024-06-01")
        assert exc.value.problems[0].field == "at"
        with pytest.raises(InvalidInput) as exc:
            lookup.locate_point(c, 119.305, 26.03, at="yesterday")
        assert exc.value.problems[0].field == "at"
    eng.dispose()


def _rows(layers):
    """Area rows as build_index reads them, from synthetic layers (no database)."""
    from types import SimpleNamespace

    rows = []
    for level in ("district", "street", "community", "grid"):
        for r in layers[level].itertuples():
            rows.append(SimpleNamespace(
                level=level, code=r.code, parent_code=getattr(r, "parent_code", None),
                name=r.name, responsible_body=getattr(r, "responsible_body", None),
                metric_srid=getattr(r, "metric_srid", None), wkb=shapely.to_wkb(r.geometry)))
    return rows


def test_small_change_patches_the_lattice_with_the_same_answers():
    from geo.samples.synth import generate_city

    layers = generate_city(grids=300, buildings=600, stations=10, seed=7)
    settings = lookup.LookupSettings()
    before = lookup.LookupIndex(_rows(layers), {}, generation=1, version=1, settings=settings)
    grids = layers["grid"].copy()
    # split the first grid in two along its vertical midline (new codes), and give its
    # east neighbour's western strip to the first grid's eastern half
    g = grids.geometry.iloc[0]
    minx, miny, maxx, maxy = g.bounds
    mid = (minx + maxx) / 2
    west = g.intersection(shapely.box(minx - 1, miny - 1, mid, maxy + 1))
    east = g.intersection(shapely.box(mid, miny - 1, maxx + 1, maxy + 1))
    first = grids.iloc[0]
    new = grids.iloc[1:].copy()
    extra = grids.iloc[[0, 0]].copy()
    extra["code"] = [first["code"][:12] + "901", first["code"][:12] + "902"]
    extra["geometry"] = [west, east]
    changed = np.concatenate((new.to_numpy(), extra.to_numpy()))
    layers_after = dict(layers, grid=grids.__class__(changed, columns=grids.columns,
                                                     crs=grids.crs))
    rows_after = _rows(layers_after)
    patched = lookup.LookupIndex(rows_after, {}, generation=2, version=2, settings=settings,
                                 previous=before)
    rebuilt = lookup.LookupIndex(rows_after, {}, generation=2, version=2, settings=settings)
    assert patched.incremental and not rebuilt.incremental
    rng = np.random.default_rng(3)
    dminx, dminy, dmaxx, dmaxy = shapely.bounds(rebuilt.district_geom)
    x = rng.uniform(dminx, dmaxx, 200_000)
    y = rng.uniform(dminy, dmaxy, 200_000)
    # densely around the change too
    x = np.concatenate((x, rng.uniform(minx - 0.002, maxx + 0.002, 50_000)))
    y = np.concatenate((y, rng.uniform(miny - 0.002, maxy + 0.002, 50_000)))
    gi_p, st_p = patched.classify(x, y)
    gi_r, st_r = rebuilt.classify(x, y)
    assert np.array_equal(st_p, st_r) and np.array_equal(gi_p, gi_r)
    # and both agree with shapely on the changed area, away from boundaries
    codes = np.asarray(patched.grid_codes, dtype=object)
    tree = shapely.STRtree(np.asarray([west, east], dtype=object))
    pts = shapely.points(x[-50_000:], y[-50_000:])
    hit_pt, hit_g = tree.query(pts, predicate="within")
    assert hit_pt.size > 1000
    expected = np.asarray(extra["code"].tolist(), dtype=object)[hit_g]
    got = codes[gi_p[-50_000:][hit_pt]]
    assert (got == expected).all()
    assert first["code"] not in patched.grid_codes


def test_single_point_path_matches_the_array_path():
    """``locate_one`` answers boundary cells in plain floats: it must agree with the vectorised
    ``classify`` point for point, on edges, vertices and just beside them included."""
    from geo.samples.synth import generate_city

    layers = generate_city(grids=120, buildings=240, stations=5, seed=9)
    index = lookup.LookupIndex(_rows(layers), {}, generation=1, version=1,
                               settings=lookup.LookupSettings())
    rng = np.random.default_rng(5)
    edges = index.e_xy[rng.choice(len(index.e_xy), 3_000)]
    t = rng.uniform(0, 1, (len(edges), 1))
    on_edge = edges[:, :2] + t * (edges[:, 2:] - edges[:, :2])
    vertices = edges[:, :2]
    beside = on_edge + rng.normal(0, 1e-6, on_edge.shape)
    dminx, dminy, dmaxx, dmaxy = shapely.bounds(index.district_geom)
    anywhere = np.column_stack((rng.uniform(dminx, dmaxx, 3_000), rng.uniform(dminy, dmaxy, 3_000)))
    pts = np.concatenate((on_edge, vertices, beside, anywhere))
    gi, st = index.classify(pts[:, 0], pts[:, 1])
    single = np.array([index.locate_one(x, y) for x, y in pts.tolist()])
    in_boundary_cells = sum(index.labels[int((y - index.y0) * index.inv_cy) * index.nx
                                         + int((x - index.x0) * index.inv_cx)] <= -2
                            for x, y in pts.tolist())
    assert in_boundary_cells > 8_000  # the plain-float path is what is under test
    assert np.array_equal(single[:, 1], st)
    assert np.array_equal(single[:, 0][st == lookup.OK], gi[st == lookup.OK])


def test_refresh_lookup_makes_the_next_lookup_rebuild(hand_made):
    """After a planning change, ``refresh_lookup`` drops the cached index even within the
    staleness window (the version check alone would wait for it)."""
    from geo.planning import refresh_lookup

    first = lookup.get_index(hand_made, max_staleness_ms=60_000)
    assert lookup.get_index(hand_made, max_staleness_ms=60_000) is first
    refresh_lookup()
    again = lookup.get_index(hand_made, max_staleness_ms=60_000)
    assert again is not first
    assert again.grid_codes == first.grid_codes


def test_failed_background_refresh_waits_for_the_next_interval(hand_made, monkeypatch):
    """With the database unreachable, the HTTP path keeps answering from the index it has and
    retries the version check once per interval, not on every request."""
    import threading
    import time

    settings = lookup.LookupSettings()
    lookup.get_index(hand_made, settings=settings)  # built and checked
    calls = []

    def unreachable(conn):
        calls.append(1)
        raise RuntimeError("database unreachable")

    monkeypatch.setattr(lookup_cache, "_version", unreachable)
    lookup.invalidate_index()  # the next HTTP lookup must check
    for _ in range(50):
        index = lookup.get_index(hand_made, max_staleness_ms=60_000, background=True,
                                 settings=settings)
        assert index.grid_codes  # the old index answers
        for t in threading.enumerate():
            if t.name == "lookup-index-refresh":
                t.join(timeout=10)
        time.sleep(0.002)
    assert len(calls) == 1


def test_cell_test_known_answers():
    """The boundary-cell test on hand-made tables: one cell centred on (0, 0) inside grid 7,
    crossed by grid 7's edges x = 1 (from y = -1 to 1) and y = 1 (from x = 1 to -1)."""
    from geo.lookup.kernel import cell_test

    e_xy = np.array([[1.0, -1.0, 1.0, 1.0], [1.0, 1.0, -1.0, 1.0]])
    # per row the side of the edge the centre lies on: the sign of the cross product
    side = np.sign([(x2 - x1) * (0 - y1) - (y2 - y1) * (0 - x1) for x1, y1, x2, y2 in e_xy])
    pts = np.array([
        (0.5, 0.2),   # same side as the centre of both edges: inside
        (1.5, 0.0),   # across x = 1: outside
        (1.0, 0.0),   # on the edge x = 1: inside (a grid holds its closed polygon)
        (1.0, 1.0),   # on the vertex: inside
        (0.0, 1.5),   # across y = 1: outside
        (2.0, 2.0),   # the segment to the centre passes through the vertex (1, 1): degenerate
    ])
    one = np.zeros(1, dtype=np.int64)
    out, degenerate = cell_test(
        pts[:, 0].copy(), pts[:, 1].copy(), np.zeros(len(pts), dtype=np.int64),
        np.zeros(1), np.zeros(1), one, np.array([2], dtype=np.int32),
        np.array([0, 1], dtype=np.int32), np.array([0, 0], dtype=np.int32),
        side.astype(np.int8), np.array([True]), one, np.array([1], dtype=np.int64),
        np.array([7], dtype=np.int32), e_xy)
    assert degenerate.tolist() == [False] * 5 + [True]
    assert out[:5].tolist() == [7, -1, 7, 7, -1]
