"""The planner's map editor (console page ``planner``) in Debian's Chromium, driven with the
mouse as a planner would, against the real service under uvicorn on the demo district.

Split by drawing a line across a demo grid (preview: two grids whose union is the old grid and
whose households add up; save; the lookup answers each new grid at a point inside it); drag a
shared vertex (both neighbours change, no gap, no overlap); merge two neighbours; a refused
split (one side left with about 40 households) shows the problem on the map and writes nothing.
Expectations come from shapely over the database rows (UTM 50N, m²), never from the page's own
figures. Screenshots: tests/artifacts/planner-*.png.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import pytest
import shapely
import shapely.ops
from browsers import is_local
from shapely.geometry import LineString, Point, shape
from sqlalchemy import text

from bench.common import uvicorn_server
from geo.auth.service import AuthSettings, create_user
from geo.core.db import make_engine
from geo.samples.demo import load_demo
from maps import assets

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PASSWORD = "planner-password"
UTM = 32650
RULE = (150, 500)


class Demo:
    """The served demo district and independent reads of it (shapely, UTM metres)."""

    def __init__(self, base: str, engine: Any) -> None:
        self.base, self.engine = base, engine

    def grids(self) -> gpd.GeoDataFrame:
        with self.engine.connect() as c:
            return gpd.read_postgis(
                "SELECT code, parent_code, geom FROM area WHERE level = 'grid' "
                "AND generation_high IS NULL ORDER BY code", c, geom_col="geom").to_crs(UTM)

    def buildings(self) -> gpd.GeoDataFrame:
        with self.engine.connect() as c:
            return gpd.read_postgis(
                "SELECT code, grid_code, households, location AS geom FROM building",
                c, geom_col="geom").to_crs(UTM)

    def counts(self) -> tuple[Any, ...]:
        """Rows that any planning change writes (a refused one must leave them all alone)."""
        with self.engine.connect() as c:
            return tuple(c.execute(text(
                "SELECT (SELECT count(*) FROM area), (SELECT count(*) FROM generation),"
                " (SELECT count(*) FROM building_move), (SELECT count(*) FROM grid_team_member),"
                " (SELECT md5(string_agg(code || ':' || coalesce(grid_code, ''), ',' ORDER BY"
                "  code)) FROM building)")).one())

    def lookup(self, pt: Point, want: str) -> str | None:
        """The grid ``/v1/lookup`` answers at ``pt``, asked until it is ``want`` (the service
        rebuilds its index in the background after a change: the old one answers meanwhile)
        or 20 s have passed."""
        wgs = gpd.GeoSeries([pt], crs=UTM).to_crs(4326).iloc[0]
        deadline = time.monotonic() + 20
        while True:
            r = httpx.get(f"{self.base}/v1/lookup", params={"lon": wgs.x, "lat": wgs.y},
                          auth=("planner", PASSWORD), timeout=30)
            assert r.status_code == 200, r.text
            grid = (r.json().get("grid") or {}).get("code")
            if grid == want or time.monotonic() > deadline:
                return grid
            time.sleep(0.2)


@pytest.fixture(scope="module")
def demo(fresh_database: Any) -> Iterator[Demo]:
    assets.fetch()
    url = fresh_database()
    eng = make_engine(url, pool_size=4)
    with eng.begin() as c:
        load_demo(c)
        create_user(c, "planner", PASSWORD, "planner", area_code="350104",
                    settings=AuthSettings())
    env = {**os.environ, "WANGGE_DATABASE_URL": url, "WANGGE_ENFORCE_ACCESS": "true",
           "WANGGE_BALANCE_MODE": "error", "WANGGE_POOL_SIZE": "4"}
    with uvicorn_server(env) as base:
        yield Demo(base, eng)
    eng.dispose()


@pytest.fixture(scope="module")
def planner(demo: Demo, browser: Any) -> Iterator[Any]:
    """The planner's signed-in page on the editor; fails on console errors or outside requests."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN",
                              timezone_id="Asia/Shanghai")
    page = ctx.new_page()
    page.errors, page.outside = [], []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: not is_local(r.url) and page.outside.append(r.url))
    page.goto(f"{demo.base}/console/login")
    page.get_by_label("用户名").first.fill("planner")
    page.get_by_label("密码", exact=True).first.fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(lambda u: "/console/" in u and "/console/login" not in u)
    yield page
    ctx.close()


def _open(page: Any, demo: Demo, community: str, mode: str) -> None:
    page.goto(f"{demo.base}/console/planner?community={community}")
    try:
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    except Exception as exc:
        raise AssertionError(f"{page.url} not ready: {page.errors}") from exc
    page.get_by_role("tab", name=mode).click()


def _screen(page: Any, pt: Point) -> tuple[float, float]:
    """Page pixel of a UTM point on the editor's map."""
    wgs = gpd.GeoSeries([pt], crs=UTM).to_crs(4326).iloc[0]
    box = page.locator("#map").bounding_box()
    x, y = page.evaluate("([lat, lon]) => { const p = WG.maps.map.latLngToContainerPoint("
                         "[lat, lon]); return [p.x, p.y]; }", [wgs.y, wgs.x])
    return box["x"] + x, box["y"] + y


def _fit(page: Any, geom: Any) -> None:
    x0, y0, x1, y1 = gpd.GeoSeries([geom], crs=UTM).to_crs(4326).total_bounds
    page.evaluate("(b) => { WG.maps.map.fitBounds([[b[1], b[0]], [b[3], b[2]]], "
                  "{padding: [60, 60], animate: false}); }", [x0, y0, x1, y1])


def _click(page: Any, pt: Point) -> None:
    page.mouse.click(*_screen(page, pt))


def _preview(page: Any) -> dict[str, Any]:
    """Press 预览 and wait for the server's answer; the preview the page shows."""
    with page.expect_response(lambda r: "/v1/planning/preview/" in r.url) as got:
        page.get_by_role("button", name="预览", exact=True).click()
    assert got.value.status == 200, got.value.text()
    page.wait_for_selector("#result .verdict")
    return got.value.json()


def _save(page: Any) -> dict[str, Any]:
    with page.expect_response(lambda r: "/v1/planning/" in r.url
                              and "/preview/" not in r.url and r.request.method == "POST") as got:
        page.get_by_role("button", name="保存", exact=True).click()
    page.wait_for_selector("body[data-saved]")
    assert got.value.status == 200, got.value.text()
    return got.value.json()


def _cut(grid: Any, inside: gpd.GeoDataFrame, want: Any) -> tuple[LineString, float] | None:
    """A north-south line across ``grid`` cutting it in two pieces, with no building location
    within 3 m of it, whose west side's households satisfy ``want(west, total)``."""
    x0, y0, x1, y1 = grid.bounds
    xs = sorted(inside.geometry.x)
    total = int(inside["households"].sum())
    for a, b in zip(xs, xs[1:], strict=False):
        x = (a + b) / 2
        if b - a < 6:
            continue
        cut = LineString([(x, y0 - 40), (x, y1 + 40)])
        if len(shapely.get_parts(shapely.ops.split(grid, cut))) != 2:
            continue
        west = int(inside[inside.geometry.x < x]["households"].sum())
        if want(west, total):
            return cut, west
    return None


def _split_candidate(demo: Demo, want: Any) -> tuple[str, Any, LineString, gpd.GeoDataFrame]:
    grids, bl = demo.grids(), demo.buildings()
    for g in grids.itertuples():
        inside = bl[bl["grid_code"] == g.code]
        found = _cut(g.geom, inside, want)
        if found:
            return g.code, g.geom, found[0], inside
    raise AssertionError("no demo grid can be cut as wanted")


def _draw_line(page: Any, demo: Demo, code: str, geom: Any, line: LineString) -> None:
    _open(page, demo, code[:12], "拆分网格")
    _fit(page, line.envelope.buffer(20))
    _click(page, geom.representative_point())  # pick the grid
    for xy in line.coords:
        _click(page, Point(xy))


def test_a_refused_split_shows_the_problem_and_writes_nothing(demo: Demo, planner: Any) -> None:
    code, geom, line, inside = _split_candidate(
        demo, lambda west, total: 20 <= west <= 70 and RULE[0] <= total - west <= RULE[1])
    west = int(inside[inside.geometry.x < line.coords[0][0]]["households"].sum())
    before = demo.counts()
    _draw_line(planner, demo, code, geom, line)
    p = _preview(planner)
    assert p["accepted"] is False
    assert "不能保存" in planner.locator("#result .verdict").inner_text()
    assert planner.get_by_role("button", name="保存", exact=True).is_disabled()
    # The balance problem is drawn on the map at the small west piece, with its figure.
    balance = [f for f in p["problems"]["features"] if f["properties"]["check"] == "balance"]
    assert [f["properties"]["households"] for f in balance] == [west]
    piece = next(g for g in shapely.get_parts(shapely.ops.split(geom, line))
                 if g.centroid.x < line.coords[0][0])
    at = gpd.GeoSeries([shape(balance[0]["geometry"])], crs=4326).to_crs(UTM).iloc[0]
    assert piece.buffer(1).contains(at)
    markers = planner.evaluate("() => { const out = []; WG.maps.map.eachLayer((l) => {"
                               " if (l.feature && l.feature.properties.check) out.push("
                               "[l.getLatLng().lng, l.getLatLng().lat,"
                               " l.feature.properties.households]); }); return out; }")
    assert any(abs(x - balance[0]["geometry"]["coordinates"][0]) < 1e-9 and h == west
               for x, _y, h in markers)
    planner.locator("#problems button", has_text=f"{west}").first.click()
    planner.wait_for_selector(".leaflet-popup-content")
    assert str(west) in planner.locator(".leaflet-popup-content").inner_text()
    planner.screenshot(path=str(ARTIFACTS / "planner-1-refused-split.png"))
    assert demo.counts() == before
    assert planner.errors == [] and planner.outside == []


def test_split_by_drawing_a_line_then_save(demo: Demo, planner: Any) -> None:
    code, geom, line, inside = _split_candidate(
        demo, lambda west, total: RULE[0] + 20 <= west <= RULE[1] - 20
        and RULE[0] + 20 <= total - west <= RULE[1] - 20)
    _draw_line(planner, demo, code, geom, line)
    p = _preview(planner)
    assert p["accepted"] is True, p["problems"]
    assert p["retired"] == [code] and len(p["codes"]) == 2
    pieces = {f["properties"]["code"]: gpd.GeoSeries([shape(f["geometry"])], crs=4326)
              .to_crs(UTM).iloc[0] for f in p["grids"]["features"]}
    assert set(pieces) == set(p["codes"])
    assert shapely.union_all(list(pieces.values())).symmetric_difference(geom).area < 1.0
    shown = {f["properties"]["code"]: f["properties"]["households"]
             for f in p["grids"]["features"]}
    for c, g in pieces.items():  # households by location, counted here
        assert shown[c] == int(inside[inside.geometry.within(g)]["households"].sum())
    assert sum(shown.values()) == int(inside["households"].sum())
    rows = planner.locator("#preview-grids tbody tr").all()
    assert sorted(r.get_attribute("data-code") for r in rows) == sorted(p["codes"])
    # Complete the new grids: a name typed in, the grid leader sent to the second grid only.
    first, second = p["codes"]
    planner.locator(f"#preview-grids tr[data-code='{first}'] .grid-name").fill("东区试点网格")
    leader = next(m for m in p["parent_team"] if m["role"] == "grid_leader")
    planner.get_by_label(f"分配到 {leader['name']}").select_option(second)
    planner.screenshot(path=str(ARTIFACTS / "planner-2-split-preview.png"))
    out = _save(planner)
    assert sorted(out["created"]) == sorted(p["codes"]) and out["retired"] == [code]
    with demo.engine.connect() as c:
        assert c.execute(text("SELECT name FROM area WHERE code = :c AND generation_high IS "
                              "NULL"), {"c": first}).scalar() == "东区试点网格"
        holds = dict(c.execute(text(
            "SELECT grid_code, count(*) FROM grid_team_member WHERE name = :n AND role = "
            "'grid_leader' AND grid_code = ANY(:g) GROUP BY grid_code"),
            {"n": leader["name"], "g": [first, second]}).all())
    assert holds == {second: 1}
    now = demo.grids().set_index("code")
    assert code not in now.index
    for c, g in pieces.items():
        assert now.loc[c, "geom"].symmetric_difference(g).area < 1.0
        assert demo.lookup(g.representative_point(), c) == c
    planner.screenshot(path=str(ARTIFACTS / "planner-3-split-saved.png"))
    assert planner.errors == [] and planner.outside == []


def _shared_vertex(demo: Demo) -> tuple[str, str, tuple[float, float], tuple[float, float]]:
    """Two neighbours of one community within the rule sharing an inner vertex, and a move of
    it (~6 m) that sweeps over no building location: (a, b, vertex, moved), UTM."""
    grids, bl = demo.grids(), demo.buildings()
    with demo.engine.connect() as c:
        comms = gpd.read_postgis("SELECT code, geom FROM area WHERE level = 'community' AND "
                                 "generation_high IS NULL", c, geom_col="geom").to_crs(UTM)
    held = bl.groupby("grid_code")["households"].sum()
    ok = grids[grids["code"].map(lambda g: RULE[0] + 30 <= held.get(g, 0) <= RULE[1] - 30)]
    border = {r.code: r.geom.boundary for r in comms.itertuples()}
    for a in ok.itertuples():
        for b in ok.itertuples():
            if a.code >= b.code or a.parent_code != b.parent_code:
                continue
            shared = a.geom.intersection(b.geom)
            if shared.length < 30:
                continue
            va = {tuple(v) for v in shapely.get_coordinates(a.geom)}
            for v in shapely.get_coordinates(b.geom):
                v = tuple(v)
                if v not in va or border[a.parent_code].distance(Point(v)) < 5:
                    continue
                for dx, dy in ((6, 0), (-6, 0), (0, 6), (0, -6)):
                    to = (v[0] + dx, v[1] + dy)
                    swept = Point(v).buffer(9)
                    if not bl[bl.geometry.within(swept)].empty:
                        continue
                    return a.code, b.code, v, to
    raise AssertionError("no shared vertex to drag")


def test_drag_a_shared_vertex_both_neighbours_follow(demo: Demo, planner: Any) -> None:
    a, b, vertex, to = _shared_vertex(demo)
    old = demo.grids().set_index("code")
    _open(planner, demo, a[:12], "调整边界")
    _fit(planner, Point(vertex).buffer(60))
    _click(planner, old.loc[a, "geom"].representative_point())  # its vertices appear
    sx, sy = _screen(planner, Point(vertex))
    tx, ty = _screen(planner, Point(to))
    planner.mouse.move(sx, sy)
    planner.mouse.down()
    planner.mouse.move((sx + tx) / 2, (sy + ty) / 2, steps=4)
    with planner.expect_response(lambda r: "/v1/planning/preview/reshape" in r.url) as got:
        planner.mouse.move(tx, ty, steps=4)
        planner.mouse.up()
    p = got.value.json()
    planner.wait_for_selector("#result .verdict")
    assert sorted(p["changed"]) == sorted([a, b]), p
    assert p["accepted"] is True, p["problems"]
    planner.screenshot(path=str(ARTIFACTS / "planner-4-reshape-preview.png"))
    _save(planner)
    now = demo.grids().set_index("code")
    for c in (a, b):
        assert now.loc[c, "geom"].symmetric_difference(old.loc[c, "geom"]).area > 1.0
    assert now.loc[a, "geom"].intersection(now.loc[b, "geom"]).area < 0.01   # no overlap
    before = old.loc[a, "geom"].union(old.loc[b, "geom"])
    after = now.loc[a, "geom"].union(now.loc[b, "geom"])
    assert before.symmetric_difference(after).area < 0.01                     # no gap
    assert planner.errors == [] and planner.outside == []


def test_merge_two_neighbours(demo: Demo, planner: Any) -> None:
    grids, bl = demo.grids(), demo.buildings()
    held = bl.groupby("grid_code")["households"].sum()
    pairs = sorted((int(held.get(a.code, 0) + held.get(b.code, 0)), a.code, b.code)
                   for a in grids.itertuples() for b in grids.itertuples()
                   if a.code < b.code and a.parent_code == b.parent_code
                   and a.geom.intersection(b.geom).length > 50
                   and shapely.union_all([a.geom, b.geom]).buffer(0).geom_type == "Polygon")
    total, a, b = pairs[0]
    if total > RULE[1] - 10:
        # No two demo neighbours hold 500 households or fewer together: a planner would first
        # thin them. Here the larger grid's biggest buildings give up the excess.
        excess = total - (RULE[1] - 10)
        larger = a if held[a] >= held[b] else b
        with demo.engine.begin() as c:
            for row in bl[bl["grid_code"] == larger].sort_values("households").iloc[::-1] \
                    .itertuples():
                take = min(excess, int(row.households) - 1)
                c.execute(text("UPDATE building SET households = households - :d "
                               "WHERE code = :c"), {"d": take, "c": row.code})
                excess -= take
                if excess == 0:
                    break
        total = RULE[1] - 10
    geoms = grids.set_index("code")["geom"]
    _open(planner, demo, a[:12], "合并网格")
    _fit(planner, geoms[a].union(geoms[b]))
    _click(planner, geoms[a].representative_point())
    _click(planner, geoms[b].representative_point())
    p = _preview(planner)
    assert p["accepted"] is True, p["problems"]
    assert sorted(p["retired"]) == [a, b] and len(p["codes"]) == 1
    merged = gpd.GeoSeries([shape(p["grids"]["features"][0]["geometry"])], crs=4326).to_crs(UTM)
    assert merged.iloc[0].symmetric_difference(geoms[a].union(geoms[b])).area < 1.0
    assert p["grids"]["features"][0]["properties"]["households"] == total
    planner.screenshot(path=str(ARTIFACTS / "planner-5-merge-preview.png"))
    out = _save(planner)
    assert out["created"] == p["codes"]
    assert demo.lookup(geoms[a].representative_point(), p["codes"][0]) == p["codes"][0]
    assert planner.errors == [] and planner.outside == []


def test_reassign_a_building_preview(demo: Demo, planner: Any) -> None:
    """Click a building, choose its new grid, preview: the two grids' households move by the
    building's. Nothing written."""
    grids, bl = demo.grids(), demo.buildings()
    held = bl.groupby("grid_code")["households"].sum()
    geoms = grids.set_index("code")["geom"]
    b, source, target = next(
        (b, b.grid_code, t.code) for b in bl.sort_values("households").itertuples()
        for t in grids.itertuples()
        if b.grid_code and t.code != b.grid_code and t.parent_code == b.grid_code[:12]
        and geoms[b.grid_code].intersection(t.geom).length > 20 and b.households >= 5)
    before = demo.counts()
    _open(planner, demo, source[:12], "调整楼栋")
    planner.get_by_label("目标网格").select_option(target)
    _fit(planner, b.geom.buffer(80))
    _click(planner, b.geom)
    p = _preview(planner)
    shown = {f["properties"]["code"]: f["properties"]["households"]
             for f in p["grids"]["features"]}
    assert shown[target] == int(held[target]) + b.households
    assert shown[source] == int(held[source]) - b.households
    planner.screenshot(path=str(ARTIFACTS / "planner-6-reassign-preview.png"))

    assert demo.counts() == before
    assert planner.errors == [] and planner.outside == []
