"""The circles API end to end on a hand-made network."""

from __future__ import annotations

import pytest
from circles_testnet import ORIGIN_M, add_station, make_lattice, to_wgs84
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.main import create_app
from api.routers import circles as circles_router
from geo.auth.service import Principal
from geo.core.db import make_engine

X0, Y0 = ORIGIN_M


@pytest.fixture
def client(fresh_database):
    url = fresh_database()
    eng = make_engine(url)
    with eng.begin() as c:
        make_lattice(c, nx=12, ny=6)
        add_station(c, "S1", X0 + 150, Y0 + 200)
        rows = []
        for i, (x, y, r) in enumerate([(160, 210, 10), (1000, 300, 30), (1050, 320, 20)]):
            lon, lat = to_wgs84(X0 + x, Y0 + y)
            rows.append({"c": f"B{i}", "lon": lon, "lat": lat, "r": r})
        c.execute(text("INSERT INTO building (code, location, residents, households, grid_code)"
                       " VALUES (:c, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), :r, 1,"
                       " '350104001001001')"), rows)
    app = create_app(engine=eng)
    with TestClient(app) as tc:
        yield app, tc
    eng.dispose()


def _as_planner(app):
    planner = Principal(kind="user", name="planner", role="planner")
    app.dependency_overrides[circles_router.WRITE] = lambda: planner


def test_circles_coverage_siting_over_http(client):
    app, tc = client
    assert tc.post("/v1/circles/runs", json={}).status_code == 401  # anonymous may not run
    _as_planner(app)
    r = tc.post("/v1/circles/runs", json={"tiers_m": [300, 500]})
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["kind"] == "circles" and run["status"] == "done"
    fc = tc.get(f"/v1/circles/runs/{run['id']}/circles", params={"tier_m": 300}).json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 1
    assert tc.post("/v1/circles/runs", json={"tiers_m": [-1]}).status_code == 422
    assert tc.post("/v1/circles/coverage", json={"tier_m": 123}).status_code == 422

    cov = tc.post("/v1/circles/coverage", json={"circles_run_id": run["id"]}).json()
    assert cov["summary"]["covered"] == 1 and cov["summary"]["residents_covered"] == 10
    summ = tc.get(f"/v1/circles/coverage/{cov['id']}", params={"level": "street"}).json()
    assert summ["levels"][0]["code"] == "350104001" and summ["levels"][0]["residents"] == 60
    unc = tc.get(f"/v1/circles/coverage/{cov['id']}/uncovered").json()
    assert sorted(f["properties"]["code"] for f in unc["features"]) == ["B1", "B2"]

    st = tc.post("/v1/circles/siting", json={"k": 1}).json()
    mclp = [f for f in st["sites"]["features"] if f["properties"]["method"] == "mclp"]
    assert mclp[0]["properties"]["gain_residents"] == 50
    assert tc.get(f"/v1/circles/siting/{st['run_id']}").status_code == 200
    runs = tc.get("/v1/circles/runs").json()
    assert runs["total"] == len(runs["items"]) == 3
    first = tc.get("/v1/circles/runs", params={"limit": 2}).json()
    assert first["total"] == 3 and len(first["items"]) == 2
    [nxt] = [x["href"] for x in first["links"] if x["rel"] == "next"]
    rest = tc.get(nxt).json()
    assert [r["id"] for r in first["items"] + rest["items"]] == [r["id"] for r in runs["items"]]
    assert not [x for x in rest["links"] if x["rel"] == "next"]
    too_many = tc.get("/v1/circles/runs", params={"limit": 1001})
    assert too_many.status_code == 400 and too_many.json()["problems"][0]["field"] == "limit"
    assert tc.get("/v1/circles/runs/999999").status_code == 404
    assert tc.get(f"/v1/circles/coverage/{run['id']}").status_code == 404  # not a coverage run
