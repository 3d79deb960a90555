"""A city of several districts in one service (issue 16): per-district imports and generations,
``at=`` per district, one lookup across districts checked against PostGIS ``ST_Contains``."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import shapely
from sqlalchemy import text

from geo.core.db import make_engine
from geo.core.errors import OutsideDistrict
from geo.data.districts import row_districts
from geo.data.store import write_layers
from geo.lookup import CityIndex, get_index, invalidate_index, locate_batch, locate_point
from geo.lookup.index import NO_GRID, OK, OUTSIDE
from geo.samples.city import generate_districts

GRIDS, BUILDINGS, STATIONS, SEED = 700, 1400, 30, 3


@pytest.fixture(scope="module")
def city_layers():
    return generate_districts(districts=3, grids=GRIDS, buildings=BUILDINGS, stations=STATIONS,
                              seed=SEED)


def one_district(layers, code: str, *, parents: bool = True):
    """The layers of district ``code`` only (areas by code, other rows by place)."""
    polys = dict(zip(layers["district"]["code"], layers["district"].geometry, strict=True))
    out = {}
    for name, gdf in layers.items():
        if name in ("city", "province"):
            if parents:
                out[name] = gdf
            continue
        if name in ("district", "street", "community", "grid"):
            keep = gdf["code"].astype(str).str.startswith(code)
        elif name == "grid_team":
            keep = gdf["grid_code"].astype(str).str.startswith(code)
        else:
            keep = row_districts(name, gdf, polys) == code
        out[name] = gdf[np.asarray(keep, dtype=bool)].reset_index(drop=True)
    return out


def _snapshot(conn, district: str) -> dict[str, object]:
    """Every row of ``district`` that an import of another district must leave alone."""
    def rows(sql: str) -> list[tuple]:
        return [tuple(r) for r in conn.execute(text(sql), {"d": district}).all()]
    return {
        "area": rows("SELECT id, code, generation_low, generation_high, md5(ST_AsEWKB(geom)::text)"
                     " FROM area WHERE left(code, 6) = :d ORDER BY id"),
        "building": rows("SELECT id, code FROM building WHERE district_code = :d ORDER BY id"),
        "station": rows("SELECT id, code FROM station WHERE district_code = :d ORDER BY id"),
        "walk_edge": rows("SELECT id, source, target FROM walk_edge WHERE district_code = :d "
                          "ORDER BY id"),
        "team": rows("SELECT id FROM grid_team_member WHERE left(grid_code, 6) = :d ORDER BY id"),
    }


@pytest.fixture(scope="module")
def two_imports(fresh_database, city_layers):
    """Districts 350102 and 350103 imported separately (350104 never)."""
    eng = make_engine(fresh_database())
    a = one_district(city_layers, "350102")
    b = one_district(city_layers, "350103", parents=False)
    with eng.begin() as conn:
        ga = write_layers(conn, a, effective_from="2026-01-01T00:00:00+08:00")
    with eng.begin() as conn:
        gb = write_layers(conn, b, effective_from="2026-02-01T00:00:00+08:00")
    yield eng, a, b, ga, gb
    eng.dispose()


def _inside(gdf, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points inside the polygons of ``gdf`` (representative points, jittered inward)."""
    pts = shapely.point_on_surface(np.asarray(gdf.geometry.values))[:n]
    return shapely.get_x(pts), shapely.get_y(pts)


def test_two_districts_imported_separately_both_answer(two_imports):
    eng, a, b, _, gb = two_imports
    invalidate_index(keep_previous=False)
    for layers in (a, b):
        lon, lat = _inside(layers["grid"], 50, 0)
        res = locate_batch(eng, lon, lat)
        assert (res["status"] == OK).all()
        assert list(res["grid_code"]) == list(layers["grid"]["code"][:50])
    assert isinstance(get_index(eng), CityIndex)
    with eng.connect() as conn:
        # the generation records the district it changed; both districts stay current
        assert conn.execute(text("SELECT districts FROM generation WHERE id = :g"),
                            {"g": gb}).scalar() == ["350103"]
        current = dict(conn.execute(text(
            "SELECT left(code, 6), count(*) FROM area_current WHERE level = 'grid' "
            "GROUP BY 1")).all())
    assert current == {"350102": len(a["grid"]), "350103": len(b["grid"])}


def test_reimport_leaves_the_other_district_unchanged(two_imports):
    eng, a, b, *_ = two_imports
    with eng.connect() as conn:
        before_b = _snapshot(conn, "350103")
        before_a_buildings = conn.execute(text(
            "SELECT count(*) FROM building WHERE district_code = '350102'")).scalar()
    assert all(before_b.values()), "district 350103 has rows of every kind"
    with eng.begin() as conn:
        gen = write_layers(conn, one_district(a, "350102", parents=False),
                           effective_from="2026-06-01T00:00:00+08:00")
    with eng.connect() as conn:
        assert _snapshot(conn, "350103") == before_b
        assert conn.execute(text(
            "SELECT count(*) FROM building WHERE district_code = '350102'")).scalar() \
            == before_a_buildings
        assert conn.execute(text(
            "SELECT count(*) FROM area_current WHERE left(code, 6) = '350102' "
            "AND generation_low = :g"), {"g": gen}).scalar() == sum(
                len(a[lv]) for lv in ("district", "street", "community", "grid"))
        # the walking network is still one connected network across the border
        edges = conn.execute(text("SELECT source, target FROM walk_edge")).all()
    g = nx.Graph()
    g.add_edges_from(edges)
    assert nx.number_connected_components(g) == 1


def test_buildings_only_file_replaces_buildings_of_its_district_only(two_imports):
    """A file without area layers covers the districts its rows fall in (by their grid
    codes / places)."""
    eng, a, b, *_ = two_imports
    fewer = b["building"].iloc[:-1].reset_index(drop=True)
    with eng.connect() as conn:
        before = dict(conn.execute(text(
            "SELECT district_code, count(*) FROM building GROUP BY 1")).all())
    with eng.begin() as conn:
        gen = write_layers(conn, {"building": fewer})
    with eng.connect() as conn:
        after = dict(conn.execute(text(
            "SELECT district_code, count(*) FROM building GROUP BY 1")).all())
        assert conn.execute(text("SELECT districts FROM generation WHERE id = :g"),
                            {"g": gen}).scalar() == ["350103"]
    assert after == {**before, "350103": len(fewer)}
    assert before["350103"] == len(fewer) + 1


def test_at_answers_per_district(fresh_database, city_layers):
    eng = make_engine(fresh_database())
    a = one_district(city_layers, "350102")
    b = one_district(city_layers, "350103", parents=False)
    a2 = one_district(city_layers, "350102", parents=False)
    a2["grid"] = a2["grid"].copy()
    a2["grid"]["name"] = a2["grid"]["name"] + "（新）"
    try:
        for layers, day in ((a, "2026-01-01"), (b, "2026-02-01"), (a2, "2026-06-01")):
            with eng.begin() as conn:
                write_layers(conn, layers, effective_from=f"{day}T00:00:00+08:00")
        pa = shapely.point_on_surface(a["grid"].geometry.values[0])
        pb = shapely.point_on_surface(b["grid"].geometry.values[0])
        name_a, name_b = a["grid"]["name"][0], b["grid"]["name"][0]
        # before B existed: A answers with its first name, B's point lies outside
        assert locate_point(eng, pa.x, pa.y, at="2026-01-15").grid["name"] == name_a
        with pytest.raises(OutsideDistrict):
            locate_point(eng, pb.x, pb.y, at="2026-01-15")
        # between B's import and A's change: both, A still with its old name
        assert locate_point(eng, pa.x, pa.y, at="2026-03-01").grid["name"] == name_a
        assert locate_point(eng, pb.x, pb.y, at="2026-03-01").grid["name"] == name_b
        # after A's change: A's new name, B unchanged
        assert locate_point(eng, pa.x, pa.y, at="2026-07-01").grid["name"] == name_a + "（新）"
        assert locate_point(eng, pb.x, pb.y, at="2026-07-01").grid["name"] == name_b
        assert locate_point(eng, pb.x, pb.y).grid["name"] == name_b
    finally:
        eng.dispose()


@pytest.fixture(scope="module")
def city_db(fresh_database, city_layers):
    eng = make_engine(fresh_database())
    with eng.begin() as conn:
        write_layers(conn, city_layers, kind="synth")
    yield eng
    eng.dispose()


def test_city_lookup_agrees_with_postgis_on_100000_points(city_db):
    eng = city_db
    rng = np.random.default_rng(16)
    minx, miny, maxx, maxy = shapely.total_bounds(city_db_districts(eng))
    pad_x, pad_y = (maxx - minx) * 0.05, (maxy - miny) * 0.05
    n = 100_000
    lon = rng.uniform(minx - pad_x, maxx + pad_x, n)
    lat = rng.uniform(miny - pad_y, maxy + pad_y, n)
    invalidate_index(keep_previous=False)
    res = locate_batch(eng, lon, lat)
    assert isinstance(res["index"], CityIndex)
    expected = _postgis_holder(eng, lon, lat, "ST_Contains")
    got = res["grid_code"]
    assert (expected != None).sum() > n * 0.5  # noqa: E711  (most in a grid, some beyond)
    assert (got == expected).all(), np.flatnonzero(got != expected)[:10]
    # a point in no grid: no_grid inside a district (shapely on the stored districts), else
    # outside_district
    miss = np.flatnonzero(expected == None)  # noqa: E711
    in_district = shapely.contains_xy(shapely.union_all(city_db_districts(eng)),
                                      lon[miss], lat[miss])
    assert (res["status"][miss] == np.where(in_district, NO_GRID, OUTSIDE)).all()
    assert (~in_district).any()  # the synthetic grids tile their districts: no no_grid here
    # every district answers some points
    assert {c[:6] for c in got[got != None]} == {"350102", "350103", "350104"}  # noqa: E711


def _postgis_holder(eng, lon: np.ndarray, lat: np.ndarray, predicate: str) -> np.ndarray:
    """The smallest code of the current grids holding each point by PostGIS ``predicate``."""
    with eng.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE pts (i int, geom geometry(Point, 4326)) "
                          "ON COMMIT DROP"))
        conn.execute(text(
            "INSERT INTO pts SELECT i - 1, ST_SetSRID(ST_MakePoint(x, y), 4326) "
            "FROM unnest(CAST(:x AS float8[]), CAST(:y AS float8[])) "
            "WITH ORDINALITY AS t(x, y, i)"),
            {"x": lon.tolist(), "y": lat.tolist()})
        rows = conn.execute(text(
            f"SELECT p.i, min(a.code) FROM pts p JOIN area_current a ON a.level = 'grid' "
            f"AND {predicate}(a.geom, p.geom) GROUP BY p.i")).all()
    expected = np.full(lon.size, None, dtype=object)
    for i, code in rows:
        expected[i] = code
    return expected


def test_city_lookup_on_vertices_and_edges_agrees_with_postgis(city_db):
    """Points on the stored grids' vertices (exactly on their boundary), on their edges and
    just beside them, across the 3-district city: the grid holding each (closed polygon,
    smallest code) equals PostGIS ``ST_Intersects``; points beside an edge agree with
    ``ST_Contains`` (they are off every boundary)."""
    eng = city_db
    with eng.connect() as conn:
        grids = shapely.from_wkb([bytes(w) for w in conn.execute(text(
            "SELECT ST_AsBinary(geom) FROM area_current WHERE level = 'grid'")).scalars()])
    rng = np.random.default_rng(61)
    xy, ring = shapely.get_coordinates(shapely.boundary(grids), return_index=True)
    same = np.flatnonzero(ring[1:] == ring[:-1])
    seg = same[rng.choice(same.size, 4_000)]
    a, b = xy[seg], xy[seg + 1]
    vertices = a
    t = rng.uniform(0.05, 0.95, (seg.size, 1))
    on_edge = a + t * (b - a)
    normal = np.column_stack((a[:, 1] - b[:, 1], b[:, 0] - a[:, 0]))
    normal /= np.hypot(normal[:, 0], normal[:, 1])[:, None]
    beside = on_edge + normal * rng.choice((-1e-7, 1e-7), (seg.size, 1))  # ~1 cm off
    invalidate_index(keep_previous=False)
    for pts, predicate in ((vertices, "ST_Intersects"), (on_edge, "ST_Intersects"),
                           (beside, "ST_Contains")):
        got = locate_batch(eng, pts[:, 0], pts[:, 1])["grid_code"]
        want = _postgis_holder(eng, pts[:, 0], pts[:, 1], predicate)
        assert (want != None).mean() > 0.9  # noqa: E711
        assert (got == want).all(), (predicate, np.flatnonzero(got != want)[:10])


def city_db_districts(eng) -> np.ndarray:
    with eng.connect() as conn:
        wkb = conn.execute(text(
            "SELECT ST_AsBinary(geom) FROM area_current WHERE level = 'district'")).scalars()
        return shapely.from_wkb([bytes(w) for w in wkb])


def test_city_and_province_are_areas_and_lookups_name_them(city_db, city_layers):
    eng = city_db
    with eng.connect() as conn:
        rows = {r.code: r for r in conn.execute(text(
            "SELECT code, level, name, ST_AsBinary(geom) AS wkb FROM area_current "
            "WHERE level IN ('city', 'province')")).all()}
    assert {c: r.level for c, r in rows.items()} == {"3501": "city", "35": "province"}
    union = shapely.union_all(np.asarray(city_layers["district"].geometry.values))
    city = shapely.from_wkb(bytes(rows["3501"].wkb))
    assert shapely.area(shapely.symmetric_difference(city, union)) < 1e-12
    p = shapely.point_on_surface(city_layers["grid"].geometry.values[-1])
    found = locate_point(eng, p.x, p.y).as_dict()
    assert [a["type"] for a in found["areas"]] == [
        "province", "city", "district", "street", "community", "grid"]
    assert found["city"]["name"] == "合成1市"
    assert found["district"]["code"] == found["grid"]["code"][:6]


def test_point_on_a_district_border_goes_to_the_smaller_code(city_db, city_layers):
    d = city_layers["district"]
    shared = shapely.intersection(d.geometry.values[0], d.geometry.values[1])
    xy = shapely.get_coordinates(shared)
    x, y = xy[len(xy) // 2]  # a vertex of both districts' boundaries
    assert all(shapely.intersects_xy(g, x, y) for g in d.geometry.values[:2])
    with city_db.connect() as conn:
        holders = conn.execute(text(
            "SELECT code FROM area_current WHERE level = 'grid' AND "
            "ST_Intersects(geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326)) ORDER BY code"),
            {"x": float(x), "y": float(y)}).scalars().all()
    assert {c[:6] for c in holders} == {"350102", "350103"}
    res = locate_batch(city_db, np.array([x]), np.array([y]))
    assert res["status"][0] == OK
    assert res["grid_code"][0] == holders[0]
    assert locate_point(city_db, x, y).grid["code"] == holders[0]


def test_synth_districts_deterministic_and_tiled(city_layers):
    again = generate_districts(districts=3, grids=GRIDS, buildings=BUILDINGS, stations=STATIONS,
                               seed=SEED)
    for name in ("grid", "building", "walk_edge"):
        assert again[name].equals(city_layers[name])
    d = np.asarray(city_layers["district"].geometry.values)
    grids = city_layers["grid"]
    for k, code in enumerate(city_layers["district"]["code"]):
        mine = shapely.union_all(grids.geometry.values[grids["code"].str.startswith(code)])
        assert shapely.area(shapely.symmetric_difference(mine, d[k])) < 1e-12
    # neighbours share a border (a line, not a point)
    assert shapely.length(shapely.intersection(d[0], d[1])) > 0


def test_cli_synth_districts_writes_a_city(tmp_path):
    import pyogrio
    from typer.testing import CliRunner

    from cli.main import app

    out = tmp_path / "city.gpkg"
    r = CliRunner().invoke(app, ["synth", "--districts", "3", "--grids", "400", "--buildings",
                                 "400", "--stations", "5", "--no-db", "--out", str(out)])
    assert r.exit_code == 0, r.output
    districts = pyogrio.read_dataframe(out, layer="district")
    grids = pyogrio.read_dataframe(out, layer="grid")
    assert sorted(districts["code"]) == ["350102", "350103", "350104"]
    assert {c[:6] for c in grids["code"]} == set(districts["code"])
    assert len(grids) == 400


def test_one_file_of_two_districts_imports_both_in_one_generation(fresh_database, tmp_path):
    """The real import path (read, validate, write) of a GeoPackage holding two districts, a
    city and a province without geometry."""
    from cli.synth import write_gpkg
    from geo.data.io import import_file

    layers = generate_districts(districts=2, grids=300, buildings=300, stations=3, seed=1)
    path = tmp_path / "city.gpkg"
    write_gpkg(layers, path)
    eng = make_engine(fresh_database())
    try:
        with eng.begin() as conn:
            gen = import_file(conn, path)
        with eng.connect() as conn:
            assert conn.execute(text("SELECT districts FROM generation WHERE id = :g"),
                                {"g": gen}).scalar() == ["350102", "350103"]
            grids = dict(conn.execute(text(
                "SELECT left(code, 6), count(*) FROM area_current WHERE level = 'grid' "
                "GROUP BY 1")).all())
            levels = dict(conn.execute(text(
                "SELECT level, count(*) FROM area_current WHERE generation_low = :g "
                "GROUP BY 1"), {"g": gen}).all())
        want = layers["grid"]["code"].str[:6].value_counts().to_dict()
        assert grids == want
        assert levels["city"] == 1 and levels["province"] == 1 and levels["district"] == 2
    finally:
        eng.dispose()


def test_http_lookups_across_districts(city_db, city_layers):
    import orjson
    from fastapi.testclient import TestClient

    from api.main import create_app

    grids = city_layers["grid"]
    picks = [grids[grids["code"].str.startswith(d)].iloc[0] for d in ("350102", "350104")]
    pts = [shapely.point_on_surface(g.geometry) for g in picks]
    with TestClient(create_app(engine=city_db)) as client:
        r = client.get("/v1/lookup", params={"lon": pts[1].x, "lat": pts[1].y})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [a["type"] for a in body["areas"]] == [
            "province", "city", "district", "street", "community", "grid"]
        assert (body["city"]["code"], body["district"]["code"], body["grid"]["code"]) == (
            "3501", "350104", picks[1]["code"])
        r = client.post("/v1/lookup/batch", content=orjson.dumps([[p.x, p.y] for p in pts]),
                        headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        res = r.json()["results"]
    assert [(e["status"], e["grid"], e["district"]) for e in res] == [
        ("ok", g["code"], g["code"][:6]) for g in picks]


def test_city_index_no_grid_outside_and_swapped(city_layers):
    """In-process index over the 3 districts with one grid left out: a point in its hole is
    no_grid, a point beyond the districts outside_district, lat/lon swapped swapped."""
    from bench.city import _rows
    from geo.lookup.city import make_index
    from geo.lookup.index import SWAPPED
    from geo.lookup.settings import LookupSettings

    rows = _rows(city_layers)
    hole = city_layers["grid"]["code"].iloc[50]
    index = make_index([r for r in rows if r.code != hole], {}, generation=None, version=None,
                       settings=LookupSettings())
    assert isinstance(index, CityIndex)
    p = shapely.point_on_surface(city_layers["grid"].geometry.values[50])
    minx, miny, maxx, maxy = shapely.total_bounds(city_layers["district"].geometry.values)
    lon = np.array([p.x, maxx + 0.01, p.y])
    lat = np.array([p.y, maxy + 0.01, p.x])
    gi, status = index.classify(lon, lat)
    assert list(status) == [1, OUTSIDE, SWAPPED] and (gi == -1).all()
    assert status[0] == NO_GRID
