"""The city's command level (issue 16): commanders scoped to a city or a district, escalation up
to the city, 市委督单 (Jilin), roll-ups per district and city, city- and district-level
departments, and the seeds' hierarchies (Yanji's five levels, Ordos's 市-旗区-街道-社区).

Cases are filed at points chosen inside grids of the synthetic 3-district city; which district
each case is in comes from the point's grid code (checked with PostGIS), not from the code under
test."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import shapely
from factories import bearer_headers, city_engine
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.main import create_app
from geo import incidents as inc
from geo.auth.service import AuthSettings, Scope
from geo.core.db import make_engine
from geo.core.errors import Forbidden
from geo.data.store import write_layers
from geo.lookup import locate_point
from geo.samples.city import generate_districts

AUTH = AuthSettings(jwt_secret="city-test-" + "z" * 32, enforce_access=True)
SETTINGS = inc.IncidentSettings()
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # a Monday, 10:00 in Beijing
DISTRICTS = ("350102", "350103", "350104")
USERS = {
    "city_commander": ("commander", "3501"),
    "district_commander": ("commander", "350103"),
    "province_admin": ("commander", "35"),
}


@pytest.fixture(scope="module")
def city(fresh_database: Any) -> Iterator[dict[str, Any]]:
    with city_engine(fresh_database(), USERS, AUTH, districts=3, grids=700, buildings=1400,
                     stations=10, seed=5) as (eng, layers):
        yield {"engine": eng, "cases": _one_case_a_district(eng, layers), "layers": layers}


def _one_case_a_district(eng: Any, layers: dict[str, Any]) -> dict[str, int]:
    """A report inside the first grid of each district (its holder checked in PostGIS)."""
    cases: dict[str, int] = {}
    with eng.begin() as conn:
        for d in DISTRICTS:
            grids = layers["grid"][layers["grid"]["code"].str.startswith(d)]
            p = shapely.point_on_surface(grids.geometry.values[0])
            holder = conn.execute(text(
                "SELECT code FROM area_current WHERE level = 'grid' AND "
                "ST_Contains(geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326))"),
                {"x": p.x, "y": p.y}).scalar_one()
            assert holder.startswith(d)
            r = inc.report(conn, category="snow_ice", lon=p.x, lat=p.y, settings=SETTINGS,
                           now=NOW, locator=locate_point)
            cases[d] = r.id
    return cases


def _district_cases(conn: Any, scope: Scope) -> set[str]:
    rows = inc.list_incidents(conn, scope=scope, limit=100)
    items = rows["items"] if isinstance(rows, dict) else rows
    return {r["grid_code"][:6] for r in items}


def test_city_commander_sees_every_district_a_district_commander_only_theirs(city):
    with city["engine"].connect() as conn:
        assert _district_cases(conn, Scope(area="3501")) == set(DISTRICTS)
        assert _district_cases(conn, Scope(area="35")) == set(DISTRICTS)
        assert _district_cases(conn, Scope(area="350103")) == {"350103"}


def test_overdue_case_escalates_up_to_the_city_and_stops(city):
    eng, case = city["engine"], city["cases"]["350102"]
    with eng.connect() as conn:
        tx = conn.begin()
        seen = []
        t = NOW
        for _ in range(5):
            t += timedelta(days=3)
            seen += [e["to"] for e in inc.escalate_overdue(conn, settings=SETTINGS, now=t)
                     if e["incident_id"] == case]
        assert seen == ["street", "district", "city"]
        assert conn.execute(text("SELECT escalation_level FROM incident WHERE id = :i"),
                            {"i": case}).scalar() == "city"
        tx.rollback()


def test_jilin_city_supervision_is_a_city_step(city):
    """市委督单 (Jilin's six steps): the city supervises overdue cases of any district; a
    district commander may not."""
    eng = city["engine"]
    late = NOW + timedelta(days=30)
    with eng.connect() as conn:
        tx = conn.begin()
        with pytest.raises(Forbidden):
            inc.supervise_overdue(conn, actor="district", now=late, scope=Scope(area="350103"))
        done = inc.supervise_overdue(conn, actor="city", now=late, scope=Scope(area="3501"))
        assert {d["district"] for d in done} == set(DISTRICTS)
        assert all(d["level"] == "city" and d["overdue"] for d in done)
        hist = conn.execute(text(
            "SELECT note, detail->>'level' FROM incident_history WHERE action = 'supervise'"
        )).all()
        assert len(hist) == 3 and all(h == ("市委督单", "city") for h in hist)
        tx.rollback()


def test_api_scoping_and_supervision_by_role(city):
    app = create_app(engine=city["engine"], auth_settings=AUTH)
    with TestClient(app, raise_server_exceptions=False) as client:
        h = bearer_headers(client, USERS)
        case_a = city["cases"]["350102"]
        r = client.get(f"/v1/incidents/{case_a}", headers=h["district_commander"])
        assert r.status_code == 403
        r = client.get(f"/v1/incidents/{case_a}", headers=h["city_commander"])
        assert r.status_code == 200
        r = client.post(f"/v1/incidents/{case_a}/supervise", headers=h["district_commander"],
                        json={"note": "督单"})
        assert r.status_code == 403
        r = client.post(f"/v1/incidents/{case_a}/supervise", headers=h["city_commander"],
                        json={"note": "市委督单"})
        assert r.status_code == 200 and r.json()["level"] == "city", r.text
        r = client.get("/v1/incidents/rollup", headers=h["district_commander"])
        assert r.status_code == 200
        assert [x["code"] for x in r.json()["district"]] == ["350103"]
        r = client.get("/v1/incidents/rollup", headers=h["city_commander"])
        body = r.json()
        assert [x["code"] for x in body["district"]] == list(DISTRICTS)
        assert [x["code"] for x in body["city"]] == ["3501"]


def test_rollup_counts_match_the_cases(city):
    with city["engine"].connect() as conn:
        up = inc.rollup(conn, now=NOW)
        n = conn.execute(text("SELECT count(*) FROM incident")).scalar()
        per_district = dict(conn.execute(text(
            "SELECT left(grid_code, 6), count(*) FROM incident GROUP BY 1")).all())
    assert [(r["code"], r["incidents"]) for r in up["city"]] == [("3501", n)]
    assert {r["code"]: r["incidents"] for r in up["district"]} == per_district


def test_city_and_district_departments_route_by_area(city):
    """A city bureau (area 3501) takes cases of every district; a district department (area
    350103) only those of its district."""
    eng, layers = city["engine"], city["layers"]
    with eng.connect() as conn:
        tx = conn.begin()
        conn.execute(text(
            "INSERT INTO department (code, name, level, area_code) VALUES "
            "('city_water', '市水务局', 'city', '3501'), "
            "('d3_water', '合成2区水务局', 'district', '350103')"))
        conn.execute(text(
            "INSERT INTO category_department (category_code, department_id) "
            "SELECT 'pipe_burst', id FROM department WHERE code IN ('city_water', 'd3_water')"))
        got = {}
        for d in ("350102", "350103"):
            grids = layers["grid"][layers["grid"]["code"].str.startswith(d)]
            p = shapely.point_on_surface(grids.geometry.values[1])
            r = inc.report(conn, category="pipe_burst", lon=p.x, lat=p.y, settings=SETTINGS,
                           now=NOW, locator=locate_point)
            got[d] = set(conn.execute(text(
                "SELECT d.code FROM incident i JOIN department d ON d.id = ANY(i.department_ids)"
                " WHERE i.id = :i"), {"i": r.id}).scalars())
        tx.rollback()
    assert "city_water" in got["350102"] and "d3_water" not in got["350102"]
    assert {"city_water", "d3_water"} <= got["350103"]


def test_yanji_five_levels_city_to_compound(city):
    """Yanji's five-level linkage: city → street → community → grid → compound (院落); a
    lookup names the city above the district, and a compound sits in its grid."""
    eng, layers = city["engine"], city["layers"]
    grid = layers["grid"].iloc[5]
    p = shapely.point_on_surface(grid.geometry)
    found = locate_point(eng, p.x, p.y).as_dict()
    chain = [a["type"] for a in found["areas"]]
    assert chain[:2] == ["province", "city"]
    assert [found[k]["code"] for k in ("city", "street", "community", "grid")] == [
        grid["code"][:4], grid["code"][:9], grid["code"][:12], grid["code"]]
    with eng.connect() as conn:
        tx = conn.begin()
        conn.execute(text(
            "INSERT INTO compound (code, name, community_code, geom) VALUES "
            "('Y1', '院落一', :c, ST_Multi(ST_Buffer(ST_SetSRID(ST_MakePoint(:x, :y), 4326), "
            "0.0001)))"), {"c": grid["code"][:12], "x": p.x, "y": p.y})
        holder = conn.execute(text(
            "SELECT a.code FROM compound c JOIN area_current a ON a.level = 'grid' "
            "AND ST_Contains(a.geom, c.geom) WHERE c.code = 'Y1'")).scalar()
        tx.rollback()
    assert holder == grid["code"]


def test_ordos_city_banner_street_community(fresh_database):
    """Ordos: 市 (1506) - 旗区 (banner 150621) - 街道 - 社区, banners as county-level
    districts; the city row is derived from its banners."""
    eng = make_engine(fresh_database())
    layers = generate_districts(districts=2, grids=300, buildings=300, stations=0, seed=9,
                                team=False)
    codes = {"350102": "150621", "350103": "150602"}
    names = {"150621": "达拉特旗", "150602": "东胜区"}

    def recode(v: str) -> str:
        return codes[v[:6]] + v[6:]
    for name in ("district", "street", "community", "grid", "building"):
        gdf = layers[name]
        for col in ("code", "parent_code", "grid_code"):
            if col in gdf.columns:
                gdf[col] = [recode(c) if isinstance(c, str) and len(c) >= 6 else c
                            for c in gdf[col]]
    layers["district"]["name"] = [names[c] for c in layers["district"]["code"]]
    layers["city"] = layers["city"].assign(code=["1506"], name=["鄂尔多斯市"])
    layers["province"] = layers["province"].assign(code=["15"], name=["内蒙古自治区"])
    layers.pop("station")
    try:
        with eng.begin() as conn:
            write_layers(conn, layers)
        grid = layers["grid"][layers["grid"]["code"].str.startswith("150621")].iloc[0]
        p = shapely.point_on_surface(grid.geometry)
        found = locate_point(eng, p.x, p.y).as_dict()
        assert [(a["type"], a["name"]) for a in found["areas"][:3]] == [
            ("province", "内蒙古自治区"), ("city", "鄂尔多斯市"), ("district", "达拉特旗")]
        assert found["street"]["code"].startswith("150621")
        assert found["community"]["parent_code"] == found["street"]["code"]
    finally:
        eng.dispose()
