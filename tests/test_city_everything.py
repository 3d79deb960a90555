"""Everything that works for one district works for the city (issue 16, item 7): circles and
coverage with kind shares per district and city, planning scoped per district, maps, OGC API
collections and the console's views, over a 3-district synthetic city.

Expected answers come from the layers given to the import (geopandas/shapely), not from the
code under test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import geopandas as gpd
import pytest
import shapely
from factories import bearer_headers, city_engine, served
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.main import create_app
from geo.auth.service import AuthSettings
from geo.circles.queue import stop_runner
from geo.circles.runs import CircleSettings
from geo.circles.shares import kind_shares

AUTH = AuthSettings(jwt_secret="city-everything-" + "q" * 32, enforce_access=True)
DISTRICTS = ("350102", "350103", "350104")
USERS = {
    "city_planner": ("planner", "3501"),
    "district_planner": ("planner", "350103"),
    "city_commander": ("commander", "3501"),
    "district_commander": ("commander", "350102"),
}


@pytest.fixture(scope="module")
def city(fresh_database: Any) -> Iterator[dict[str, Any]]:
    with city_engine(fresh_database(), USERS, AUTH, districts=3, grids=300, buildings=1500,
                     stations=30, seed=7) as (eng, layers):
        app = create_app(engine=eng, auth_settings=AUTH)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield {"engine": eng, "layers": layers, "client": client,
                   "h": bearer_headers(client, USERS)}
        stop_runner(eng)


def _wait(client: TestClient, rid: int, headers: dict[str, str]) -> dict[str, Any]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:
        run = client.get(f"/v1/circles/runs/{rid}", headers=headers).json()
        if run["status"] in ("done", "failed"):
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {rid} not done")


def _expected_shares(layers: dict[str, gpd.GeoDataFrame], n: int) -> dict[tuple[str, str], tuple]:
    """{(area code cut to n, kind): (communities_with, communities, streets_with, streets)}."""
    comm, st = layers["community"], layers["station"]
    located = gpd.sjoin(st[st["community_code"].isna()],
                        comm[["code", "geometry"]].rename(columns={"code": "comm"}),
                        predicate="intersects")
    have = {(k, c) for k, c in zip(st["kind"], st["community_code"], strict=True) if c}
    have |= set(zip(located["kind"], located["comm"], strict=True))
    kinds = sorted(set(layers["station"]["kind"]))
    out: dict[tuple[str, str], tuple] = {}
    for area in {c[:n] for c in comm["code"]}:
        cs = [c for c in comm["code"] if c.startswith(area)]
        ss = [s for s in layers["street"]["code"] if s.startswith(area)]
        for k in kinds:
            cw = sum((k, c) in have for c in cs)
            sw = sum(any(kind == k and c.startswith(s) for kind, c in have) for s in ss)
            out[(area, k)] = (cw, len(cs), sw, len(ss))
    return out


@pytest.mark.parametrize("per", ["district", "city"])
def test_kind_shares_per_district_and_city(city: dict[str, Any], per: str) -> None:
    n = {"district": 6, "city": 4}[per]
    expected = _expected_shares(city["layers"], n)
    with city["engine"].connect() as conn:
        got = {(r["area"], r["kind"]): (r["communities_with"], r["communities"],
                                        r["streets_with"], r["streets"])
               for r in kind_shares(conn, CircleSettings(), per=per)}
    assert {a for a, _ in got} == {a for a, _ in expected}
    if per == "district":
        assert {a for a, _ in got} == set(DISTRICTS)
    for key, want in expected.items():
        assert got[key] == want, key


def test_circles_and_coverage_across_the_city(city: dict[str, Any]) -> None:
    client, h = city["client"], city["h"]
    r = client.post("/v1/circles/runs", json={"tiers_m": [300]}, headers=h["city_planner"])
    assert r.status_code == 202, r.text
    run = _wait(client, r.json()["id"], h["city_planner"])
    assert run["status"] == "done", run
    fc = client.get(f"/v1/circles/runs/{run['id']}/circles", params={"limit": 1000},
                    headers=h["city_planner"]).json()
    stations = city["layers"]["station"]
    district_of_station = {
        code: d for d in DISTRICTS
        for code, geom in zip(stations["code"], stations.geometry, strict=True)
        if shapely.contains(city["layers"]["district"].set_index("code").geometry[d], geom)}
    seen = {f["properties"]["station_code"] for f in fc["features"]}
    assert {district_of_station[s] for s in seen} == set(DISTRICTS)
    # a district planner reads the circles of their district only
    own = client.get(f"/v1/circles/runs/{run['id']}/circles", params={"limit": 1000},
                     headers=h["district_planner"]).json()
    own_codes = {f["properties"]["station_code"] for f in own["features"]}
    assert own_codes and {district_of_station[s] for s in own_codes} == {"350103"}

    r = client.post("/v1/circles/coverage", json={"circles_run_id": run["id"]},
                    headers=h["city_planner"])
    assert r.status_code == 202, r.text
    cov = _wait(client, r.json()["id"], h["city_planner"])
    assert cov["status"] == "done", cov
    summary = cov["summary"]
    assert {x["area"] for x in summary["kind_shares_by_district"]} == set(DISTRICTS)
    assert {x["area"] for x in summary["kind_shares_by_city"]} == {"3501"}
    total = {x["kind"]: x["communities_with"] for x in summary["kind_shares"]}
    for kind, n in total.items():
        assert sum(x["communities_with"] for x in summary["kind_shares_by_district"]
                   if x["kind"] == kind) == n


def test_planning_is_scoped_per_district(city: dict[str, Any]) -> None:
    client, h, eng = city["client"], city["h"], city["engine"]
    grids = city["layers"]["grid"]
    mine = grids[grids["code"].str.startswith("350103")]
    theirs = grids[grids["code"].str.startswith("350102")]
    households = city["layers"]["building"].groupby("grid_code")["households"].sum()

    # two neighbouring grids of one community whose merge keeps within 150-500 households
    # (shapely decides "neighbouring", the import's buildings the households)
    def pair(gdf: gpd.GeoDataFrame) -> list[str]:
        for _, a in gdf.iterrows():
            for _, b in gdf.iterrows():
                if a["code"] < b["code"] and a["parent_code"] == b["parent_code"] and \
                        a.geometry.intersection(b.geometry).length > 0 and \
                        households.get(a["code"], 0) + households.get(b["code"], 0) <= 500:
                    return [a["code"], b["code"]]
        raise AssertionError("no neighbours")

    r = client.post("/v1/planning/preview/merge", json={"codes": pair(theirs)},
                    headers=h["district_planner"])
    assert r.status_code == 403, r.text
    with eng.connect() as conn:
        before = conn.execute(text(
            "SELECT count(*), max(generation_low) FROM area WHERE left(code, 6) = '350102'"
        )).one()
    r = client.post("/v1/planning/preview/merge", json={"codes": pair(mine)},
                    headers=h["district_planner"])
    assert r.status_code == 200, r.text
    r = client.post("/v1/planning/merge", json={"codes": pair(mine)},
                    headers=h["district_planner"])
    assert r.status_code in (200, 201), r.text
    with eng.connect() as conn:
        after = conn.execute(text(
            "SELECT count(*), max(generation_low) FROM area WHERE left(code, 6) = '350102'"
        )).one()
    assert tuple(after) == tuple(before)  # the other district's rows untouched
    gens = client.get("/v1/planning/generations", headers=h["city_planner"]).json()
    items = gens["items"] if isinstance(gens, dict) else gens
    assert any(g.get("districts") == ["350103"] for g in items), items[:3]


def test_maps_and_console_roll_up_to_the_city(city: dict[str, Any]) -> None:
    client, h = city["client"], city["h"]
    page = client.get("/maps/grids", headers=h["city_commander"])
    assert page.status_code == 200, page.text[:300]
    for d in DISTRICTS:
        assert d in page.text
    assert client.get("/maps/grids", params={"within": "350103"},
                      headers=h["district_commander"]).status_code == 403
    # the console's boundaries and counts for a city commander: every district
    r = client.get("/v1/console/basemap/district", headers=h["city_commander"])
    assert r.status_code == 200, r.text
    assert {f["properties"]["code"] for f in r.json()["features"]} == set(DISTRICTS)
    r = client.get("/v1/console/basemap/district", headers=h["district_commander"])
    assert {f["properties"]["code"] for f in r.json()["features"]} == {"350102"}
    r = client.get("/v1/console/counts", params={"by": "district"}, headers=h["city_commander"])
    assert r.status_code == 200, r.text
    r = client.get("/v1/console/counts", params={"within": "3501"},
                   headers=h["city_commander"])
    assert r.status_code == 200, r.text


def test_ogc_collections_serve_every_district(city: dict[str, Any]) -> None:
    client, h = city["client"], city["h"]
    grids = city["layers"]["grid"]
    r = client.get("/ogc/collections/grids/items", params={"limit": 1},
                   headers=h["city_commander"])
    assert r.status_code == 200, r.text
    with city["engine"].connect() as conn:
        current = conn.execute(text(
            "SELECT count(*) FROM area_current WHERE level = 'grid'")).scalar_one()
    assert r.json()["numberMatched"] == current
    # a bbox across the border of two districts answers grids of both (shapely decides which)
    dist = city["layers"]["district"].set_index("code").geometry
    border = shapely.intersection(dist["350102"], dist["350103"])
    assert not border.is_empty
    c = border.centroid
    box = (c.x - 0.003, c.y - 0.003, c.x + 0.003, c.y + 0.003)
    r = client.get("/ogc/collections/grids/items",
                   params={"bbox": ",".join(map(str, box)), "limit": 1000},
                   headers=h["city_commander"])
    assert r.status_code == 200, r.text
    got = {f["properties"]["code"][:6] for f in r.json()["features"]}
    want = {code[:6] for code, g in zip(grids["code"], grids.geometry, strict=True)
            if g.intersects(shapely.box(*box))}
    assert got >= {"350102", "350103"} and want >= got


def test_city_commander_console_shows_districts_in_chromium(city: dict[str, Any]) -> None:
    """A city commander's command view in real Chromium: the three districts' boundaries on the
    map and the counts per district (区县) first."""
    from pathlib import Path

    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian chromium not installed")
    from playwright.sync_api import sync_playwright

    app = create_app(engine=city["engine"], auth_settings=AUTH)
    with served(app) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.goto(f"{base}/console/login")
        page.get_by_label("用户名").first.fill("city_commander")
        page.get_by_label("密码", exact=True).first.fill("city_commander-password")
        page.get_by_role("button", name="登录").click()
        page.wait_for_url(lambda url: "/console/login" not in url)
        page.goto(f"{base}/console/commander")
        try:
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        except Exception as exc:
            raise AssertionError(f"commander view not ready: {errors}") from exc
        drawn = page.evaluate(
            "() => window.commander.base.district.getLayers()"
            ".map((l) => l.feature.properties.code).sort()")
        assert drawn == list(DISTRICTS)
        tab = page.locator(".tabs [data-by='district']")
        assert tab.get_attribute("aria-selected") == "true" and tab.inner_text() == "区县"
        Path("tests/artifacts").mkdir(exist_ok=True)
        page.screenshot(path="tests/artifacts/city-commander.png", full_page=True)
        assert errors == [], errors
        browser.close()
