"""Service circles against networkx and hand-made geometry with a known answer."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import shapely
from circles_testnet import ORIGIN_M, add_station, make_lattice
from pyproj import Transformer
from shapely import wkb
from shapely.geometry import box
from sqlalchemy import text

from geo.circles.build import build_circles, circles_geojson, station_reach
from geo.circles.runs import CircleSettings, get_run
from geo.core.errors import InvalidInput

X0, Y0 = ORIGIN_M
TO_M = Transformer.from_crs(4326, 32650, always_xy=True)


def _to_m(xy):
    x, y = TO_M.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def _nx_graph(lat) -> nx.Graph:
    g = nx.Graph()
    for _, u, v, length, usable in lat.edges:
        if usable:
            g.add_edge(u, v, weight=length)
    return g


def _circle_m(conn, run_id: int, station_id: int, tier: float):
    raw = conn.execute(
        text("SELECT ST_AsBinary(geom) FROM service_circle WHERE run_id = :r "
             "AND station_id = :s AND tier_m = :t"),
        {"r": run_id, "s": station_id, "t": tier},
    ).scalar_one()
    return shapely.transform(wkb.loads(bytes(raw)), _to_m)


@pytest.mark.parametrize("search", ["scipy", "pgrouting"])
@pytest.mark.parametrize("pos", [(250.0, 300.0), (730.0, 100.0), (0.0, 0.0), (400.0, 560.0)])
def test_reach_matches_networkx(conn, pos, search):
    """Reached nodes and their distances equal networkx's Dijkstra from the snapped point."""
    lat = make_lattice(conn, nx=9, ny=9, river_between_rows=4, bridge_cols=(7,))
    x, y = X0 + pos[0], Y0 + pos[1]
    sid = add_station(conn, "S", x, y)
    reach = 420.0
    got = station_reach(conn, CircleSettings(circle_search=search), [sid], reach)[sid]

    g = _nx_graph(lat)
    # the station's edge: the usable edge nearest to the point, split at the projection
    best = None
    for _, u, v, length, usable in lat.edges:
        if not usable:
            continue
        (ax, ay), (bx, by) = lat.nodes[u], lat.nodes[v]
        t = max(0.0, min(1.0, ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / length**2))
        px, py = ax + t * (bx - ax), ay + t * (by - ay)
        d = ((px - x) ** 2 + (py - y) ** 2) ** 0.5
        if best is None or d < best[0] - 1e-6:
            best = (d, u, v, t, length)
    snap, u, v, t, length = best
    g.add_edge("s", u, weight=t * length)
    g.add_edge("s", v, weight=(1 - t) * length)
    want = nx.single_source_dijkstra_path_length(g, "s", cutoff=reach - snap)
    want = {n: d + snap for n, d in want.items() if n != "s"}
    assert set(got) == set(want)
    for n, d in want.items():
        assert got[n] == pytest.approx(d, abs=0.05)


@pytest.mark.parametrize("method", ["raster", "exact"])
def test_circle_does_not_jump_river(conn, method):
    """A 300 m circle south of a 40 m river stops at the bank; its 1,000 m circle crosses
    only at the bridge (column 7) and reaches the north bank there."""
    lat = make_lattice(conn, nx=10, ny=10, river_between_rows=4, bridge_cols=(7,))
    y1, y2 = lat.river
    sid = add_station(conn, "S", X0 + 250, Y0 + 300)
    # a band wide enough to jump the river if allowed
    s = CircleSettings(circle_buffer_m=60.0, circle_polygon_method=method)
    run = build_circles(conn, s, station_ids=[sid])
    north = box(X0 - 200, y2 + 0.5, X0 + 1200, Y0 + 1200)
    c300 = _circle_m(conn, run, sid, 300.0)
    assert c300.intersection(north).area < 1.0
    # without the cut, the band around the south bank street (y = 400 m) would reach y = 460 m
    assert c300.bounds[3] <= y1 + 0.5
    c1000 = _circle_m(conn, run, sid, 1000.0)
    across = c1000.intersection(north)
    assert across.area > 1000
    # what lies north of the river is only what the bridge leads to: near column 7 (x = 700 m),
    # north bank node (7, 5) is 650 m away, so the walk west along row 5 ends at x = 350 m and
    # its 60 m band at x = 290 m: nothing north of the river lies west of that
    assert across.intersection(box(X0 - 200, y2, X0 + 285, Y0 + 1200)).area < 1.0
    assert across.intersection(box(X0 + 360, y2, X0 + 400, Y0 + 520)).area > 100


def test_barrier_union_is_made_again_when_the_barriers_change(conn):
    """The run's barrier area is kept between runs only while the barriers are unchanged: a
    railway added (or the river moved) gives the union PostGIS makes of the new rows."""
    from geo.circles.build import BARRIER_SQL, _barrier_wkb

    make_lattice(conn, nx=4, ny=4, river_between_rows=1, bridge_cols=())
    kinds = ("river", "railway", "arterial")

    def fresh() -> bytes:
        return bytes(conn.execute(text(BARRIER_SQL), {"srid": 32650, "kinds": list(kinds)})
                     .scalar())

    before = _barrier_wkb(conn, 32650, kinds)
    assert before == fresh()
    x, y = X0 + 150, Y0 - 100
    line = ", ".join(f"{a!r} {b!r}" for a, b in zip(*TO_M.transform(
        [x, x + 1, x + 2], [y, y + 400, y + 800], direction="INVERSE"), strict=True))
    conn.execute(text("INSERT INTO barrier (kind, name, geom) VALUES ('railway', 'test rail', "
                      "ST_GeomFromEWKT(:w))"), {"w": f"SRID=4326;LINESTRING({line})"})
    after = _barrier_wkb(conn, 32650, kinds)
    assert after == fresh() and after != before
    rail = shapely.from_wkb(after).difference(shapely.from_wkb(before))
    assert 0.9 * 1600 < rail.area < 1.1 * 1600  # the new 2 m wide strip, 800 m long
    conn.execute(text("DELETE FROM barrier WHERE kind = 'railway'"))
    assert _barrier_wkb(conn, 32650, kinds) == before
    assert _barrier_wkb(conn, 32650, ("arterial",)) is None  # none of that kind


@pytest.mark.parametrize("method", ["raster", "exact"])
def test_circle_contains_reached_street_and_tiers_nest(conn, method):
    """Known answer on an open lattice: a station at a node reaches 300 m along each street."""
    make_lattice(conn, nx=13, ny=13)
    sid = add_station(conn, "S", X0 + 600, Y0 + 600)
    run = build_circles(conn, CircleSettings(circle_buffer_m=25.0, circle_polygon_method=method),
                        station_ids=[sid])
    c300 = _circle_m(conn, run, sid, 300.0)
    c500 = _circle_m(conn, run, sid, 500.0)
    from shapely.geometry import Point

    assert c300.contains(Point(X0 + 600 + 290, Y0 + 600))  # 290 m east along the street
    assert not c300.contains(Point(X0 + 600 + 340, Y0 + 600))  # 340 m: beyond 300 + 25
    # (200, 100) off-axis: network distance 300 -> in; (200, 200) is 400 -> out
    assert c300.contains(Point(X0 + 800, Y0 + 700))
    assert not c300.contains(Point(X0 + 800 - 50, Y0 + 800 - 50 + 50))  # mid-block, 400 m away
    # the exact buffers nest to rounding; the raster contour places each boundary to within
    # a cell, so the 300 m circle may stick out of the 500 m one by less than a cell
    tol = 0.5 if method == "exact" else CircleSettings().circle_raster_cell_m
    assert c500.buffer(tol).contains(c300)
    # a Euclidean 300 m disc is bigger than the network circle on a lattice
    assert c300.area < Point(0, 0).buffer(325).area


def test_runs_recorded_and_geojson(conn):
    make_lattice(conn, nx=5, ny=5)
    sid = add_station(conn, "S", X0 + 200, Y0 + 200)
    run = build_circles(conn, CircleSettings(), tiers_m=[300], station_ids=[sid])
    r = get_run(conn, run, "circles")
    assert r["status"] == "done" and r["finished_at"] >= r["started_at"]
    assert r["params"]["tiers_m"] == [300.0]
    fc = circles_geojson(conn, run)
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 1
    lon, lat = fc["features"][0]["geometry"]["coordinates"][0][0][0]
    assert 118.5 < lon < 119.5 and 25.5 < lat < 26.5  # RFC 7946 lon,lat


def test_bad_tiers_rejected(conn):
    with pytest.raises(InvalidInput):
        build_circles(conn, CircleSettings(), tiers_m=[-5])


# --- the pure geometry steps (geo.circles.geometry), against shapely's own answers ---------------


def test_substrings_match_shapely_substring():
    """Vectorised substrings of curved and straight edges equal ``shapely.ops.substring``."""
    from shapely.ops import substring

    from geo.circles.geometry import EdgeCoords

    rng = np.random.default_rng(3)
    edges = [shapely.LineString(np.cumsum(rng.uniform(-20, 40, (k, 2)), axis=0))
             for k in (2, 3, 5, 9, 2, 4)]
    ec = EdgeCoords.from_geoms(np.array(edges, dtype=object))
    edge = np.repeat(np.arange(len(edges)), 5)
    lo = rng.uniform(0, 0.6, len(edge))
    hi = np.minimum(1.0, lo + rng.uniform(0.01, 0.8, len(edge)))
    lo[::5], hi[::5] = 0.0, 1.0  # whole edges too
    xy, piece = ec.substrings(edge, lo, hi)
    got = shapely.linestrings(xy, indices=piece)
    # a whole edge's ends are its vertices bit for bit (so that chains meet and merge)
    whole = np.nonzero(hi == 1.0)[0]
    last = np.array([shapely.get_coordinates(edges[e])[-1] for e in edge[whole]])
    assert (shapely.get_coordinates(shapely.get_point(got[whole], -1)) == last).all()
    for i, g in enumerate(got):
        want = substring(edges[edge[i]], lo[i], hi[i], normalized=True)
        assert g.equals_exact(want, 1e-6), (i, g, want)


def test_merge_intervals_unites_overlaps_only_within_an_edge():
    import pandas as pd

    from geo.circles.geometry import merge_intervals

    df = pd.DataFrame({
        "station": [1, 1, 1, 1, 1, 2], "tier": [0, 0, 0, 0, 1, 0], "edge": [5, 5, 5, 5, 5, 5],
        "lo": [0.0, 0.7, 0.2, 0.5, 0.1, 0.3], "hi": [0.3, 1.0, 0.5, 0.6, 0.2, 0.4],
    })
    got = merge_intervals(df)
    assert got[["station", "tier", "edge", "lo", "hi"]].values.tolist() == [
        [1, 0, 5, 0.0, 0.6], [1, 0, 5, 0.7, 1.0], [1, 1, 5, 0.1, 0.2], [2, 0, 5, 0.3, 0.4]]


def test_seeds_are_the_pieces_sampled_every_cell():
    """The compiled pieces (``geo.circles.seeds`` via ``circle_seeds``) are the pandas
    pipeline's pieces (``circle_pieces``: edge_reach, tier_intervals, substrings, themselves
    checked against shapely's substring above), circle by circle and piece by piece, sampled
    at most a cell apart; their corners alone are the same lines."""
    import pandas as pd

    from geo.circles.geometry import EdgeCoords
    from geo.circles.pool import Network, circle_pieces, circle_seeds, station_chunks
    from geo.circles.seeds import EdgeSamples

    rng = np.random.default_rng(5)
    k = 5
    node_xy = {100 + i * k + j: (i * 80.0, j * 80.0) for i in range(k) for j in range(k)}
    lines, source, target = [], [], []
    for n, (x, y) in node_xy.items():
        for m in (n + 1, n + k):
            if m in node_xy and not (m == n + 1 and (n - 100) % k == k - 1):
                mx, my = node_xy[m]
                bend = rng.normal(0, 12, (int(rng.integers(0, 4)), 2))
                mid = np.linspace((x, y), (mx, my), len(bend) + 2)[1:-1] + bend
                lines.append(shapely.LineString(np.vstack([(x, y), mid, (mx, my)])))
                source.append(n)
                target.append(m)
    geoms = np.array(lines, dtype=object)
    coords = EdgeCoords.from_geoms(geoms)
    source, target = np.array(source), np.array(target)
    members = np.array([3, 7, 9])
    own = pd.DataFrame({"station": members, "edge": rng.integers(0, len(lines), 3),
                        "frac": rng.uniform(0, 1, 3), "snap": rng.uniform(0, 40, 3)})
    rows = [(s, n, float(rng.uniform(0, 420))) for s in members for n in node_xy
            if rng.uniform() < 0.6]
    dd = pd.DataFrame(rows, columns=["station", "node", "d"])
    tiers = np.array([120.0, 250.0, 400.0])
    net = Network(coords, source, target, shapely.length(geoms), own, tiers,
                  EdgeSamples.build(coords, source, target, 5.0))
    dd = dd.sample(frac=1.0, random_state=2)  # station_chunks groups the rows by station
    ((mem, reach),) = station_chunks(members, dd, 3)
    assert (mem == members).all()
    new, old = circle_seeds(net, members, reach), circle_pieces(net, members, reach)
    assert new.n == old.n > 0
    assert (new.station == old.station).all() and (new.tier == old.tier).all()
    assert (new.pieces == old.pieces).all() and (new.circle == old.circle).all()
    got = shapely.linestrings(new.xy, indices=new.piece)
    want = shapely.linestrings(old.xy, indices=old.piece)
    assert (shapely.hausdorff_distance(got, want) < 1e-6).all()
    assert np.allclose(shapely.length(got), shapely.length(want), atol=1e-6)
    step = np.hypot(*np.diff(new.xy, axis=0).T)[new.piece[1:] == new.piece[:-1]]
    assert step.max() <= 5.0 + 1e-9
    c = new.corner
    corners = shapely.linestrings(new.xy[c], indices=new.piece[c])
    assert (shapely.hausdorff_distance(corners, want) < 1e-6).all()
    assert (np.diff(new.start) >= 0).all() and new.start[-1] == len(new.xy)
    assert (new.circle[new.piece[new.start[:-1]]] == np.arange(new.n)).all()


def test_raster_field_is_the_distance_to_the_nearest_seed_cells_sample():
    """The compiled feature transform finds, for every cell, a seed cell as near as scipy's
    ``distance_transform_edt`` does (ties may pick another, at the same distance), and the
    field is the distance from the cell centre to that seed's sample; brute force checks the
    nearest seed cell on a sample of cells."""
    from scipy import ndimage

    from geo.circles.raster import _seed_grid, circle_field

    rng = np.random.default_rng(11)
    cell = 5.0
    for k in (1, 2, 40, 400):
        pts = rng.uniform(0, 300, (k, 2)) + [701_234.5, 2_882_345.6]
        field, gx, gy = circle_field(pts, cell, 30.0)
        i0, j0, free, sx, sy = _seed_grid(pts, cell, 8)
        fj, fi = ndimage.distance_transform_edt(free, return_distances=False,
                                                return_indices=True)
        jj, ii = np.indices(free.shape)
        want_cells = (jj - fj) ** 2 + (ii - fi) ** 2
        seeds = np.argwhere(~free)
        for j, i in rng.integers(0, free.shape, (200, 2)):
            brute = ((seeds - [j, i]) ** 2).sum(axis=1)
            assert brute.min() == want_cells[j, i]
            # the field's seed is one of the nearest seed cells; its sample is that cell's
            near = seeds[brute == brute.min()]
            nx_, ny_ = (s[near[:, 0], near[:, 1]].astype(float) for s in (sx, sy))
            d = np.hypot(gx[j, i] - (i0 * cell + nx_), gy[j, i] - (j0 * cell + ny_))
            assert np.isclose(d, field[j, i], atol=2e-3).any(), (k, j, i)
        assert np.allclose(gx[0], (i0 + np.arange(free.shape[1]) + 0.5) * cell)
        assert np.allclose(gy[:, 0], (j0 + np.arange(free.shape[0]) + 0.5) * cell)


def test_thin_rings_is_douglas_peucker_within_the_tolerance():
    """Each ring keeps a subset of its points, its first and last among them, within the
    tolerance of the original (Hausdorff, shapely) and with about as many points as GEOS's
    Douglas-Peucker keeps; collinear points go; a ring too small to simplify stays whole."""
    from geo.circles.raster import raster_polygons, thin_rings

    rng = np.random.default_rng(5)
    t = np.linspace(0, 2 * np.pi, 400)[:-1]
    blob = np.column_stack([(100 + 8 * np.sin(5 * t)) * np.cos(t),
                            (100 + 8 * np.sin(5 * t)) * np.sin(t)])
    blob += rng.normal(0, 0.2, blob.shape)
    square = np.array([[0, 0], [10, 0], [20, 0], [20, 10], [20, 20], [0, 20]], float) + 300
    tiny = np.array([[0, 0], [0.5, 0], [0.5, 0.5]]) + 500
    rings = [np.vstack([r, r[:1]]) for r in (blob, square, tiny)]
    xy = np.vstack(rings)
    off = np.cumsum([0] + [len(r) for r in rings]).astype(np.int64)
    keep = thin_rings(xy, off, 1.0)
    for r, (a, b) in zip(rings, zip(off[:-1], off[1:], strict=True), strict=True):
        k = keep[a:b]
        assert k[0] and k[-1]
        before, after = shapely.Polygon(r), shapely.Polygon(r[k])
        assert shapely.hausdorff_distance(before, after) <= 1.0 + 1e-9
        geos = shapely.get_num_coordinates(shapely.simplify(before, 1.0,
                                                            preserve_topology=False))
        assert k.sum() <= 1.1 * geos + 1 or k.all()  # the split point differs, not the rule
    # a needle running back along its own line past a kept point: the distance that counts
    # is to the segment, not to its line (40 m of needle would go)
    needle = np.array([[0, 0], [40, 0.3], [0, 0.6], [-100, 0.5], [-100, -20], [0, 0]], float)
    k = thin_rings(needle, np.array([0, len(needle)], np.int64), 1.0)
    assert k[1] and shapely.hausdorff_distance(shapely.Polygon(needle),
                                               shapely.Polygon(needle[k])) <= 1.0 + 1e-9
    assert keep[off[1]:off[2]].sum() == 5  # the square's four corners, closed
    assert keep[off[2]:off[3]].all()  # the tiny triangle is left alone
    assert 10 < keep[:off[1]].sum() < 200
    # through raster_polygons: valid, within the tolerance of the unsimplified contour
    pts = np.column_stack([np.linspace(0, 400, 81), 60 * np.sin(np.linspace(0, 6, 81))])
    start = np.array([0, len(pts)])
    raw = raster_polygons(pts, start, 5.0, 30.0)[0]
    thin = raster_polygons(pts, start, 5.0, 30.0, 1.0)[0]
    assert thin.is_valid and shapely.hausdorff_distance(raw, thin) <= 1.0 + 1e-9
    assert shapely.get_num_coordinates(thin) < shapely.get_num_coordinates(raw) / 2


def test_edge_reach_is_the_min_over_both_ends():
    import pandas as pd

    from geo.circles.geometry import edge_reach

    source, target = np.array([10, 11, 12, 10]), np.array([11, 12, 13, 13])
    dd = pd.DataFrame({"station": [7, 7, 7, 8], "node": [10, 11, 13, 12], "d": [5.0, 9.0, 2.0,
                                                                                  1.0]})
    got = {(r.station, r.edge): (r.du, r.dv) for r in edge_reach(dd, source, target).itertuples()}
    nan = float("nan")
    want = {(7, 0): (5.0, 9.0), (7, 1): (9.0, nan), (7, 2): (nan, 2.0), (7, 3): (5.0, 2.0),
            (8, 1): (nan, 1.0), (8, 2): (1.0, nan)}
    assert got.keys() == want.keys()
    for k, (du, dv) in want.items():
        assert np.allclose(got[k], (du, dv), equal_nan=True), k


def test_round_buffer_is_the_round_capped_buffer():
    """Flat band + the discs it does not cover is the round-capped buffer: nothing missing
    against a band with a disc at every end, and, against a near-exact buffer (64 segments per
    quarter), no more error than the plain ``quad_segs=2`` buffer."""
    from geo.circles.geometry import round_buffer

    rng = np.random.default_rng(0)
    nets = []
    for _ in range(30):
        segs = [shapely.LineString(rng.uniform(0, 400, (2, 2))) for _ in range(12)]
        nets.append(shapely.line_merge(shapely.union_all(segs)))
    # lattice pieces: 4-way, T and corner junctions, short arms, a partial end
    lat = [[(0, 0), (100, 0)], [(100, 0), (200, 0)], [(100, 0), (100, 100)],
           [(100, -100), (100, 0)], [(0, 0), (0, 20)], [(200, 0), (200, 45)], [(0, 20), (7, 40)]]
    nets.append(shapely.MultiLineString(lat))
    # two chains meeting at a right angle (a 270-degree gap) and a closed block
    nets.append(shapely.MultiLineString([[(0, 0), (100, 0)], [(0, 0), (0, 100)]]))
    nets.append(shapely.MultiLineString([[(0, 0), (100, 0), (100, 100), (0, 100), (0, 0)]]))
    nets = np.array(nets, dtype=object)
    got = round_buffer(nets, 30.0, 2)
    assert shapely.is_valid(got).all()
    opened = [[q for q in shapely.get_parts(n) if not q.is_closed] for n in nets]
    ends = [shapely.get_coordinates(shapely.get_point(np.array(o * 2, dtype=object),
                                                      [0] * len(o) + [-1] * len(o)))
            for o in opened]
    all_discs = shapely.union(shapely.buffer(nets, 30, quad_segs=2, cap_style="flat"),
                              shapely.buffer(np.array([shapely.multipoints(e) for e in ends]),
                                             30, quad_segs=4))
    assert (shapely.area(shapely.difference(all_discs, got)) < 1e-3).all()
    truth = shapely.buffer(nets, 30, quad_segs=64)
    plain = shapely.buffer(nets, 30, quad_segs=2)
    err = shapely.area(shapely.symmetric_difference(got, truth))
    assert (err <= shapely.area(shapely.symmetric_difference(plain, truth)) + 1e-6).all()
    assert (shapely.area(shapely.difference(got, truth)) < 0.01).all()  # never outside


def test_piece_index_near_is_dwithin_of_the_circle_lines():
    """Which polygon parts have a reached piece within 1 m, asked of the flat vertex arrays
    (first-vertex probe, then the pieces near the part's box), equals shapely's
    ``dwithin(part, MultiLineString of the circle's pieces, 1.0)``: parts holding pieces,
    parts 0.5 m and 1.5 m from one, parts of another circle's pieces only."""
    from geo.circles.geometry import PieceIndex

    rng = np.random.default_rng(1)
    xy, piece, circle = [], [], []
    p = 0
    for c in range(3):
        for _ in range(40):
            k = int(rng.integers(2, 5))
            xy.append(rng.uniform(0, 200, (1, 2)) + np.cumsum(rng.normal(0, 8, (k, 2)), axis=0))
            piece += [p] * k
            circle.append(c)
            p += 1
    pts, pc, cc = np.concatenate(xy), np.array(piece), np.array(circle)
    idx = PieceIndex(pts, pc, cc, 3)
    multi = shapely.multilinestrings(shapely.linestrings(pts, indices=pc), indices=cc)
    parts, which = [], []
    for c in range(3):
        for _ in range(60):
            x, y = rng.uniform(-20, 220, 2)
            parts.append(shapely.box(x, y, x + rng.uniform(0.5, 15), y + rng.uniform(0.5, 15)))
            which.append(c)
        (ax, ay), (bx, by) = shapely.get_coordinates(multi[c].geoms[0])[:2]
        mx, my = (ax + bx) / 2, (ay + by) / 2
        nx_, ny_ = np.array([ay - by, bx - ax]) / np.hypot(bx - ax, by - ay)
        for off in (0.5, 1.5):  # a small disc beside a piece, within 1 m or not
            parts.append(shapely.Point(mx + (0.2 + off) * nx_, my + (0.2 + off) * ny_)
                         .buffer(0.2))
            which.append(c)
        # a ring around a point of a piece: the piece crosses it, no vertex inside
        parts.append(shapely.Point(mx, my).buffer(0.2).difference(
            shapely.Point(mx, my).buffer(0.1)))
        which.append(c)
    parts, which = np.array(parts, dtype=object), np.array(which)
    got = idx.near(parts, which)
    want = shapely.dwithin(parts, multi[which], 1.0)
    assert (got == want).all()
    assert want.sum() > 10 and (~want).sum() > 10


# --- the raster polygons against the exact buffer on the real demo network (Helsinki) -----------


@pytest.fixture(scope="module")
def demo_engine(fresh_database):
    from circles_testnet import demo_database

    from geo.core.db import make_engine

    eng = make_engine(demo_database(fresh_database))
    yield eng
    eng.dispose()


def test_raster_circles_match_exact_buffer_on_real_network(demo_engine):
    """On the demo's real walk network (railways and arterials as barriers), every raster
    circle of a sample of stations has IoU >= 0.95 with the exact buffer of the same reached
    pieces, and building verdicts (circle by circle) agree for >= 99.5 %; each disagreement
    lies within one cell of the exact circle's boundary."""
    s = CircleSettings()
    with demo_engine.connect() as conn:
        tx = conn.begin()
        ids = [r[0] for r in conn.execute(text("SELECT id FROM station ORDER BY id"))][::9]
        runs = {m: build_circles(conn, CircleSettings(circle_polygon_method=m), station_ids=ids)
                for m in ("raster", "exact")}
        polys = {}
        for m, run in runs.items():
            for sid, tier, raw in conn.execute(text(
                    "SELECT station_id, tier_m, ST_AsBinary(ST_Transform(geom, :srid))"
                    " FROM service_circle WHERE run_id = :r"),
                    {"r": run, "srid": 32635}):
                polys[(m, sid, tier)] = wkb.loads(bytes(raw))
        pts = conn.execute(text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Transform(location, "
                                "32635) AS p FROM building) b")).all()
        tx.rollback()
    keys = sorted({(sid, t) for m, sid, t in polys if m == "exact"})
    assert len(keys) == 3 * len(ids) and {(sid, t) for m, sid, t in polys if m == "raster"} \
        == set(keys)
    xy = np.array(pts, float)
    points = shapely.points(xy)
    agree = total = 0
    for key in keys:
        r, e = polys[("raster",) + key], polys[("exact",) + key]
        assert r.is_valid
        iou = r.intersection(e).area / r.union(e).area
        assert iou >= 0.95, (key, iou)
        vr, ve = (shapely.contains_xy(g, xy[:, 0], xy[:, 1]) for g in (r, e))
        agree += int((vr == ve).sum())
        total += len(points)
        off = points[vr != ve]
        if len(off):
            assert (shapely.distance(off, e.boundary) <= s.circle_raster_cell_m).all(), key
    assert agree / total >= 0.995, agree / total


def test_scipy_search_equals_pgrouting_on_real_network(demo_engine):
    """The in-memory search reaches the same nodes at the same distances as pgRouting's
    ``pgr_withPointsDD`` from the same snapped stations on the real network."""
    with demo_engine.connect() as conn:
        tx = conn.begin()
        ids = [r[0] for r in conn.execute(text("SELECT id FROM station ORDER BY id"))][::7]
        got = {m: station_reach(conn, CircleSettings(circle_search=m), ids, 1000.0)
               for m in ("scipy", "pgrouting")}
        tx.rollback()
    assert set(got["scipy"]) == set(got["pgrouting"]) == set(ids)
    for sid in ids:
        a, b = got["scipy"][sid], got["pgrouting"][sid]
        common = set(a) & set(b)
        # a node exactly at the limit may fall either side of it by rounding
        assert all(abs(a[n] - 1000) < 0.01 for n in set(a) ^ set(b) if n in a)
        assert all(abs(b[n] - 1000) < 0.01 for n in set(a) ^ set(b) if n in b)
        assert len(common) > 100
        assert max(abs(a[n] - b[n]) for n in common) < 0.01
