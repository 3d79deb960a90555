"""OGC API Features and Tiles over HTTP (TestClient), access enforcement on.

A synthetic city of 24 grids (two communities of street 001) with a few incidents; every
expectation is computed independently (shapely, pyproj, SQL on the stored rows, GDAL's MVT
reader), never taken from the code under test. Part 4 edits run on a private copy each.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import morecantile
import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from pyproj import Geod, Transformer
from shapely.geometry import box, mapping, shape
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.main import create_app
from geo.auth.service import AuthSettings, create_api_key, create_user
from geo.core.db import make_engine
from geo.data.store import write_layers
from geo.incidents import IncidentSettings, report, transition
from geo.ogc.collections import COLLECTIONS
from geo.planning import PlanningSettings
from geo.samples.synth import generate_city

AUTH = AuthSettings(jwt_secret="ogc-test-" + "x" * 32, enforce_access=True)
STREET = "350104001"
C1 = STREET + "001"
UTM = 32650
EPSG = "http://www.opengis.net/def/crs/EPSG/0/"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def city(fresh_database):
    url = fresh_database()
    eng = make_engine(url)
    with eng.begin() as c:
        write_layers(c, generate_city(grids=24, buildings=24 * 30, stations=4, seed=5,
                                      team=False), kind="synth")
        users = {}
        for name, role, area in (("planner_in", "planner", STREET),
                                 ("planner_out", "planner", "350104002"),
                                 ("commander", "commander", "350104"),
                                 ("resident", "resident", None),
                                 ("resident2", "resident", None),
                                 ("admin", "admin", None)):
            create_user(c, name, f"{name}-password", role, area_code=area, settings=AUTH)
            users[name] = c.execute(text("SELECT id FROM app_user WHERE username = :u"),
                                    {"u": name}).scalar()
        cat = c.execute(text("SELECT code FROM incident_category ORDER BY code LIMIT 1")).scalar()
        pts = c.execute(text("SELECT ST_X(location), ST_Y(location) FROM building "
                             "ORDER BY code LIMIT 6")).all()
        settings = IncidentSettings()
        for i, (x, y) in enumerate(pts):
            report(c, category=cat, lon=x + 1e-4 * i, lat=y, settings=settings,
                   description=f"私人描述 {i}", reporter_name="张三",
                   reporter_contact="13800138000",
                   reporter_user_id=users["resident"] if i < 2 else users["resident2"])
        key_role = create_api_key(c, "qgis-desk", scopes=("ogc",))
        c.execute(text("UPDATE api_key SET role = 'commander', area_code = '350104' "
                       "WHERE name = 'qgis-desk'"))
        key_plain = create_api_key(c, "lookup-only", scopes=("lookup",))
    eng.dispose()  # a template: copies are made of it, so nobody stays connected
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    read_url = _copy(admin, url)
    read_eng = make_engine(read_url)
    yield url, read_eng, admin, {"role": key_role, "plain": key_plain}
    read_eng.dispose()
    _drop(admin, read_url)
    admin.dispose()


def _copy(admin, url: str) -> str:
    name = f"wangge_ogc_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(url).database}"'))
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _drop(admin, url: str) -> None:
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def client(city):
    app = create_app(engine=city[1], auth_settings=AUTH)
    with TestClient(app, raise_server_exceptions=False) as tc:
        yield tc


def who(name: str) -> dict[str, str]:
    return basic(name, f"{name}-password")


def rows(eng, sql: str, **params):
    with eng.connect() as c:
        return c.execute(text(sql), params).all()


# ------------------------------------------------------------------ Part 1


def test_landing_conformance_and_every_collection(client) -> None:
    landing = client.get("/ogc").json()
    rels = {link["rel"] for link in landing["links"]}
    assert {"service-desc", "conformance", "data"} <= rels
    conf = client.get("/ogc/conformance").json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs" in conf
    api = client.get("/ogc/api")
    assert api.headers["content-type"].startswith("application/vnd.oai.openapi+json")
    assert api.json()["openapi"].startswith("3.0")
    assert client.get("/ogc/collections").status_code == 401  # reading needs credentials
    listed = client.get("/ogc/collections", headers=who("commander")).json()["collections"]
    assert [c["id"] for c in listed] == list(COLLECTIONS)
    grids = next(c for c in listed if c["id"] == "grids")
    assert EPSG + "4490" in grids["crs"] and EPSG + str(UTM) in grids["crs"]


def test_paging_reads_everything_and_refuses_a_large_limit(client, city) -> None:
    eng = city[1]
    expected = {r[0] for r in rows(eng, "SELECT code FROM building")}
    seen: list[str] = []
    url = "/ogc/collections/buildings/items?limit=100"
    pages = 0
    while url:
        body = client.get(url, headers=who("commander")).json()
        assert body["numberMatched"] == len(expected)
        assert body["numberReturned"] == len(body["features"]) <= 100
        seen += [f["id"] for f in body["features"]]
        url = next((lk["href"] for lk in body["links"] if lk["rel"] == "next"), None)
        pages += 1
    assert pages == -(-len(expected) // 100) and len(seen) == len(set(seen))
    assert set(seen) == expected
    r = client.get("/ogc/collections/buildings/items?limit=10001", headers=who("commander"))
    assert r.status_code == 400 and r.json()["problems"][0]["field"] == "limit"
    r = client.get("/v1/layers/walk_edge?limit=100001", headers=who("commander"))
    assert r.status_code == 400
    layer = client.get("/v1/layers/walk_edge?limit=50", headers=who("commander")).json()
    total = rows(eng, "SELECT count(*) FROM walk_edge")[0][0]
    assert layer["total"] == total and len(layer["features"]) == min(50, total)
    assert any(lk["rel"] == "next" for lk in layer["links"]) == (total > 50)


def test_one_item_and_missing_item(client, city) -> None:
    code = rows(city[1], "SELECT min(code) FROM area_current WHERE level = 'grid'")[0][0]
    r = client.get(f"/ogc/collections/grids/items/{code}", headers=who("commander"))
    assert r.status_code == 200 and r.json()["id"] == code
    assert r.headers["content-type"].startswith("application/geo+json")
    assert client.get("/ogc/collections/grids/items/nope", headers=who("commander")) \
        .status_code == 404
    assert client.get("/ogc/collections/nope/items", headers=who("commander")).status_code == 404


# ------------------------------------------------------------------ Part 2


def _stored(eng, code: str) -> shapely.Geometry:
    wkb = rows(eng, "SELECT ST_AsBinary(geom) FROM area_current WHERE code = :c", c=code)[0][0]
    return shapely.from_wkb(bytes(wkb))


@pytest.mark.parametrize("srid", [4490, UTM, 4326])
def test_crs_answers_match_pyproj_within_a_millimetre(client, city, srid) -> None:
    eng = city[1]
    code = rows(eng, "SELECT max(code) FROM area_current WHERE level = 'grid'")[0][0]
    r = client.get(f"/ogc/collections/grids/items/{code}", params={"crs": EPSG + str(srid)},
                   headers=who("commander"))
    assert r.status_code == 200 and r.headers["content-crs"] == f"<{EPSG}{srid}>"
    got = np.asarray(shapely.get_coordinates(shape(r.json()["geometry"])))
    stored = shapely.get_coordinates(_stored(eng, code))
    x, y = Transformer.from_crs(4326, srid, always_xy=True).transform(stored[:, 0], stored[:, 1])
    if srid == UTM:
        err_m = np.hypot(got[:, 0] - x, got[:, 1] - y)
    else:  # EPSG:4326 and 4490 answer lat,lon: axis 0 is the latitude
        lat0 = np.radians(stored[:, 1])
        err_m = np.hypot((got[:, 0] - y) * 111_320.0,
                         (got[:, 1] - x) * 111_320.0 * np.cos(lat0))
    assert err_m.max() < 0.001


def test_bbox_in_other_crs_selects_like_shapely(client, city) -> None:
    eng = city[1]
    pts = {r[0]: (r[1], r[2]) for r in rows(
        eng, "SELECT code, ST_X(location), ST_Y(location) FROM building")}
    xs = np.array([p[0] for p in pts.values()])
    ys = np.array([p[1] for p in pts.values()])
    lon0, lon1 = np.quantile(xs, [0.2, 0.6])
    lat0, lat1 = np.quantile(ys, [0.3, 0.7])
    want = {c for c, (x, y) in pts.items() if lon0 <= x <= lon1 and lat0 <= y <= lat1}
    r = client.get("/ogc/collections/buildings/items", headers=who("commander"), params={
        "bbox": f"{lat0},{lon0},{lat1},{lon1}", "bbox-crs": EPSG + "4326", "limit": 1000})
    assert {f["id"] for f in r.json()["features"]} == want
    # the same box in UTM: a box there is a slightly different quadrilateral in degrees
    to_utm = Transformer.from_crs(4326, UTM, always_xy=True)
    ux, uy = to_utm.transform([lon0, lon1], [lat0, lat1])
    back = Transformer.from_crs(UTM, 4326, always_xy=True)
    quad = shapely.transform(box(ux[0], uy[0], ux[1], uy[1]).segmentize(1.0),
                             lambda a: np.column_stack(back.transform(a[:, 0], a[:, 1])))
    want_utm = {c for c, p in pts.items() if quad.intersects(shapely.Point(p))}
    r = client.get("/ogc/collections/buildings/items", headers=who("commander"), params={
        "bbox": f"{ux[0]},{uy[0]},{ux[1]},{uy[1]}", "bbox-crs": EPSG + str(UTM), "limit": 1000})
    assert {f["id"] for f in r.json()["features"]} == want_utm
    bad = client.get("/ogc/collections/buildings/items", headers=who("commander"),
                     params={"crs": EPSG + "3857"})
    assert bad.status_code == 400 and bad.json()["problems"][0]["field"] == "crs"


# ------------------------------------------------------------------ Part 3


def test_cql2_text_and_json_agree_with_sql_on_the_rows(client, city) -> None:
    eng = city[1]
    data = rows(eng, "SELECT code, households, grid_code FROM building")
    cut = int(np.median([r[1] for r in data]))
    grid = sorted({r[2] for r in data})[3]
    want = {r[0] for r in data if r[1] > cut and r[2] == grid}
    assert want
    text_f = f"households > {cut} AND grid_code = '{grid}'"
    json_f = {"op": "and", "args": [{"op": ">", "args": [{"property": "households"}, cut]},
                                    {"op": "=", "args": [{"property": "grid_code"}, grid]}]}
    for params in ({"filter": text_f}, {"filter": json.dumps(json_f), "filter-lang": "cql2-json"}):
        r = client.get("/ogc/collections/buildings/items", headers=who("commander"),
                       params={**params, "limit": 1000})
        assert r.status_code == 200, r.text
        assert {f["id"] for f in r.json()["features"]} == want
    # a spatial filter: S_INTERSECTS with a polygon, against shapely
    g = _stored(eng, grid)
    want_sp = {c for c, x, y in rows(eng, "SELECT code, ST_X(location), ST_Y(location) "
                                          "FROM building") if g.intersects(shapely.Point(x, y))}
    r = client.get("/ogc/collections/buildings/items", headers=who("commander"), params={
        "filter": f"S_INTERSECTS(geometry, {g.wkt})", "limit": 1000})
    assert {f["id"] for f in r.json()["features"]} == want_sp
    # values are bound, never spliced: a quote is just a character
    sneaky = {"op": "=", "args": [{"property": "name"}, "x' OR '1'='1"]}
    r = client.get("/ogc/collections/grids/items", headers=who("commander"),
                   params={"filter": json.dumps(sneaky), "filter-lang": "cql2-json"})
    assert r.status_code == 200 and r.json()["numberMatched"] == 0
    for bad in ("nope > 1", "households >", "geometry = 3"):
        r = client.get("/ogc/collections/buildings/items", headers=who("commander"),
                       params={"filter": bad})
        assert r.status_code == 400 and r.json()["problems"][0]["field"] == "filter", bad
    q = client.get("/ogc/collections/buildings/queryables", headers=who("commander")).json()
    assert set(q["properties"]) == {"geometry", *COLLECTIONS["buildings"].properties}


def _ids(client, collection: str, params: dict) -> set:
    r = client.get(f"/ogc/collections/{collection}/items", headers=who("commander"),
                   params={**params, "limit": 10000})
    assert r.status_code == 200, (params, r.text)
    assert r.json()["numberMatched"] == r.json()["numberReturned"]
    return {f["id"] for f in r.json()["features"]}


def test_cql2_spatial_operators_agree_with_shapely(client, city) -> None:
    """Every CQL2 spatial operator, in text and in JSON, selects the grids shapely selects
    from the stored geometries (the literals are shapely's WKT / GeoJSON of them)."""
    eng = city[1]
    grids = {c: shapely.from_wkb(bytes(w)) for c, w in rows(
        eng, "SELECT code, ST_AsBinary(geom) FROM area_current WHERE level = 'grid'")}
    x0, y0, x1, y1 = shapely.bounds(shapely.union_all(list(grids.values())))
    part = box(x0, y0, x0 + (x1 - x0) * 0.55, y0 + (y1 - y0) * 0.45)
    line = shapely.LineString([(x0 - 0.01, y0 + (y1 - y0) * 0.37),
                               (x1 + 0.01, y0 + (y1 - y0) * 0.61)])
    one = sorted(grids)[5]
    inside = grids[one].representative_point()
    cases = [("S_INTERSECTS", part, lambda g: g.intersects(part)),
             ("S_WITHIN", part, lambda g: g.within(part)),
             ("S_DISJOINT", part, lambda g: g.disjoint(part)),
             ("S_OVERLAPS", part, lambda g: g.overlaps(part)),
             ("S_CONTAINS", inside, lambda g: g.contains(inside)),
             ("S_CROSSES", line, lambda g: g.crosses(line)),
             ("S_TOUCHES", grids[one], lambda g: g.touches(grids[one])),
             ("S_EQUALS", grids[one], lambda g: g.equals(grids[one]))]
    for op, literal, test in cases:
        want = {c for c, g in grids.items() if test(g)}
        assert want and want != set(grids) or op in ("S_EQUALS", "S_CONTAINS"), op
        assert _ids(client, "grids", {"filter": f"{op}(geometry, {literal.wkt})"}) == want, op
        as_json = {"op": op.lower(), "args": [{"property": "geometry"}, mapping(literal)]}
        assert _ids(client, "grids", {"filter": json.dumps(as_json),
                                      "filter-lang": "cql2-json"}) == want, op


def test_cql2_dwithin_in_metres_on_the_spheroid(client, city) -> None:
    """S_DWITHIN / S_BEYOND (text and JSON, metres or another unit) select what pyproj's
    geodesic distances (buildings) and shapely in the UTM zone (grids) select; a bad distance
    or unit is a 400 naming the filter."""
    eng = city[1]
    geod = Geod(ellps="WGS84")
    pts = rows(eng, "SELECT code, ST_X(location), ST_Y(location) FROM building")
    lon0, lat0 = float(np.median([p[1] for p in pts])), float(np.median([p[2] for p in pts]))
    d = {c: geod.inv(lon0, lat0, x, y)[2] for c, x, y in pts}
    # a radius midway between two buildings at least a metre apart in distance: none on the edge
    ds = sorted(d.values())
    r = next((a + b) / 2 for a, b in zip(ds[len(ds) // 4:], ds[len(ds) // 4 + 1:], strict=False)
             if b - a > 1.0)
    near = {c for c, v in d.items() if v <= r}
    assert near and len(near) < len(pts)
    point = f"POINT({lon0!r} {lat0!r})"
    geo_point = {"type": "Point", "coordinates": [lon0, lat0]}
    for params in ({"filter": f"S_DWITHIN(geometry, {point}, {r})"},
                   {"filter": f"S_DWITHIN(geometry, {point}, {r / 1000}, kilometers)"},
                   {"filter": f"s_dwithin(geometry, {point}, {r / 0.3048}, 'feet')"},
                   {"filter-lang": "cql2-json", "filter": json.dumps({"op": "s_dwithin", "args": [
                       {"property": "geometry"}, geo_point, r]})},
                   {"filter-lang": "cql2-json", "filter": json.dumps({"op": "and", "args": [
                       {"op": "s_dwithin", "args": [{"property": "geometry"}, geo_point,
                                                    r / 1852, "nautical miles"]},
                       {"op": ">=", "args": [{"property": "households"}, 0]}]})}):
        assert _ids(client, "buildings", params) == near, params
    assert _ids(client, "buildings", {"filter": f"S_BEYOND(geometry, {point}, {r})"}) \
        == set(d) - near
    # polygons: the distance from the point to each grid, in the UTM zone (scale ~1e-3)
    to_utm = Transformer.from_crs(4326, UTM, always_xy=True)
    px, py = to_utm.transform(lon0, lat0)
    gd = {c: shapely.transform(shapely.from_wkb(bytes(w)), lambda a: np.column_stack(
        to_utm.transform(a[:, 0], a[:, 1]))).distance(shapely.Point(px, py))
        for c, w in rows(eng, "SELECT code, ST_AsBinary(geom) FROM area_current "
                              "WHERE level = 'grid'")}
    r = 400.0
    sure = {c for c, v in gd.items() if v < r * 0.995}
    maybe = {c for c, v in gd.items() if r * 0.995 <= v <= r * 1.005}
    got = _ids(client, "grids", {"filter": f"S_DWITHIN(geometry, {point}, {r})"})
    assert sure and sure <= got <= sure | maybe and len(got) < len(gd)
    for bad in (f"S_DWITHIN(geometry, {point}, 100, parsecs)",
                f"S_DWITHIN(geometry, {point}, -5)", f"S_DWITHIN(geometry, {point}, 'far')",
                f"S_DWITHIN(households, {point}, 100)"):
        r400 = client.get("/ogc/collections/buildings/items", headers=who("commander"),
                          params={"filter": bad})
        assert r400.status_code == 400 and r400.json()["problems"][0]["field"] == "filter", bad


# ------------------------------------------------------------------ scoping and credentials


def test_incidents_scoped_to_the_caller_without_personal_data(client, city) -> None:
    eng = city[1]
    mine = {str(r[0]) for r in rows(eng, "SELECT i.id FROM incident i JOIN app_user u ON "
                                         "u.id = i.reporter_user_id WHERE u.username = 'resident'")}
    every = {str(r[0]) for r in rows(eng, "SELECT id FROM incident")}
    assert mine and mine < every
    got = client.get("/ogc/collections/incidents/items", headers=who("resident")).json()
    assert {str(f["id"]) for f in got["features"]} == mine
    assert got["numberMatched"] == len(mine)
    body = json.dumps(got, ensure_ascii=False)
    assert "13800138000" not in body and "张三" not in body and "私人描述" not in body
    other = next(iter(every - mine))
    assert client.get(f"/ogc/collections/incidents/items/{other}",
                      headers=who("resident")).status_code == 404
    assert {str(f["id"]) for f in client.get("/ogc/collections/incidents/items?limit=100",
                                             headers=who("commander")).json()["features"]} == every
    # a resident reads no layer but the incidents
    assert client.get("/ogc/collections/grids/items", headers=who("resident")).status_code == 403


def test_area_scope_and_basic_credentials(client, city, tmp_path) -> None:
    eng = city[1]
    keys = city[3]
    inside = {r[0] for r in rows(eng, "SELECT code FROM area_current WHERE level = 'grid' "
                                      "AND code LIKE :p", p=STREET + "%")}
    got = client.get("/ogc/collections/grids/items?limit=100", headers=who("planner_in")).json()
    assert {f["id"] for f in got["features"]} == inside
    out = client.get("/ogc/collections/grids/items?limit=100", headers=who("planner_out")).json()
    assert out["numberMatched"] == 0  # the city has no grid in street 002
    assert client.get("/ogc/collections", headers=basic("commander", "wrong")).status_code == 401
    by_key = client.get("/ogc/collections/grids/items?limit=100",
                        headers=basic("qgis", keys["role"]))
    assert by_key.status_code == 200 and by_key.json()["numberMatched"] == 24
    assert client.get("/ogc/collections/grids/items",
                      headers=basic("x", keys["plain"])).status_code == 403


def test_a_cached_tile_is_served_only_as_the_policy_admits(client, city) -> None:
    """Cached tiles are answered before routing, but by the same rules: no credentials 401, a
    key without the ogc scope or a resident 403, a planner of another area gets the tile of
    their own reach (empty here), and every hit counts against the key's rate (429)."""
    eng = city[1]
    code = rows(eng, "SELECT min(code) FROM area_current WHERE level = 'grid' AND code LIKE :p",
                p=STREET + "%")[0][0]
    c = _stored(eng, code).representative_point()
    t = morecantile.tms.get("WebMercatorQuad").tile(c.x, c.y, 16)
    url = f"/ogc/collections/grids/tiles/WebMercatorQuad/16/{t.y}/{t.x}"
    cache = client.app.state.tile_cache
    first = client.get(url, headers=who("commander"))
    hits = cache.hits
    again = client.get(url, headers=who("commander"))
    assert first.status_code == again.status_code == 200 and first.content
    assert again.content == first.content and cache.hits == hits + 1  # from the cache
    assert again.headers["etag"] == first.headers["etag"]
    assert client.get(url).status_code == 401
    assert client.get(url, headers=basic("commander", "wrong")).status_code == 401
    assert client.get(url, headers=basic("x", city[3]["plain"])).status_code == 403
    assert client.get(url, headers=who("resident")).status_code == 403
    other = client.get(url, headers=who("planner_out"))
    assert other.status_code == 200 and other.content == b""  # no grid of street 002 there
    inside = client.get(url, headers=who("planner_in"))
    assert inside.status_code == 200 and inside.content == first.content
    with eng.begin() as conn:
        slow = create_api_key(conn, f"slow-{uuid.uuid4().hex[:6]}", scopes=("ogc",),
                              rate_per_minute=2)
    answers = [client.get(url, headers=basic("gis", slow)).status_code for _ in range(5)]
    assert answers[:2] == [200, 200] and 429 in answers  # (a minute may turn in between)


def test_generation_and_date_parameters(client, city) -> None:
    eng = city[1]
    gens = rows(eng, "SELECT id, effective_from FROM generation ORDER BY id")
    first = gens[0][0]
    r = client.get(f"/ogc/collections/grids/items?generation={first}&limit=100",
                   headers=who("commander")).json()
    want = {c for (c,) in rows(eng, "SELECT code FROM area WHERE level = 'grid' AND "
                                    "generation_low <= :g AND (generation_high IS NULL OR "
                                    "generation_high >= :g)", g=first)}
    assert {f["id"] for f in r["features"]} == want
    r = client.get("/ogc/collections/grids/items", headers=who("commander"),
                   params={"datetime": "1999-01-01T00:00:00Z"})
    assert r.status_code == 404


# ------------------------------------------------------------------ tiles


def _mvt_count(data: bytes, tmp_path: Path, layer: str) -> int:
    path = tmp_path / f"{uuid.uuid4().hex}.mvt"
    path.write_bytes(data)
    out = subprocess.run(["ogrinfo", "-ro", "-so", "-oo", "CLIP=NO", str(path), layer],
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("Feature Count"))
    return int(line.split(":")[1])


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="needs gdal-bin")
def test_grid_tiles_hold_the_grids_of_the_tile(client, city, tmp_path) -> None:
    eng = city[1]
    grids = {c: _stored(eng, c) for (c,) in rows(
        eng, "SELECT code FROM area_current WHERE level = 'grid'")}
    centre = shapely.union_all(list(grids.values())).centroid
    tms = morecantile.tms.get("WebMercatorQuad")
    to_merc = Transformer.from_crs(4326, 3857, always_xy=True)
    for z in (12, 15, 16):
        t = tms.tile(centre.x, centre.y, z)
        b = tms.xy_bounds(t)
        pad = (b.right - b.left) * 64 / 4096
        tile_box = box(b.left - pad, b.bottom - pad, b.right + pad, b.top + pad)
        want = sum(1 for g in grids.values() if shapely.transform(
            g, lambda a: np.column_stack(to_merc.transform(a[:, 0], a[:, 1]))).intersects(
                tile_box))
        r = client.get(f"/ogc/collections/grids/tiles/WebMercatorQuad/{z}/{t.y}/{t.x}",
                       headers=who("commander"))
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/vnd.mapbox-vector-tile"
        assert _mvt_count(r.content, tmp_path, "grids") == want
    tj = client.get("/ogc/collections/grids/tiles/WebMercatorQuad/tilejson.json",
                    headers=who("commander")).json()
    assert tj["tilejson"] == "3.0.0" and tj["vector_layers"][0]["id"] == "grids"
    assert client.get("/ogc/collections/grids/tiles/WebMercatorQuad/3/9/0",
                      headers=who("commander")).status_code == 404
    # incidents tiles are scoped like the items
    pts = rows(eng, "SELECT ST_X(location), ST_Y(location) FROM incident")
    t = tms.tile(float(np.mean([p[0] for p in pts])), float(np.mean([p[1] for p in pts])), 10)
    url = f"/ogc/collections/incidents/tiles/WebMercatorQuad/10/{t.y}/{t.x}"
    n_res = _mvt_count(client.get(url, headers=who("resident")).content, tmp_path, "incidents")
    n_all = _mvt_count(client.get(url, headers=who("commander")).content, tmp_path, "incidents")
    assert (n_res, n_all) == (2, len(pts))


# ------------------------------------------------------------------ Part 4 on grids


@pytest.fixture
def edit_api(city):
    url, _, admin, _ = city
    copy = _copy(admin, url)
    eng = make_engine(copy)
    app = create_app(engine=eng, auth_settings=AUTH)
    app.state.planning_settings = PlanningSettings(balance_mode="warn")
    with TestClient(app, raise_server_exceptions=False) as tc:
        yield tc, eng
    eng.dispose()
    _drop(admin, copy)


def _mvt_statuses(data: bytes, tmp_path: Path) -> dict[int, str]:
    """{incident id: status} of an incidents MVT tile, read by GDAL's MVT driver."""
    path = tmp_path / f"{uuid.uuid4().hex}.mvt"
    path.write_bytes(data)
    out = subprocess.run(["ogrinfo", "-ro", "-al", "-q", "-oo", "CLIP=NO", str(path)],
                         capture_output=True, text=True, check=True).stdout
    ids = [int(x.split("=")[1]) for x in out.splitlines() if x.strip().startswith("id (")]
    statuses = [x.split("=")[1].strip() for x in out.splitlines()
                if x.strip().startswith("status (")]
    assert len(ids) == len(statuses)
    return dict(zip(ids, statuses, strict=True))


@pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="needs gdal-bin")
def test_incident_tiles_follow_a_status_change(edit_api, tmp_path) -> None:
    """A case moved a step shows its new status in the next tile, under a new ETag; the old
    ETag no longer answers 304, the new one does."""
    client, eng = edit_api
    (iid, x, y), *_ = rows(eng, "SELECT id, ST_X(location), ST_Y(location) FROM incident "
                                "WHERE status = 'reported' ORDER BY id")
    t = morecantile.tms.get("WebMercatorQuad").tile(x, y, 16)
    url = f"/ogc/collections/incidents/tiles/WebMercatorQuad/16/{t.y}/{t.x}"
    first = client.get(url, headers=who("commander"))
    assert first.status_code == 200 and _mvt_statuses(first.content, tmp_path)[iid] == "reported"
    etag = first.headers["etag"]
    again = client.get(url, headers={**who("commander"), "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    r = client.post(f"/v1/incidents/{iid}/transitions", json={"to": "checked_in"},
                    headers=who("commander"))
    assert r.status_code == 200, r.text
    assert rows(eng, "SELECT status FROM incident WHERE id = :i", i=iid)[0][0] == "checked_in"
    after = client.get(url, headers={**who("commander"), "If-None-Match": etag})
    assert after.status_code == 200 and after.headers["etag"] != etag
    assert _mvt_statuses(after.content, tmp_path)[iid] == "checked_in"
    assert client.get(url, headers={**who("commander"), "If-None-Match": after.headers[
        "etag"]}).status_code == 304
    # a step taken by another process (not through this app) shows within about a second
    with eng.begin() as c:
        transition(c, iid, "consulting", actor="elsewhere", settings=IncidentSettings())
    deadline, seen = time.monotonic() + 10, None
    while seen != "consulting" and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = _mvt_statuses(client.get(url, headers=who("commander")).content, tmp_path)[iid]
    assert seen == "consulting"


def _neighbours(eng) -> tuple[str, str]:
    a, b = rows(eng, "SELECT a.code, b.code FROM area_current a JOIN area_current b ON "
                     "a.level = 'grid' AND b.level = 'grid' AND a.parent_code = b.parent_code "
                     "AND a.code < b.code AND ST_Length(ST_Intersection(a.geom, b.geom)) > 0 "
                     "ORDER BY a.code, b.code LIMIT 1")[0]
    return a, b


def _state(eng) -> tuple:
    return tuple(tuple(rows(eng, sql)) for sql in (
        "SELECT id, code, generation_low, generation_high FROM area ORDER BY id",
        "SELECT id FROM generation ORDER BY id", "SELECT code, grid_code FROM building"))


def test_put_redraws_a_grid_as_a_planning_change(edit_api) -> None:
    client, eng = edit_api
    a, b = _neighbours(eng)
    ga, gb = _stored(eng, a), _stored(eng, b)
    grown = shapely.union_all([ga, gb.intersection(ga.buffer(0.0003))]).buffer(0)
    feature = {"type": "Feature", "properties": {}, "geometry": mapping(grown)}
    r = client.put(f"/ogc/collections/grids/items/{a}", json=feature, headers=who("planner_in"))
    assert r.status_code == 204, r.text
    gen = int(r.headers["x-generation"])
    assert rows(eng, "SELECT author FROM generation WHERE id = :g", g=gen)[0][0] == "planner_in"
    assert _stored(eng, a).symmetric_difference(grown).area < 1e-12
    assert _stored(eng, b).symmetric_difference(gb.difference(grown)).area < 1e-12
    # the same edit by a planner of another street is refused before anything is done
    before = _state(eng)
    r = client.put(f"/ogc/collections/grids/items/{a}", json=feature, headers=who("planner_out"))
    assert r.status_code == 403 and _state(eng) == before


def test_delete_refused_by_the_checks_writes_nothing(edit_api) -> None:
    client, eng = edit_api
    a, _ = _neighbours(eng)
    before = _state(eng)
    r = client.delete(f"/ogc/collections/grids/items/{a}", headers=who("planner_in"))
    assert r.status_code == 422
    assert any(p.get("detail", {}).get("check") == "gap" for p in r.json()["problems"])
    assert _state(eng) == before
    assert client.delete("/ogc/collections/buildings/items/x",
                         headers=who("planner_in")).status_code == 400


def test_post_carves_a_new_grid_and_a_refused_post_writes_nothing(edit_api) -> None:
    client, eng = edit_api
    a, _ = _neighbours(eng)
    ga = _stored(eng, a)
    c = ga.centroid
    piece = box(c.x - 0.0004, c.y - 0.0003, c.x + 0.0004, c.y + 0.0003).intersection(ga)
    feature = {"type": "Feature", "properties": {"parent_code": a[:12], "name": "新网格"},
               "geometry": mapping(piece)}
    r = client.post("/ogc/collections/grids/items", json=feature, headers=who("planner_in"))
    assert r.status_code == 201, r.text
    new = r.json()["created"][0]
    assert r.headers["location"].endswith(f"/ogc/collections/grids/items/{new}")
    assert _stored(eng, new).symmetric_difference(piece).area < 1e-12
    assert _stored(eng, a).symmetric_difference(ga.difference(piece)).area < 1e-12
    # a grid reaching outside its community is refused: 422 with the problems, nothing written
    before = _state(eng)
    outside = {"type": "Feature", "properties": {"parent_code": a[:12]},
               "geometry": mapping(shapely.affinity.translate(piece, 0.5, 0.5))}
    r = client.post("/ogc/collections/grids/items", json=outside, headers=who("planner_in"))
    assert r.status_code == 422 and r.json()["problems"]
    assert _state(eng) == before


def test_post_checks_the_new_grid_s_name_and_team_like_a_planning_change(edit_api) -> None:
    """Issue 15 item 13 on OGC Part 4: a POSTed grid's name is checked (control characters
    422, a sibling's name 409) and ``team`` takes members of the trimmed sibling's team."""
    client, eng = edit_api
    a, b = _neighbours(eng)
    ga = _stored(eng, a)
    c = ga.centroid
    piece = box(c.x - 0.0004, c.y - 0.0003, c.x + 0.0004, c.y + 0.0003).intersection(ga)
    with eng.begin() as conn:
        conn.execute(text("DELETE FROM grid_team_member WHERE grid_code = :g"), {"g": a})
        leader, worker = (conn.execute(text(
            "INSERT INTO grid_team_member (grid_code, role, name) VALUES (:g, :r, :n) "
            "RETURNING id"), {"g": a, "r": r, "n": n}).scalar_one()
            for r, n in (("grid_leader", "组长"), ("grid_worker", "网格员")))
    sibling = rows(eng, "SELECT name FROM area_current WHERE code = :c", c=b)[0][0]
    before = _state(eng)
    for props, status, word in (({"name": "坏\n名"}, 422, "U+000A"), ({"name": sibling}, 409,
                                                                      sibling),
                                ({"name": "新网格", "team": [leader, 10**12]}, 422, "10000000")):
        feature = {"type": "Feature", "properties": {"parent_code": a[:12], **props},
                   "geometry": mapping(piece)}
        r = client.post("/ogc/collections/grids/items", json=feature, headers=who("planner_in"))
        assert r.status_code == status and word in r.text, (props, r.text)
    assert _state(eng) == before
    feature = {"type": "Feature", "properties": {"parent_code": a[:12], "name": "新网格",
                                                 "team": [worker]}, "geometry": mapping(piece)}
    r = client.post("/ogc/collections/grids/items", json=feature, headers=who("planner_in"))
    assert r.status_code == 201, r.text
    new = r.json()["created"][0]
    # one new grid: the chosen worker and, by default, the members named nowhere (the leader)
    assert sorted(rows(eng, "SELECT role, name FROM grid_team_member WHERE grid_code = :g",
                       g=new)) == [("grid_leader", "组长"), ("grid_worker", "网格员")]
    assert rows(eng, "SELECT name FROM area_current WHERE code = :c", c=new)[0][0] == "新网格"


def test_post_a_layer_merges_two_grids_and_tiles_follow_the_new_generation(edit_api,
                                                                           tmp_path) -> None:
    client, eng = edit_api
    a, b = _neighbours(eng)
    comm = a[:12]
    tms = morecantile.tms.get("WebMercatorQuad")
    c = _stored(eng, a).centroid
    t = tms.tile(c.x, c.y, 16)
    tile_url = f"/ogc/collections/grids/tiles/WebMercatorQuad/16/{t.y}/{t.x}"
    before_tile = client.get(tile_url, headers=who("planner_in")).content
    assert client.get(tile_url, headers=who("planner_in")).content == before_tile
    layer = {c_: _stored(eng, c_) for (c_,) in rows(
        eng, "SELECT code FROM area_current WHERE level = 'grid' AND parent_code = :p", p=comm)}
    merged = shapely.union_all([layer.pop(a), layer.pop(b)]).buffer(0)
    features = [{"type": "Feature", "properties": {"code": code, "parent_code": comm},
                 "geometry": mapping(g)} for code, g in layer.items()]
    features.append({"type": "Feature", "properties": {"parent_code": comm},
                     "geometry": mapping(merged)})
    r = client.post(f"/ogc/collections/grids/items?community={comm}", headers=who("planner_in"),
                    json={"type": "FeatureCollection", "features": features})
    assert r.status_code == 201, r.text
    assert sorted(r.json()["retired"]) == sorted([a, b]) and len(r.json()["created"]) == 1
    new = r.json()["created"][0]
    assert _stored(eng, new).symmetric_difference(merged).area < 1e-12
    assert not rows(eng, "SELECT 1 FROM area_current WHERE code IN (:a, :b)", a=a, b=b)
    after_tile = client.get(tile_url, headers=who("planner_in")).content
    assert after_tile != before_tile  # the new generation made the cached tile stale
