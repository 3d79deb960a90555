"""The circles API end to end on a hand-made network."""

from __future__ import annotations

import time

import pytest
from circles_testnet import ORIGIN_M, add_station, make_lattice, to_wgs84
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.main import create_app
from api.routers.circles import CircleProperties, UncoveredProperties
from api.schemas import FeatureCollection
from geo.auth.service import AuthSettings, Principal, issue_token
from geo.core.db import make_engine

X0, Y0 = ORIGIN_M
AUTH = AuthSettings(jwt_secret="circles-test-" + "z" * 32, enforce_access=True)


@pytest.fixture
def client(fresh_database):
    url = fresh_database()
    eng = make_engine(url)
    with eng.begin() as c:
        make_lattice(c, nx=12, ny=6)
        add_station(c, "S1", X0 + 150, Y0 + 200, community_code="350104001001")
        rows = []
        for i, (x, y, r) in enumerate([(160, 210, 10), (1000, 300, 30), (1050, 320, 20)]):
            lon, lat = to_wgs84(X0 + x, Y0 + y)
            rows.append({"c": f"B{i}", "lon": lon, "lat": lat, "r": r})
        c.execute(text("INSERT INTO building (code, location, residents, households, grid_code)"
                       " VALUES (:c, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), :r, 1,"
                       " '350104001001001')"), rows)
    app = create_app(engine=eng, auth_settings=AUTH)
    with TestClient(app) as tc:
        yield app, tc
    from geo.circles.queue import stop_runner

    stop_runner(eng)
    eng.dispose()


def _as_planner(tc):
    planner = Principal(kind="user", name="planner", role="planner")
    tc.headers["Authorization"] = f"Bearer {issue_token(planner, AUTH)}"


def _wait(tc, rid: int, timeout: float = 120.0) -> dict:
    """Poll the run until it is done or failed (the runner computes it in the background)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        run = tc.get(f"/v1/circles/runs/{rid}").json()
        if run["status"] in ("done", "failed"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {rid} still {run['status']} after {timeout} s")


def test_circles_coverage_siting_over_http(client):
    _, tc = client
    assert tc.post("/v1/circles/runs", json={}).status_code == 401  # anonymous may not run
    _as_planner(tc)
    r = tc.post("/v1/circles/runs", json={"tiers_m": [300, 500]})
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["kind"] == "circles" and queued["status"] in ("queued", "running", "done")
    assert r.headers["location"] == f"/v1/circles/runs/{queued['id']}"
    run = _wait(tc, queued["id"])
    assert run["status"] == "done" and run["progress"] == 1, run
    fc = tc.get(f"/v1/circles/runs/{run['id']}/circles", params={"tier_m": 300}).json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 1
    assert tc.post("/v1/circles/runs", json={"tiers_m": [-1]}).status_code == 422
    bad = tc.post("/v1/circles/coverage", json={"tier_m": 123, "circles_run_id": run["id"]})
    assert bad.status_code == 422 and "tier_m" in bad.text  # refused before anything is queued

    queued = tc.post("/v1/circles/coverage", json={"circles_run_id": run["id"]})
    assert queued.status_code == 202, queued.text
    cov = _wait(tc, queued.json()["id"])
    assert cov["summary"]["covered"] == 1 and cov["summary"]["residents_covered"] == 10
    summ = tc.get(f"/v1/circles/coverage/{cov['id']}", params={"level": "street"}).json()
    assert summ["levels"][0]["code"] == "350104001" and summ["levels"][0]["residents"] == 60
    unc = tc.get(f"/v1/circles/coverage/{cov['id']}/uncovered").json()
    # sent without validation (api.schemas.GeoJSONAnswer): they must still match their docs
    FeatureCollection[CircleProperties].model_validate(fc, strict=False)
    FeatureCollection[UncoveredProperties].model_validate(unc, strict=False)
    assert sorted(f["properties"]["code"] for f in unc["features"]) == ["B1", "B2"]

    st = _wait(tc, tc.post("/v1/circles/siting", json={"k": 1}).json()["id"])
    out = tc.get(f"/v1/circles/siting/{st['id']}").json()
    mclp = [f for f in out["sites"]["features"] if f["properties"]["method"] == "mclp"]
    assert mclp[0]["properties"]["gain_residents"] == 50
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

    # distance coverage: per-building distances and completeness over HTTP
    dcov = _wait(tc, tc.post("/v1/circles/coverage", json={"tier_m": 300}).json()["id"])
    assert dcov["status"] == "done" and dcov["params"]["method"] == "distance"
    d = tc.get(f"/v1/circles/coverage/{dcov['id']}/distances").json()
    b0 = next(f for f in d["features"] if f["properties"]["code"] == "B0")
    sw = b0["properties"]["kinds"]["social_work_station"]
    assert sw["distance_m"] < 30 and sw["minutes"] == pytest.approx(sw["distance_m"] / 60, abs=0.01)
    comp = tc.get(f"/v1/circles/coverage/{dcov['id']}/completeness",
                  params={"level": "street"}).json()
    assert comp[0]["code"] == "350104001" and set(comp[0]["tiers"]) == {"5", "10", "15"}


def test_failed_run_is_recorded_and_a_dead_runners_run_is_taken_again(client):
    """A run whose computation refuses its input ends ``failed`` with the reason; a run left
    ``running`` by a process that died (no advisory lock held) is computed again by the next
    runner, from its stored parameters: the queue survives a restart."""
    from geo.circles.queue import enqueue, run_next
    from geo.circles.runs import CircleSettings

    app, tc = client
    _as_planner(tc)
    eng = app.state.engine
    with eng.begin() as c:  # as a crashed service leaves it: running, progress, no lock
        rid = enqueue(c, "circles", {"tiers_m": [300]})
        c.execute(text("UPDATE analysis_run SET status = 'running', progress = 0.4 WHERE id = :r"),
                  {"r": rid})
    run = _wait(tc, rid)
    assert run["status"] == "done" and run["summary"]["circles"] == 1
    with eng.begin() as c:
        bad = enqueue(c, "siting", {"k": 1, "coverage_run_id": 987654})
    run_next(eng, CircleSettings())  # whichever runner takes it, it fails cleanly
    failed = _wait(tc, bad)
    assert failed["status"] == "failed" and "987654" in failed["summary"]["error"]


def test_analysis_reads_are_scoped_to_the_callers_area(client):
    """Reads narrowed to an area (``within``, which a signed-in user's own area narrows in
    ``area_within`` exactly as for layers) return only that area's buildings and circles."""
    app, tc = client
    _as_planner(tc)
    run = _wait(tc, tc.post("/v1/circles/runs", json={"tiers_m": [300]}).json()["id"])
    cov = _wait(tc, tc.post("/v1/circles/coverage", json={"tier_m": 300}).json()["id"])
    assert len(tc.get(f"/v1/circles/coverage/{cov['id']}/distances").json()["features"]) == 3
    mine = tc.get(f"/v1/circles/coverage/{cov['id']}/distances", params={"within": "350104001"})
    assert len(mine.json()["features"]) == 3
    assert len(tc.get(f"/v1/circles/runs/{run['id']}/circles",
                      params={"within": "350104001001"}).json()["features"]) == 1
    other = tc.get(f"/v1/circles/coverage/{cov['id']}/distances",
                   params={"within": "350104002"}).json()
    assert other["features"] == []
    assert tc.get(f"/v1/circles/coverage/{cov['id']}/uncovered",
                  params={"within": "350104002"}).json()["features"] == []
    assert tc.get(f"/v1/circles/runs/{run['id']}/circles",
                  params={"within": "350104002"}).json()["features"] == []


def _all_pages(tc, path: str, limit: int, **params) -> tuple[list[dict], list[dict]]:
    """Follow the next links of a paged FeatureCollection: (every page, every feature)."""
    pages = [tc.get(path, params={"limit": limit, **params}).json()]
    while (nxt := [lk["href"] for lk in pages[-1]["links"] if lk["rel"] == "next"]):
        pages.append(tc.get(nxt[0]).json())
    return pages, [f for p in pages for f in p["features"]]


def test_circles_and_coverage_collections_page_with_a_total(client):
    """The circles, uncovered and distances collections page like every list: a total on each
    page and next links that, followed, give every row once (checked against the tables);
    a limit past the maximum is a 400 naming the field, never a quiet cut."""
    app, tc = client
    _as_planner(tc)
    run = _wait(tc, tc.post("/v1/circles/runs", json={"tiers_m": [200, 300, 500]}).json()["id"])
    cov = _wait(tc, tc.post("/v1/circles/coverage", json={"tier_m": 300}).json()["id"])
    ucov = _wait(tc, tc.post("/v1/circles/coverage", json={
        "method": "circles", "circles_run_id": run["id"], "tier_m": 300}).json()["id"])
    with app.state.engine.connect() as c:
        circle_ids = c.execute(text("SELECT id FROM service_circle WHERE run_id = :r"),
                               {"r": run["id"]}).scalars().all()
        building_ids = c.execute(text("SELECT id FROM building")).scalars().all()
        uncovered_ids = c.execute(text(
            "SELECT building_id FROM building_coverage WHERE run_id = :r AND NOT covered"),
            {"r": ucov["id"]}).scalars().all()
    assert len(circle_ids) == 3 and len(building_ids) == 3 and uncovered_ids
    for path, expected in ((f"/v1/circles/runs/{run['id']}/circles", circle_ids),
                           (f"/v1/circles/coverage/{cov['id']}/distances", building_ids),
                           (f"/v1/circles/coverage/{ucov['id']}/uncovered", uncovered_ids)):
        pages, feats = _all_pages(tc, path, 2)
        assert all(p["total"] == len(expected) for p in pages), path
        assert len(pages) == -(-len(expected) // 2)
        assert sorted(f["id"] for f in feats) == sorted(expected), path
        assert all(len(p["features"]) <= 2 and p["limit"] == 2 for p in pages)
        past = tc.get(path, params={"limit": 2, "offset": 10}).json()
        assert past["features"] == [] and past["total"] == len(expected)
    for path, most in ((f"/v1/circles/runs/{run['id']}/circles", 100_000),
                       (f"/v1/circles/coverage/{ucov['id']}/uncovered", 1_000_000),
                       (f"/v1/circles/coverage/{cov['id']}/distances", 100_000)):
        too_many = tc.get(path, params={"limit": most + 1})
        assert too_many.status_code == 400, path
        assert too_many.json()["problems"][0]["field"] == "limit"
        assert tc.get(path, params={"offset": -1}).status_code == 400
