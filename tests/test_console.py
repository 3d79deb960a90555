"""The console's HTTP side: the session cookie and its CSRF token, password change, residents'
registration (rate-limited), SLA counts and trends checked against the rows themselves, the
command map's points and refresh, a grid's 2+5+N gaps against the database's own rule, exports
of analysis runs read back with GDAL, and the pages' role gates."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import geopandas as gpd
import pandas as pd
import pytest
from circles_testnet import ORIGIN_M, add_station, make_lattice, to_wgs84
from fastapi.testclient import TestClient
from shapely.geometry import shape as to_shape
from sqlalchemy import text

from api.main import create_app
from geo.auth.service import AuthSettings, create_user
from geo.circles.build import build_circles
from geo.circles.coverage import run_coverage
from geo.circles.runs import CircleSettings
from geo.circles.siting import run_siting
from geo.core.db import make_engine
from geo.data.store import write_layers
from geo.samples.synth import generate_city

AUTH = AuthSettings(jwt_secret="console-unit-" + "q" * 32, enforce_access=True)
PASSWORD = "console-password"


@pytest.fixture(scope="module")
def world(fresh_database: Any) -> Any:
    eng = make_engine(fresh_database(), pool_size=4)
    city = generate_city(grids=12, buildings=120, stations=4, seed=3)
    with eng.begin() as c:
        write_layers(c, city)
        deps = dict(c.execute(text("SELECT code, id FROM department")).all())
        district = city["district"].iloc[0]["code"]
        for name, role, area, dep in (("res", "resident", None, None),
                                      ("cmd", "commander", district, None),
                                      ("san", "department_staff", None, deps["sanitation"]),
                                      ("wrk", "grid_worker", city["grid"].iloc[0]["code"], None)):
            create_user(c, name, PASSWORD, role, area_code=area, department_id=dep,
                        settings=AUTH)
    app = create_app(engine=eng, auth_settings=AUTH)
    with TestClient(app, raise_server_exceptions=False) as client:
        grids = city["grid"].to_crs(4326)
        for i, cat in enumerate(["rubbish", "noise", "parking", "rubbish", "pipe_burst",
                                 "road_damage"]):
            p = grids.iloc[i % len(grids)].geometry.representative_point()
            r = client.post("/v1/incidents", headers=_bearer(client, "res"),
                            json={"category": cat, "lon": p.x, "lat": p.y})
            assert r.status_code == 201, r.text
        with eng.begin() as c:  # one red, one amber, one closed yesterday
            c.execute(text("UPDATE incident SET amber_at = now() - interval '2 h', resolve_due ="
                           " now() - interval '1 h' WHERE id = 1"))
            c.execute(text("UPDATE incident SET amber_at = now() - interval '1 h' WHERE id = 2"))
            c.execute(text("UPDATE incident SET status = 'closed', closed_at = now() -"
                           " interval '1 day', updated_at = now() - interval '1 day'"
                           " WHERE id = 3"))
        yield client, eng, city
    eng.dispose()


def _bearer(client: TestClient, user: str) -> dict[str, str]:
    r = client.post("/v1/auth/token", data={"username": user, "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _session(client: TestClient, user: str, password: str = PASSWORD) -> dict[str, Any]:
    client.cookies.clear()
    r = client.post("/v1/console/session", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def test_sign_in_sets_an_httponly_strict_cookie_and_a_csrf_token(world: Any) -> None:
    client, _, _ = world
    client.cookies.clear()
    r = client.post("/v1/console/session", data={"username": "cmd", "password": PASSWORD})
    assert r.status_code == 200 and r.json()["home"] == "/console/commander"
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("wangge_session="))
    csrf = next(c for c in cookies if c.startswith("wangge_csrf="))
    assert "HttpOnly" in session and "SameSite=strict" in session
    assert "HttpOnly" not in csrf and "SameSite=strict" in csrf
    assert client.get("/v1/auth/me").json()["name"] == "cmd"  # the cookie is a credential
    token = r.json()["csrf_token"]
    body = {"note": "督办"}
    assert client.post("/v1/incidents/1/urge", json=body).status_code == 403  # no token
    assert client.post("/v1/incidents/1/urge", json=body,
                       headers={"X-CSRF-Token": "0" * 64}).status_code == 403  # wrong token
    assert client.post("/v1/incidents/1/urge", json=body,
                       headers={"X-CSRF-Token": token}).status_code == 200
    # Signing out clears the cookies: the next call is anonymous.
    assert client.delete("/v1/console/session",
                         headers={"X-CSRF-Token": token}).status_code == 204
    client.cookies.clear()  # the client keeps expired cookies' jar entries otherwise
    assert client.get("/v1/auth/me").json()["kind"] == "anonymous"
    assert client.post("/v1/console/session",
                       data={"username": "cmd", "password": "wrong"}).status_code == 401


def test_a_forged_or_stale_cookie_is_no_one(world: Any) -> None:
    client, _, _ = world
    client.cookies.clear()
    client.cookies.set("wangge_session", "not-a-jwt")
    assert client.get("/v1/auth/me").json()["kind"] == "anonymous"
    assert client.get("/v1/console/counts").status_code == 401
    client.cookies.clear()


def test_password_change(world: Any) -> None:
    client, eng, _ = world
    with eng.begin() as c:
        create_user(c, "pw", PASSWORD, "resident", settings=AUTH)
    me = _session(client, "pw")
    h = {"X-CSRF-Token": me["csrf_token"]}
    r = client.post("/v1/console/password", headers=h,
                    json={"old_password": "wrong-password", "new_password": "another-password"})
    assert r.status_code == 422 and r.json()["problems"][0]["field"] == "old_password"
    r = client.post("/v1/console/password", headers=h,
                    json={"old_password": PASSWORD, "new_password": "short"})
    assert r.status_code == 422 and r.json()["problems"][0]["field"] == "new_password"
    assert client.post("/v1/console/password", headers=h, json={
        "old_password": PASSWORD, "new_password": "another-password"}).status_code == 204
    client.cookies.clear()
    assert client.post("/v1/console/session",
                       data={"username": "pw", "password": PASSWORD}).status_code == 401
    _session(client, "pw", "another-password")
    client.cookies.clear()


def test_residents_register_themselves_rate_limited(world: Any) -> None:
    client, eng, _ = world
    client.cookies.clear()
    codes = [client.post("/v1/console/residents",
                         json={"username": f"new{i}", "password": "new-password-1"}).status_code
             for i in range(11)]
    # Five a minute per address (fixed one-minute windows: a burst crossing the minute gets
    # at most one more window of five).
    assert codes[:5] == [201] * 5 and 429 in codes and codes.count(201) <= 10
    with eng.connect() as c:
        roles = c.execute(text("SELECT DISTINCT role FROM app_user WHERE username LIKE 'new%'"
                               " AND username NOT LIKE 'new-%'"))
        assert [r.role for r in roles] == ["resident"]


def _rows(eng: Any) -> pd.DataFrame:
    with eng.connect() as c:
        return pd.read_sql(text("SELECT id, street_code, community_code, grid_code, status,"
                                " amber_at, resolve_due, closed_at, reported_at, department_ids"
                                " FROM incident"), c)


def _sla(r: Any, now: datetime) -> str:
    if r.status in ("closed", "duplicate"):
        return "none"
    return "red" if now >= r.resolve_due else "amber" if now >= r.amber_at else "green"


@pytest.mark.parametrize("by", ["street", "community", "grid", "department"])
def test_counts_match_the_rows(world: Any, by: str) -> None:
    client, eng, _ = world
    got = client.get("/v1/console/counts", params={"by": by},
                     headers=_bearer(client, "cmd")).json()
    rows = _rows(eng)
    now = datetime.now(UTC)
    rows["sla"] = [_sla(r, now) for r in rows.itertuples()]
    if by == "department":
        with eng.connect() as c:
            codes = dict(c.execute(text("SELECT id, code FROM department")).all())
        rows = rows.explode("department_ids")
        rows["key"] = rows["department_ids"].map(codes)
    else:
        rows["key"] = rows[f"{by}_code"]
    want = {}
    for key, g in rows.groupby("key"):
        s = Counter(g["sla"])
        want[key] = [s["green"] + s["amber"] + s["red"], s["green"], s["amber"], s["red"],
                     int((g["status"] == "closed").sum())]
    assert {r["code"]: [r["open"], r["green"], r["amber"], r["red"], r["closed"]]
            for r in got} == want
    assert all(r["name"] for r in got)  # Chinese names, never the code alone
    assert client.get("/v1/console/counts", headers=_bearer(client, "res")).status_code == 403


def test_trend_counts_days_in_china_standard_time(world: Any) -> None:
    client, eng, _ = world
    got = client.get("/v1/console/trend", params={"days": 7},
                     headers=_bearer(client, "cmd")).json()
    assert len(got) == 7
    tz = ZoneInfo("Asia/Shanghai")
    rows = _rows(eng)
    rep = Counter(t.astimezone(tz).date().isoformat() for t in rows["reported_at"])
    clo = Counter(t.astimezone(tz).date().isoformat() for t in rows["closed_at"].dropna())
    assert got[-1]["day"] == datetime.now(tz).date().isoformat()
    assert {d["day"]: d["reported"] for d in got if d["reported"]} == dict(rep)
    assert {d["day"]: d["closed"] for d in got if d["closed"]} == dict(clo)


def test_points_and_the_refresh_since(world: Any) -> None:
    client, eng, city = world
    h = _bearer(client, "cmd")
    first = client.get("/v1/console/points", headers=h).json()
    now = datetime.now(UTC)
    rows = _rows(eng)
    by_id = {r[0]: r for r in first["rows"]}
    assert set(by_id) == set(rows["id"])  # every open case and the one closed yesterday
    for r in rows.itertuples():
        assert by_id[r.id][3] == _sla(r, now)
    again = client.get("/v1/console/points", params={"since": first["now"]}, headers=h).json()
    assert again["rows"] == []
    # the next refresh asks from the overlap before the answer (IncidentSettings)
    overlap = datetime.fromisoformat(first["now"]) - datetime.fromisoformat(first["next_since"])
    assert overlap == timedelta(seconds=30)
    p = city["grid"].to_crs(4326).iloc[5].geometry.representative_point()
    new = client.post("/v1/incidents", headers=_bearer(client, "res"),
                      json={"category": "snow_ice", "lon": p.x, "lat": p.y}).json()["id"]
    later = client.get("/v1/console/points", params={"since": first["now"]}, headers=h).json()
    assert [r[0] for r in later["rows"]] == [new]
    assert abs(later["rows"][0][1] - p.x) < 1e-6 and abs(later["rows"][0][2] - p.y) < 1e-6
    # The grid worker sees only their own grid's cases.
    mine = client.get("/v1/console/points", headers=_bearer(client, "wrk")).json()["rows"]
    assert {r[6] for r in mine} <= {city["grid"].iloc[0]["code"]}


def test_refresh_keeps_a_case_committed_after_the_answer(world: Any) -> None:
    """A case stamped inside a transaction still open when the map asked (its ``updated_at``
    earlier than the answer's ``now``) comes with the next refresh from ``next_since``; asked
    from ``now`` itself, it would be missed for good."""
    from geo.incidents.workflow import urge

    client, eng, _ = world
    h = _bearer(client, "cmd")
    rows = _rows(eng)
    target = int(rows[~rows["status"].isin(["closed", "duplicate"])]["id"].iloc[0])
    settings = client.app.state.incident_settings
    for overlap in (30.0, 0.0):  # the overlap, then the oldest open write transaction alone
        client.app.state.incident_settings = settings.model_copy(
            update={"map_refresh_overlap_s": overlap})
        try:
            with eng.connect() as c:
                tx = c.begin()
                before = datetime.now(UTC)
                urge(c, target, actor="test:slow-transaction")  # stamped, not yet committed
                answer = client.get("/v1/console/points", params={"since": before.isoformat()},
                                    headers=h).json()
                assert target not in [r[0] for r in answer["rows"]]  # not visible yet
                tx.commit()
        finally:
            client.app.state.incident_settings = settings
        assert datetime.fromisoformat(answer["next_since"]) < before + timedelta(seconds=1)
        refresh = client.get("/v1/console/points", params={"since": answer["next_since"]},
                             headers=h).json()
        assert target in [r[0] for r in refresh["rows"]], overlap
        naive = client.get("/v1/console/points", params={"since": answer["now"]},
                           headers=h).json()
        assert target not in [r[0] for r in naive["rows"]]
    # a cursor never moves back past the one it was given (a standby with no replay time)
    later = datetime.now(UTC) + timedelta(minutes=5)
    again = client.get("/v1/console/points", params={"since": later.isoformat()},
                       headers=h).json()
    assert datetime.fromisoformat(again["next_since"]) >= later


def test_grid_team_gaps_agree_with_the_database_rule(world: Any) -> None:
    client, eng, city = world
    h = _bearer(client, "cmd")
    codes = list(city["grid"]["code"][:3])
    with eng.begin() as c:
        c.execute(text("DELETE FROM grid_team_member WHERE grid_code = :g AND role IN"
                       " ('grid_leader', 'market_supervisor')"), {"g": codes[1]})
        c.execute(text("DELETE FROM grid_team_member WHERE grid_code = :g AND role IN"
                       " ('grid_worker', 'volunteer')"), {"g": codes[2]})
        rule = dict(c.execute(text("SELECT grid_code, complete_2_5_n FROM grid_team_summary"
                                   " WHERE grid_code = ANY(:g)"), {"g": codes}).all())
    got = {g: client.get(f"/v1/console/grids/{g}/team", headers=h).json() for g in codes}
    for g in codes:
        assert got[g]["complete"] == rule[g], g
    assert {x["role"] for x in got[codes[1]]["gaps"]} == {"grid_leader", "market_supervisor"}
    assert {x["role"] for x in got[codes[2]]["gaps"]} == {"grid_worker"}
    assert client.get("/v1/console/grids/123/team", headers=h).status_code == 422
    outside = city["grid"].iloc[1]["code"]
    assert client.get(f"/v1/console/grids/{outside}/team",
                      headers=_bearer(client, "wrk")).status_code == 403


def test_basemap_is_simplified_geojson_of_the_callers_area(world: Any) -> None:
    client, _, city = world
    fc = client.get("/v1/console/basemap/grid", headers=_bearer(client, "wrk")).json()
    assert [f["properties"]["code"] for f in fc["features"]] == [city["grid"].iloc[0]["code"]]
    everything = client.get("/v1/console/basemap/grid", headers=_bearer(client, "cmd")).json()
    assert len(everything["features"]) == len(city["grid"])
    ref = city["grid"].to_crs(4326).set_index("code").geometry
    for f in everything["features"]:
        g = to_shape(f["geometry"])
        assert g.symmetric_difference(ref[f["properties"]["code"]]).area \
            < 0.01 * ref[f["properties"]["code"]].area


def test_pages_are_gated_by_role(world: Any) -> None:
    client, _, _ = world
    client.cookies.clear()
    r = client.get("/console/commander", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    assert client.get("/console/login").status_code == 200
    _session(client, "res")
    assert client.get("/console/commander").status_code == 403
    assert client.get("/console/worker").status_code == 403
    r = client.get("/console", follow_redirects=False)
    assert r.headers["location"] == "/console/resident"
    page = client.get("/console/resident")
    assert page.status_code == 200 and "居民随手拍" in page.text
    assert "https://" not in page.text and "http://" not in page.text.replace(
        "http://www.w3.org", "")
    _session(client, "cmd")
    assert client.get("/console/analyst").status_code == 200
    assert client.get("/console/planner").status_code == 403  # the map editor: planners only
    assert client.get("/console/nothing").status_code == 404
    client.cookies.clear()


@pytest.fixture(scope="module")
def runs(fresh_database: Any) -> Any:
    eng = make_engine(fresh_database(), pool_size=4)
    x0, y0 = ORIGIN_M
    with eng.begin() as c:
        make_lattice(c, nx=12, ny=6)
        add_station(c, "S1", x0 + 150, y0 + 200)
        rows = []
        for i, (x, y, r) in enumerate([(160, 210, 10), (1000, 300, 30), (1050, 320, 20)]):
            lon, lat = to_wgs84(x0 + x, y0 + y)
            rows.append({"c": f"B{i}", "lon": lon, "lat": lat, "r": r})
        c.execute(text("INSERT INTO building (code, name, location, residents, households,"
                       " grid_code) VALUES (:c, '楼' || :c, ST_SetSRID(ST_MakePoint(:lon, :lat),"
                       " 4326), :r, 1, '350104001001001')"), rows)
        create_user(c, "ana", PASSWORD, "planner", area_code="350104", settings=AUTH)
        settings = CircleSettings()
        circles = build_circles(c, settings, tiers_m=[300, 500])
        coverage = run_coverage(c, settings, circles_run_id=circles)
        siting = run_siting(c, settings, k=1, coverage_run_id=coverage)
    app = create_app(engine=eng, auth_settings=AUTH)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, {"circles": circles, "uncovered": coverage, "sites": siting}
    eng.dispose()


@pytest.mark.parametrize("what", ["circles", "uncovered", "sites"])
def test_exports_read_back(runs: Any, what: str, tmp_path: Any) -> None:
    client, ids = runs
    h = _bearer(client, "ana")
    url = f"/v1/console/export/{ids[what]}"
    src = client.get(url, params={"what": what, "format": "geojson"}, headers=h)
    assert src.status_code == 200, src.text
    fc = json.loads(src.content)
    assert fc["type"] == "FeatureCollection" and fc["features"]
    gpkg = client.get(url, params={"what": what, "format": "gpkg"}, headers=h)
    assert gpkg.status_code == 200 and gpkg.headers["content-type"].startswith(
        "application/geopackage")
    path = tmp_path / "x.gpkg"
    path.write_bytes(gpkg.content)
    back = gpd.read_file(path)
    assert len(back) == len(fc["features"]) and back.crs.to_epsg() == 4326
    want = gpd.GeoDataFrame.from_features(fc["features"], crs=4326)
    assert back.geometry.union_all().symmetric_difference(want.geometry.union_all()).area \
        < 1e-12
    csv = client.get(url, params={"what": what, "format": "csv"}, headers=h)
    table = pd.read_csv(io.StringIO(csv.content.decode("utf-8-sig")))
    assert len(table) == len(fc["features"]) and "wkt" in table.columns
    if what == "uncovered":
        assert set(table["name"]) == {"楼B1", "楼B2"}
    assert client.get(url, params={"what": what}, headers=_bearer(client, "ana") | {
        "Authorization": ""}).status_code == 401


def test_naive_times_are_not_shown(world: Any) -> None:
    """Times leave the API with their offset (the page shows them in China Standard Time)."""
    client, _, _ = world
    got = client.get("/v1/console/points", headers=_bearer(client, "cmd")).json()
    assert datetime.fromisoformat(got["now"]).utcoffset() == timedelta(0)


def test_demo_people_sign_in_to_their_views(world: Any) -> None:
    """``wangge demo`` prints a signed-in path per role; each leads to that role's view."""
    from cli.serve import console_paths
    from geo.samples.demo import reset_demo_people

    client, eng, _ = world
    with eng.begin() as c:
        people = reset_demo_people(c, "demo-password-1")
    out = console_paths("http://127.0.0.1:8000", people, "demo-password-1")
    assert "http://127.0.0.1:8000/console " in out
    for name, role in people.items():
        line = next(x for x in out.splitlines() if f"u={name}&" in x)
        path = line.split("8000", 1)[1]
        client.cookies.clear()
        me = _session(client, name, "demo-password-1")
        assert me["role"] == role and path.endswith(f"next={me['home']}")
        assert client.get(me["home"]).status_code == 200
    client.cookies.clear()


def test_a_disabled_accounts_session_cookie_stops_working(world: Any) -> None:
    """The cookie carries the same token as a bearer: disabling the account ends it too."""
    from api.security import forget_credentials
    from geo.auth.accounts import set_active

    client, eng, _ = world
    with eng.begin() as c:
        create_user(c, "gone", PASSWORD, "resident", settings=AUTH)
    _session(client, "gone")
    assert client.get("/v1/auth/me").json()["name"] == "gone"
    with eng.begin() as c:
        set_active(c, "gone", False)
    forget_credentials(client.app)
    assert client.get("/v1/auth/me").status_code == 401
    client.cookies.clear()
