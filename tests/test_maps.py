"""Maps: compact GeoJSON, offline assets, the map queries, and each map rendered in Chromium.

Browser tests drive Debian's /usr/bin/chromium through Playwright (no downloaded browser) and
check, for every page: the number of features drawn in the DOM against the input, no console
error, no request leaving the machine. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from browsers import is_local
from pyproj import Geod
from shapely.geometry import Point, box
from sqlalchemy import text

from geo.data import mapdata
from maps import assets
from maps.base import ExternalAsset, MapSettings, feature_collection, to_html
from maps.coverage_map import coverage_map
from maps.grid_map import NETWORKS, balance_status, grid_map
from maps.incident_map import incident_map

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

X0, Y0, STEP = 119.30, 26.05, 0.004  # 2 x 3 grids of ~400 m x 445 m near Fuzhou


@pytest.fixture(scope="module", autouse=True)
def _assets() -> None:
    assets.fetch()  # no-op when installed


# --------------------------------------------------------------------------- fixture data


def _grids() -> gpd.GeoDataFrame:
    rows = []
    hh = [100, 200, 300, 600, 450, 40]
    for i in range(6):
        cx, cy = i % 3, i // 3
        rows.append(
            {
                "code": f"350104001001{i + 1:03d}",
                "parent_code": "350104001001",
                "name": f"第{i + 1}网格",
                "responsible_body": "社区",
                "households": hh[i],
                "team": [
                    {"role": "grid_leader", "name": f"张{i}", "phone": "1380000"},
                    {"role": "community_police", "name": f"李{i}", "phone": "110"},
                ],
                "geometry": box(
                    X0 + cx * STEP, Y0 + cy * STEP, X0 + (cx + 1) * STEP, Y0 + (cy + 1) * STEP
                ),
            }
        )
    return gpd.GeoDataFrame(rows, crs=4326)


def _community() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"code": ["350104001001"], "name": ["测试社区"]},
        geometry=[box(X0, Y0, X0 + 3 * STEP, Y0 + 2 * STEP)],
        crs=4326,
    )


def _stations() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "code": ["S1", "S2", "S3"],
            "name": ["党群站", "长者食堂", "卫生站"],
            "kind": ["party_service_station", "elder_canteen", "health_station"],
            "community_code": ["350104001001"] * 3,
        },
        geometry=[
            Point(X0 + 0.002, Y0 + 0.002),
            Point(X0 + 0.010, Y0 + 0.006),
            Point(X0 + 0.006, Y0 + 0.002),
        ],
        crs=4326,
    )


def _buildings(n: int = 60, seed: int = 1) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    xs = X0 + rng.uniform(0, 3 * STEP, n)
    ys = Y0 + rng.uniform(0, 2 * STEP, n)
    col = np.minimum((xs - X0) // STEP, 2).astype(int)
    row = np.minimum((ys - Y0) // STEP, 1).astype(int)
    codes = [f"350104001001{r * 3 + c + 1:03d}" for r, c in zip(row, col, strict=True)]
    return gpd.GeoDataFrame(
        {
            "code": [f"B{i:04d}" for i in range(n)],
            "households": rng.integers(1, 40, n),
            "grid_code": codes,
        },
        geometry=gpd.points_from_xy(xs, ys),
        crs=4326,
    )


def _incidents(n: int = 40, seed: int = 2) -> gpd.GeoDataFrame:
    b = _buildings(n, seed)
    statuses = np.array(["reported", "checked_in", "in_progress", "closed"])
    rng = np.random.default_rng(seed)
    return gpd.GeoDataFrame(
        {
            "id": np.arange(1, n + 1),
            "status": statuses[rng.integers(0, 4, n)],
            "category": "test",
            "grid_code": b["grid_code"],
            "overdue": np.arange(n) % 5 == 0,
            "satisfaction": np.where(np.arange(n) % 3 == 0, np.nan, rng.integers(1, 6, n)),
        },
        geometry=b.geometry,
        crs=4326,
    )


# --------------------------------------------------------------------------- pure functions


def test_feature_collection_rounds_and_simplifies() -> None:
    # A square with 400 collinear-ish points on each edge (jitter 0.1 m): simplification at 2 m
    # must bring it back to ~5 vertices; every coordinate has at most 5 decimals.
    t = np.linspace(0, 1, 400)
    jitter = 1e-6 * np.sin(np.arange(400))
    edge = [(X0 + s * STEP, Y0 + j) for s, j in zip(t, jitter, strict=True)]
    ring = edge + [(X0 + STEP, Y0 + STEP), (X0, Y0 + STEP)]
    gdf = gpd.GeoDataFrame({"code": ["1"]}, geometry=[shapely.Polygon(ring)], crs=4326)
    fc = feature_collection(gdf, ["code"], simplify_m=2.0, decimals=5)
    coords = fc["features"][0]["geometry"]["coordinates"][0]
    assert len(coords) <= 6
    for x, y in coords:
        assert round(x, 5) == x and round(y, 5) == y
    assert fc["features"][0]["properties"] == {"code": "1"}
    # Area preserved within 1 %.
    area = shapely.Polygon(coords).area
    assert abs(area - gdf.geometry.iloc[0].area) / gdf.geometry.iloc[0].area < 0.01


def test_balance_status_against_rule() -> None:
    got = balance_status(pd.Series([149, 150, 500, 501, None]), 150, 500).tolist()
    assert got == ["under", "balanced", "balanced", "over", "under"]


def test_pages_reference_no_outside_asset() -> None:
    page = grid_map(_grids(), communities=_community(), asset_base="/static/vendor")
    srcs = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', page)
    assert srcs and all(s.startswith("/static/vendor/") for s in srcs)
    for s in srcs:
        assert (assets.VENDOR_DIR / s.removeprefix("/static/vendor/")).is_file()
    inline = grid_map(_grids(), communities=_community())
    assert not re.findall(r"<(?:script|link)[^>]+(?:src|href)=", inline)
    assert "cdn" not in " ".join(re.findall(r'(?:src|href)="([^"]+)"', inline)).lower()


def test_unknown_resource_is_refused() -> None:
    import folium
    from folium.plugins import Draw

    m = folium.Map(tiles=None)
    Draw().add_to(m)  # leaflet.draw: no local copy -> must not fall back to CDN
    with pytest.raises(ExternalAsset):
        to_html(m, asset_base=None)


def test_big_layer_switches_to_canvas() -> None:
    s = MapSettings(map_svg_max_features=3)
    page = grid_map(_grids(), settings=s, asset_base="/static/vendor")
    assert "L.canvas()" in page
    page = grid_map(_grids(), asset_base="/static/vendor")
    assert "L.canvas()" not in page


# --------------------------------------------------------------------------- database queries


def _load_city(conn) -> None:
    """Write the fixture city into the database with plain SQL (independent of the store)."""
    gen = conn.execute(text("INSERT INTO generation (kind) VALUES ('test') RETURNING id")).scalar()
    ins = text(
        "INSERT INTO area (level, code, parent_code, name, geom, generation_low,"
        " responsible_body, metric_srid) VALUES (:level, :code, :parent, :name,"
        " ST_Multi(ST_GeomFromText(:wkt, 4326)), :gen, :body, :srid)"
    )
    whole = box(X0, Y0, X0 + 3 * STEP, Y0 + 2 * STEP).wkt
    conn.execute(
        ins,
        [
            {
                "level": "district",
                "code": "350104",
                "parent": None,
                "name": "区",
                "wkt": whole,
                "gen": gen,
                "body": None,
                "srid": 32650,
            },
            {
                "level": "street",
                "code": "350104001",
                "parent": "350104",
                "name": "街道",
                "wkt": whole,
                "gen": gen,
                "body": None,
                "srid": None,
            },
            {
                "level": "community",
                "code": "350104001001",
                "parent": "350104001",
                "name": "社区",
                "wkt": whole,
                "gen": gen,
                "body": None,
                "srid": None,
            },
        ],
    )
    for g in _grids().itertuples():
        conn.execute(
            ins,
            {
                "level": "grid",
                "code": g.code,
                "parent": g.parent_code,
                "name": g.name,
                "wkt": g.geometry.wkt,
                "gen": gen,
                "body": g.responsible_body,
                "srid": None,
            },
        )
        for m in g.team:
            conn.execute(
                text(
                    "INSERT INTO grid_team_member (grid_code, role, name, phone)"
                    " VALUES (:g, :r, :n, :p)"
                ),
                {"g": g.code, "r": m["role"], "n": m["name"], "p": m["phone"]},
            )
    for b in _buildings().itertuples():
        conn.execute(
            text(
                "INSERT INTO building (code, households, grid_code, location) VALUES"
                " (:c, :h, :g, ST_SetSRID(ST_MakePoint(:x, :y), 4326))"
            ),
            {
                "c": b.code,
                "h": int(b.households),
                "g": b.grid_code,
                "x": b.geometry.x,
                "y": b.geometry.y,
            },
        )
    for s in _stations().itertuples():
        conn.execute(
            text(
                "INSERT INTO station (code, name, kind, community_code, location)"
                " VALUES (:c, :n, :k, :cc, ST_SetSRID(ST_MakePoint(:x, :y), 4326))"
            ),
            {
                "c": s.code,
                "n": s.name,
                "k": s.kind,
                "cc": s.community_code,
                "x": s.geometry.x,
                "y": s.geometry.y,
            },
        )
    conn.execute(
        text(
            "INSERT INTO incident_category (code, name_zh, name_en, resolve_workdays)"
            " VALUES ('test', '测试', 'test', 5)"
        )
    )
    for i in _incidents().itertuples():
        # Overdue cases were due yesterday, the others are due in three days.
        due = "now() - interval '1 day'" if i.overdue else "now() + interval '3 days'"
        rating = None if math.isnan(i.satisfaction) else int(i.satisfaction)
        conn.execute(
            text(
                "INSERT INTO incident (category_code, location, grid_code, status,"
                " rating, reported_at, checkin_due, amber_at, resolve_due) VALUES"
                " ('test', ST_SetSRID(ST_MakePoint(:x, :y), 4326), :g, :s, :r,"
                f" now() - interval '5 days', now(), now(), {due})"
            ),
            {"x": i.geometry.x, "y": i.geometry.y, "g": i.grid_code, "s": i.status, "r": rating},
        )


@pytest.fixture(scope="module")
def city_engine(fresh_database) -> Iterator:
    from geo.core.db import make_engine

    eng = make_engine(fresh_database(), pool_size=2)
    with eng.begin() as conn:
        _load_city(conn)
    yield eng
    eng.dispose()


def test_grids_for_map_sums_households_and_team(city_engine) -> None:
    with city_engine.connect() as conn:
        got = mapdata.grids_for_map(conn)
    expected = _buildings().groupby("grid_code")["households"].sum()
    assert len(got) == 6
    for row in got.itertuples():
        assert row.households == int(expected.get(row.code, 0))
        assert sorted(m["role"] for m in row.team) == ["community_police", "grid_leader"]
    assert got.crs.to_epsg() == 4326


def test_uncovered_buildings_match_geodesic_distance(city_engine) -> None:
    geod = Geod(ellps="WGS84")
    b, s = _buildings(), _stations()
    radius = 300.0
    near = np.zeros(len(b), dtype=bool)
    for st in s.geometry:
        _, _, d = geod.inv(
            b.geometry.x.to_numpy(),
            b.geometry.y.to_numpy(),
            np.full(len(b), st.x),
            np.full(len(b), st.y),
        )
        near |= d <= radius
    expected = set(b.loc[~near, "code"])
    with city_engine.connect() as conn:
        got = mapdata.uncovered_buildings(conn, radius_m=radius)
    assert 0 < len(expected) < len(b)
    assert set(got["code"]) == expected


def test_incidents_for_map_overdue(city_engine) -> None:
    inc = _incidents()
    working = inc["status"].isin(mapdata.WORKING_STATUSES)
    expected = int((inc["overdue"] & working).sum())
    with city_engine.connect() as conn:
        got = mapdata.incidents_for_map(conn)
    assert len(got) == len(inc)
    assert 0 < expected and int(got["overdue"].sum()) == expected
    # Satisfaction is the reporter's rating; mean per grid as a check.
    assert got["satisfaction"].isna().sum() == inc["satisfaction"].isna().sum()
    assert math.isclose(got["satisfaction"].mean(), inc["satisfaction"].mean())


# --------------------------------------------------------------------------- browser


class Page:
    """A page opened in Chromium with console errors and requests recorded."""

    def __init__(self, browser, name: str) -> None:
        self.name = name
        self.page = browser.new_page(viewport={"width": 1100, "height": 760})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open_html(self, html: str, tmp_path: Path) -> None:
        f = tmp_path / f"{self.name}.html"
        f.write_text(html, encoding="utf-8")
        self.page.goto(f.as_uri())
        self.page.wait_for_load_state("load")
        self.page.wait_for_timeout(300)

    def count(self, selector: str) -> int:
        return self.page.locator(selector).count()

    def cluster_total(self, selector: str) -> int:
        """Markers in clusters (the number on each cluster icon) plus unclustered markers."""
        return int(
            self.page.evaluate(
                """(sel) => Array.from(document.querySelectorAll(sel)).reduce(
                   (a, e) => a + parseInt(e.textContent || '0', 10), 0)""",
                selector,
            )
        )

    def finish(self) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}.png"))
        self.page.close()
        assert not self.errors, self.errors
        outside = [u for u in self.requests if not is_local(u)]
        assert not outside, outside


@pytest.mark.browser
def test_grid_map_in_browser(browser, tmp_path: Path) -> None:
    grids, comm, st = _grids(), _community(), _stations()
    page = Page(browser, "grid_map")
    page.open_html(
        grid_map(grids, communities=comm, streets=comm.assign(code="350104001"), stations=st),
        tmp_path,
    )
    assert page.count("path.wg-grid") == len(grids)
    # Balance rule 150..500: 100 and 40 under; 600 over; the rest balanced.
    assert page.count("path.wg-under") == 2
    assert page.count("path.wg-over") == 1
    assert page.count("path.wg-balanced") == 3
    assert page.count("path.wg-community") == 1 and page.count("path.wg-street") == 1
    assert page.count(".leaflet-control-scale") == 1 and page.count(".wg-legend") == 1
    assert page.count("path.wg-net") == 0  # networks hidden until chosen
    labels = page.page.locator(".leaflet-control-layers-overlays label")
    for key, net in NETWORKS.items():
        labels.filter(has_text=net["label"].split()[1]).locator("input").check()
        assert page.count(f"path.wg-net-{key}") == len(grids)
        n_st = int(st["kind"].isin(net["kinds"]).sum())
        assert page.count(f"path.wg-net-station-{key}") == n_st
        labels.filter(has_text=net["label"].split()[1]).locator("input").uncheck()
        assert page.count("path.wg-net") == 0
    # A network's popup lists only its own roles: public safety has the police, not the leader.
    safety = labels.filter(has_text="public-safety").locator("input")
    safety.check()
    page.page.locator("path.wg-net-safety").nth(3).dispatch_event("click")
    popup = page.page.locator(".leaflet-popup-content").last.inner_text()
    assert "社区民警" in popup and "李3" in popup and "网格长" not in popup
    page.page.evaluate("() => document.querySelector('.leaflet-popup-close-button').click()")
    safety.uncheck()
    # The whole team is in the base grid's popup.
    page.page.locator("path.wg-over").first.dispatch_event("click")
    popup = page.page.locator(".leaflet-popup-content").last.inner_text()
    assert "网格长" in popup and "张3" in popup
    page.finish()


@pytest.mark.browser
def test_coverage_map_in_browser(browser, tmp_path: Path) -> None:
    st, b, grids = _stations(), _buildings(), _grids()
    uncovered = b.iloc[::3]
    suggested = gpd.GeoDataFrame(
        {"name": ["新址1", "新址2"], "kind": ["elder_canteen"] * 2},
        geometry=[Point(X0 + 0.003, Y0 + 0.007), Point(X0 + 0.009, Y0 + 0.001)],
        crs=4326,
    )
    page = Page(browser, "coverage_map")
    page.open_html(
        coverage_map(st, radius_m=300, uncovered=uncovered, grids=grids, suggested=suggested),
        tmp_path,
    )
    assert page.count("path.wg-station") == len(st)
    assert page.count("path.wg-circle") == len(st)
    assert page.count("path.wg-grid") == len(grids)
    assert page.count(".wg-suggested") == len(suggested)
    shown = page.count("path.wg-uncovered") + page.cluster_total(".wg-uncovered-cluster")
    assert shown == len(uncovered)
    assert page.count(".leaflet-control-scale") == 1 and page.count(".wg-legend") == 1
    page.finish()


@pytest.mark.browser
def test_coverage_map_aggregates_above_point_cap(browser, tmp_path: Path) -> None:
    b = _buildings()
    page = Page(browser, "coverage_map_aggregate")
    page.open_html(
        coverage_map(
            _stations(), uncovered=b, grids=_grids(), settings=MapSettings(map_max_points=10)
        ),
        tmp_path,
    )
    assert page.count("path.wg-uncovered") + page.cluster_total(".wg-uncovered-cluster") == 0
    page.page.locator("path.wg-grid").first.dispatch_event("click")
    assert "未覆盖户数" in page.page.locator(".leaflet-popup-content").inner_text()
    page.finish()


@pytest.mark.browser
def test_incident_map_in_browser(browser, tmp_path: Path) -> None:
    inc, grids = _incidents(), _grids()
    page = Page(browser, "incident_map")
    page.open_html(incident_map(inc, grids=grids), tmp_path)
    for status, n in inc["status"].value_counts().items():
        drawn = page.count(f".wg-incident-{status}") + page.cluster_total(f".wg-cluster-{status}")
        assert drawn == n, status
    assert page.count("path.wg-count") == len(grids)
    assert page.count("canvas.leaflet-heatmap-layer") == 1
    # Satisfaction choropleth: hidden until chosen.
    page.page.locator(".leaflet-control-layers-overlays label", has_text="satisfaction").locator(
        "input"
    ).check()
    assert page.count("path.wg-sat") == len(grids)
    assert page.count(".leaflet-control-scale") == 1 and page.count(".wg-legend") == 1
    page.finish()


@pytest.mark.browser
def test_incident_overdue_markers(browser, tmp_path: Path) -> None:
    # Points far apart so that none cluster: every overdue case must show as marked.
    inc = _incidents(8)
    inc["geometry"] = [Point(X0 + i * 0.01, Y0) for i in range(len(inc))]
    page = Page(browser, "incident_overdue")
    page.open_html(incident_map(inc), tmp_path)
    assert page.count(".wg-incident") == len(inc)
    assert page.count(".wg-overdue") == int(inc["overdue"].sum())
    page.finish()


@pytest.mark.browser
def test_api_pages_in_browser(browser, city_engine) -> None:
    """The API's pages load their assets from the service itself (fetched via the app)."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    app = create_app(engine=city_engine)
    with TestClient(app, base_url="http://localhost") as client:
        for path in ("/maps/grids", "/maps/coverage?radius_m=300", "/maps/incidents"):
            r = client.get(path)
            assert r.status_code == 200, r.text[:500]
            assert r.headers["content-type"].startswith("text/html")
        assert client.get("/maps/grids?within=123").status_code == 422  # no level has 3 digits
        spec = client.get("/openapi.json").json()["paths"]
        assert spec["/maps/grids"]["get"]["operationId"] == "map_grids"

        page = Page(browser, "api_grid_map")

        def serve(route) -> None:
            url = route.request.url
            if not is_local(url):
                route.abort()
                return
            resp = client.get(url)
            route.fulfill(
                status=resp.status_code,
                body=resp.content,
                headers={"content-type": resp.headers.get("content-type", "")},
            )

        page.page.route("**/*", serve)
        page.page.goto("http://localhost/maps/grids")
        page.page.wait_for_load_state("load")
        page.page.wait_for_timeout(300)
        assert page.count("path.wg-grid") == 6
        assert any("/static/vendor/leaflet/leaflet.js" in u for u in page.requests)
        page.finish()

        page = Page(browser, "api_coverage_map")
        page.page.route("**/*", serve)
        page.page.goto("http://localhost/maps/coverage?radius_m=300")
        page.page.wait_for_load_state("load")
        page.page.wait_for_timeout(300)
        assert page.count("path.wg-station") == 3
        page.finish()


def test_cli_writes_standalone_pages(city_engine, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    url = city_engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("WANGGE_DATABASE_URL", url)
    runner = CliRunner()
    for kind in ("grids", "coverage", "incidents"):
        out = tmp_path / f"{kind}.html"
        res = runner.invoke(app, ["map", kind, "--out", str(out)])
        assert res.exit_code == 0, res.output
        page = out.read_text(encoding="utf-8")
        assert not re.findall(r"<(?:script|link)[^>]+(?:src|href)=", page)  # all inlined
        # Every grid of the fixture is in the page's data.
        for g in _grids()["code"]:
            assert f'"{g}"' in page
    res = runner.invoke(app, ["map", "grids", "--within", "123", "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 1 and "2, 4, 6, 9 or 12 digits" in res.output


@pytest.mark.parametrize("ttl, sees_rename", [(3600, False), (0, True)])
def test_api_page_cache_serves_within_its_age(city_engine, monkeypatch, ttl,
                                              sees_rename) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app

    monkeypatch.setenv("WANGGE_MAP_CACHE_SECONDS", str(ttl))
    code = _grids()["code"].iloc[0]
    with city_engine.connect() as conn:
        old = conn.exec_driver_sql("SELECT name FROM area WHERE code = %s", (code,)).scalar()
    try:
        with TestClient(create_app(engine=city_engine)) as client:
            first = client.get("/maps/grids")
            assert first.status_code == 200 and old in first.text
            with city_engine.begin() as conn:
                conn.exec_driver_sql("UPDATE area SET name = '改名网格' WHERE code = %s", (code,))
            second = client.get("/maps/grids")
    finally:
        with city_engine.begin() as conn:
            conn.exec_driver_sql("UPDATE area SET name = %s WHERE code = %s", (old, code))
    assert second.status_code == 200
    assert ("改名网格" in second.text) is sees_rename
    assert (second.text == first.text) is not sees_rename
