"""Real GIS clients against wangge's OGC API under uvicorn: GDAL's OAPIF driver (Debian
``gdal-bin``) and OWSLib (PyPI). Access enforcement is on; the clients send HTTP Basic.

Counts and sets are checked against SQL on the stored rows; edits against the database.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import shapely
from owslib.ogcapi.features import Features
from owslib.util import Authentication
from shapely.geometry import box, mapping
from sqlalchemy import text

from bench.common import uvicorn_server
from geo.auth.service import AuthSettings, create_user
from geo.circles.build import build_circles
from geo.circles.coverage import run_coverage
from geo.circles.runs import CircleSettings
from geo.core.db import make_engine
from geo.data.store import write_layers
from geo.incidents import IncidentSettings, report
from geo.ogc.collections import COLLECTIONS
from geo.samples.synth import generate_city

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("ogrinfo") is None, reason="needs gdal-bin")]
AUTH = AuthSettings(enforce_access=True)
PASSWORD = "commander-password"

# independent counts of what each collection holds for a commander of district 350104
EXPECTED = {
    "districts": "SELECT count(*) FROM area_current WHERE level = 'district'",
    "streets": "SELECT count(*) FROM area_current WHERE level = 'street'",
    "communities": "SELECT count(*) FROM area_current WHERE level = 'community'",
    "grids": "SELECT count(*) FROM area_current WHERE level = 'grid'",
    "buildings": "SELECT count(*) FROM building",
    "stations": "SELECT count(*) FROM station",
    # placed by geometry: what touches the caller's area (the district)
    "walk_network": "SELECT count(*) FROM walk_edge e JOIN area_current d ON d.code = '350104' "
                    "AND ST_Intersects(d.geom, e.geom)",
    "barriers": "SELECT count(*) FROM barrier e JOIN area_current d ON d.code = '350104' "
                "AND ST_Intersects(d.geom, e.geom)",
    "circles": "SELECT count(*) FROM service_circle",
    "coverage": "SELECT count(*) FROM building_coverage",
    "uncovered_buildings": "SELECT count(*) FROM building_coverage WHERE NOT covered",
    "incidents": "SELECT count(*) FROM incident",
    "grid_statistics": "SELECT count(*) FROM area_current WHERE level = 'grid'",
}


@pytest.fixture(scope="module")
def served(fresh_database):
    url = fresh_database()
    eng = make_engine(url)
    with eng.begin() as c:
        write_layers(c, generate_city(grids=24, buildings=24 * 30, stations=4, seed=5,
                                      team=False), kind="synth")
        create_user(c, "commander", PASSWORD, "commander", area_code="350104", settings=AUTH)
        create_user(c, "planner", "planner-password", "planner", area_code="350104",
                    settings=AUTH)
        cat = c.execute(text("SELECT code FROM incident_category ORDER BY code LIMIT 1")).scalar()
        for x, y in c.execute(text("SELECT ST_X(location), ST_Y(location) FROM building "
                                   "ORDER BY code LIMIT 5")).all():
            report(c, category=cat, lon=x, lat=y, settings=IncidentSettings())
        build_circles(c, CircleSettings())  # a circles run and a coverage run to read
        run_coverage(c, CircleSettings())
    env = {**os.environ, "WANGGE_DATABASE_URL": url, "WANGGE_ENFORCE_ACCESS": "true",
           "WANGGE_BALANCE_MODE": "warn", "WANGGE_POOL_SIZE": "6"}
    with uvicorn_server(env) as base:
        yield base + "/ogc", eng
    eng.dispose()


def count(eng, sql: str) -> int:
    with eng.connect() as c:
        return int(c.execute(text(sql)).scalar())


def gdal(*args: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "GDAL_HTTP_AUTH": "BASIC", "GDAL_HTTP_USERPWD": f"commander:{PASSWORD}",
           "CPL_DEBUG": "ON" if debug else "OFF"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


def test_gdal_lists_and_reads_every_collection_through_paging(served, tmp_path) -> None:
    root, eng = served
    out = gdal("ogrinfo", "-ro", "-q", f"OAPIF:{root}")
    assert out.returncode == 0, out.stderr
    listed = [line.split(":", 1)[1].split("(")[0].strip()
              for line in out.stdout.splitlines() if line[:1].isdigit()]
    assert listed == list(COLLECTIONS)
    for cid in COLLECTIONS:
        target = tmp_path / f"{cid}.geojson"
        run = gdal("ogr2ogr", "-f", "GeoJSON", str(target), f"OAPIF:{root}", cid,
                   "-oo", "PAGE_SIZE=200", debug=True)
        assert run.returncode == 0, run.stderr[-2000:]
        features = json.loads(target.read_text())["features"]
        expected = count(eng, EXPECTED[cid])
        assert expected > 0 and len(features) == expected, cid
        if len(features) > 200:  # read through next links, page by page
            assert "offset=200" in run.stderr, cid


def test_gdal_bbox_and_cql2_filter_run_on_the_server(served, tmp_path) -> None:
    root, eng = served
    with eng.connect() as c:
        x0, y0, x1, y1 = c.execute(text(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
            "(SELECT ST_Extent(location) e FROM building) s")).one()
        x0, y0 = x0 + 0.1 * (x1 - x0), y0 + 0.1 * (y1 - y0)  # an inner box: no point on it
        mx, my = (x0 + x1) / 2 + 1.234e-6, (y0 + y1) / 2 + 1.234e-6
        grid = c.execute(text("SELECT min(grid_code) FROM building")).scalar()
        want = {r[0] for r in c.execute(text(
            "SELECT code FROM building WHERE households >= 5 AND grid_code LIKE :g "
            "AND ST_Intersects(location, ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326))"),
            {"g": grid[:12] + "%", "x0": x0, "y0": y0, "x1": mx, "y1": my})}
    assert want
    target = tmp_path / "filtered.geojson"
    run = gdal("ogr2ogr", "-f", "GeoJSON", str(target), f"OAPIF:{root}", "buildings",
               "-oo", "PAGE_SIZE=20", "-spat", str(x0), str(y0), str(mx), str(my),
               "-where", f"households >= 5 AND grid_code LIKE '{grid[:12]}%'", debug=True)
    assert run.returncode == 0, run.stderr[-2000:]
    got = {f["properties"]["code"] for f in json.loads(target.read_text())["features"]}
    assert got == want
    assert "filter=" in run.stderr and "bbox=" in run.stderr  # evaluated by the server


def test_owslib_reads_and_edits_grids_through_the_planning_checks(served) -> None:
    root, eng = served
    api = Features(root, auth=Authentication("planner", "planner-password"))
    assert [c["id"] for c in api.collections()["collections"]] == list(COLLECTIONS)
    page = api.collection_items("grids", limit=100)
    assert page["numberMatched"] == count(eng, EXPECTED["grids"]) == len(page["features"])
    with eng.connect() as c:
        a, b = c.execute(text(
            "SELECT a.code, b.code FROM area_current a JOIN area_current b ON a.level = 'grid' "
            "AND b.level = 'grid' AND a.parent_code = b.parent_code AND a.code < b.code AND "
            "ST_Length(ST_Intersection(a.geom, b.geom)) > 0 ORDER BY 1, 2 LIMIT 1")).one()
        ga = shapely.from_wkb(bytes(c.execute(text(
            "SELECT ST_AsBinary(geom) FROM area_current WHERE code = :c"), {"c": a}).scalar()))
        gens = c.execute(text("SELECT count(*) FROM generation")).scalar()
    # create: a grid carved out of grid a
    cx, cy = ga.centroid.x, ga.centroid.y
    piece = box(cx - 0.0004, cy - 0.0003, cx + 0.0004, cy + 0.0003).intersection(ga)
    assert api.collection_item_create("grids", {
        "type": "Feature", "properties": {"parent_code": a[:12]}, "geometry": mapping(piece)})
    # a refused update: grid a takes back all its old ground; the new grid inside it is not
    # trimmed away (a swallowed grid keeps its geometry), so the overlap check refuses it
    whole = {"type": "Feature", "properties": {}, "geometry": mapping(ga)}
    with pytest.raises(RuntimeError):
        api.collection_item_update("grids", a, json.dumps(whole))
    with eng.connect() as c:
        assert c.execute(text("SELECT count(*) FROM generation")).scalar() == gens + 1
    # an accepted update: grow grid b a little into a
    with eng.connect() as c:
        gb = shapely.from_wkb(bytes(c.execute(text(
            "SELECT ST_AsBinary(geom) FROM area_current WHERE code = :c"), {"c": b}).scalar()))
    grown = shapely.union_all([gb, ga.difference(piece).intersection(gb.buffer(0.0002))])
    assert api.collection_item_update("grids", b, json.dumps(
        {"type": "Feature", "properties": {}, "geometry": mapping(grown.buffer(0))}))
    # delete: refused by the gap check, nothing written
    before = count(eng, "SELECT count(*) FROM generation")
    with pytest.raises(RuntimeError, match="gap"):
        api.collection_item_delete("grids", b)
    assert count(eng, "SELECT count(*) FROM generation") == before
    with eng.connect() as c:
        authors = c.execute(text("SELECT DISTINCT author FROM generation WHERE kind LIKE "
                                 "'planning:%'")).scalars().all()
    assert authors == ["planner"]


def test_unknown_credentials_are_refused(served) -> None:
    root, _ = served
    api = Features(root, auth=Authentication("planner", "wrong-password"))
    with pytest.raises(RuntimeError):
        api.collection_items("grids")
