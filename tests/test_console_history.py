"""The planners' history page (边界历史) in Debian's Chromium, driven with the mouse, against the
real service under uvicorn and a real PostGIS database (issue 18 item 4).

A split saved for tomorrow is listed as 待生效 with its date in China Standard Time, the diff
between today's generation and it is drawn and tabulated (checked against the rows in the
database and shapely), the lookup still answers today's grid; the planner cancels it after a
Chinese confirmation; a split saved now is undone from the page and the grids come back equal
(shapely, < 1 m²) with their codes, and the lookup answers the old grid again. A commander sees
the page read-only. Screenshots: tests/artifacts/console-history-*.png.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import shapely
from browsers import AUTH, DESKTOP, PASSWORD, Person
from factories import served
from shapely.geometry import LineString, mapping
from sqlalchemy import text

from api.main import create_app
from geo.auth.service import create_user
from geo.core.db import make_engine
from geo.data.store import write_layers
from geo.planning import PlanningSettings
from geo.samples.synth import generate_city
from maps import assets

CST = ZoneInfo("Asia/Shanghai")


class Site:
    def __init__(self, base: str, engine: Any) -> None:
        self.base, self.engine = base, engine

    def api(self, method: str, path: str, user: str = "planner", **kw: Any) -> httpx.Response:
        tok = httpx.post(f"{self.base}/v1/auth/token",
                         data={"username": user, "password": PASSWORD}).json()["access_token"]
        return httpx.request(method, f"{self.base}{path}", timeout=60,
                             headers={"Authorization": f"Bearer {tok}"}, **kw)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as c:
            return list(c.execute(text(sql), params).all())

    def grids(self) -> dict[str, shapely.Geometry]:
        """Current grids {code: geometry} in the district's UTM zone (metres)."""
        return {c: shapely.from_wkb(bytes(w)) for c, w in self.rows(
            "SELECT code, ST_AsBinary(ST_Transform(geom, 32650)) FROM area "
            "WHERE level = 'grid' AND generation_high IS NULL")}

    def lookup(self, lon: float, lat: float, expect: set[str] | None = None) -> str:
        """The grid the HTTP lookup answers; with ``expect``, wait up to 15 s for one of them."""
        for _ in range(150):
            code = self.api("GET", "/v1/lookup", params={"lon": lon, "lat": lat}).json()[
                "grid"]["code"]
            if expect is None or code in expect:
                break
            time.sleep(0.1)
        return code


@pytest.fixture(scope="module")
def site(fresh_database: Any) -> Iterator[Site]:
    assets.fetch()
    eng = make_engine(fresh_database(), pool_size=8)
    city = generate_city(grids=12, buildings=12 * 30, stations=4, seed=11)
    with eng.begin() as c:
        write_layers(c, city)
        district = city["district"].iloc[0]["code"]
        for name, role in (("planner", "planner"), ("commander", "commander")):
            create_user(c, name, PASSWORD, role, area_code=district, settings=AUTH)
    app = create_app(engine=eng, auth_settings=AUTH)
    app.state.planning_settings = PlanningSettings(balance_mode="warn")
    with served(app) as base:
        yield Site(base, eng)
    eng.dispose()


def _split_body(site: Site, code: str, **extra: Any) -> tuple[dict, shapely.Point]:
    """A north-south line through grid ``code`` and a point (WGS 84) in its western half."""
    from pyproj import Transformer

    g = site.grids()[code]
    cx = g.centroid.x
    back = Transformer.from_crs(32650, 4326, always_xy=True)
    line = LineString([back.transform(cx, g.bounds[1] - 20), back.transform(cx, g.bounds[3] + 20)])
    west = shapely.Point(back.transform((g.bounds[0] + cx) / 2, g.centroid.y))
    return {"code": code, "line": mapping(line), **extra}, west


def _drawn(person: Person) -> dict[str, list[str]]:
    """The diff features drawn on the page's map: {change: [codes]}."""
    return person.page.evaluate("""() => { const out = {};
        WG.maps.map.eachLayer((l) => { const p = l.feature && l.feature.properties;
          if (p && p.change) (out[p.change] = out[p.change] || []).push(p.code); });
        for (const k in out) out[k].sort(); return out; }""")


def _confirm(person: Person, shot: str, *words: str) -> None:
    dialog = person.page.locator("dialog#confirm")
    dialog.wait_for(state="visible")
    for w in words:
        assert w in dialog.inner_text(), (w, dialog.inner_text())
    person.shot(shot)
    person.page.get_by_role("button", name="确定").click()


def test_history_page_schedule_cancel_undo(site: Site, browser: Any) -> None:
    code = min(site.grids())
    before = site.grids()
    body, west = _split_body(site, code)
    when = datetime.now(UTC) + timedelta(days=1)
    r = site.api("POST", "/v1/planning/split", json={**body, "effective_from": when.isoformat()})
    assert r.status_code == 200, r.text
    gen = r.json()["generation"]
    created = sorted(c for (c,) in site.rows(
        "SELECT code FROM area WHERE level = 'grid' AND generation_low = :g", g=gen))
    in_force = site.rows("SELECT generation_at(clock_timestamp())")[0][0]

    planner = Person(browser, site, "planner", DESKTOP)  # type: ignore[arg-type]
    planner.sign_in()
    page = planner.page
    page.goto(f"{site.base}/console/planner_history")
    planner.ready()
    row = page.locator(f"#generations tr[data-id='{gen}']")
    assert "待生效" in row.inner_text() and "拆分" in row.inner_text()
    assert when.astimezone(CST).strftime("%Y-%m-%d %H:%M") in row.inner_text()
    # pick the two generations with the mouse and compare
    page.get_by_label(f"对比起点 {in_force}").click()
    page.get_by_label(f"对比终点 {gen}").click()
    page.get_by_role("button", name="比较").click()
    page.wait_for_function("q => document.getElementById('history').dataset.compared === q",
                           arg=f"from={in_force}&to={gen}")
    drawn = _drawn(planner)
    assert drawn["added"] == created and drawn["removed"] == [code]
    table = {tr.get_attribute("data-code"): tr.get_attribute("data-change")
             for tr in page.locator("#diff-grids tbody tr").all()}
    assert table == {**dict.fromkeys(created, "added"), code: "removed"}
    b = site.rows("SELECT code, ST_AsBinary(ST_Transform(location, 32650)) FROM building")
    inside = {c for c, w in b if before[code].contains(shapely.from_wkb(bytes(w)))}
    moved = {tr.get_attribute("data-building") for tr in page.locator("#diff-moves tbody tr").all()}
    assert moved == inside and inside
    planner.shot("history-scheduled")
    assert site.lookup(west.x, west.y) == code  # today's grid answers until tomorrow

    # cancel the scheduled split
    row.get_by_role("button", name="取消计划").click()
    _confirm(planner, "history-confirm-cancel", f"取消第 {gen} 版")
    page.wait_for_selector(f"#generations tr[data-id='{gen}']", state="detached")
    assert site.rows("SELECT id FROM generation WHERE id = :g", g=gen) == []
    assert set(site.grids()) == set(before)
    assert site.rows("SELECT actor FROM audit_log WHERE action = 'planning_cancel'") == [
        ("user:planner",)]

    # a split saved now, undone from the page
    r = site.api("POST", "/v1/planning/split", json=body)
    assert r.status_code == 200, r.text
    gen2, created2 = r.json()["generation"], r.json()["created"]
    assert site.lookup(west.x, west.y, set(created2)) in created2
    page.reload()
    planner.ready()
    page.locator(f"#generations tr[data-id='{gen2}']").get_by_role(
        "button", name="撤销").click()
    _confirm(planner, "history-confirm-undo", f"撤销第 {gen2} 版",
             f"恢复网格：{code}", "规则检查：通过")  # the undo's dry run
    page.wait_for_function("g => Number(document.querySelector('#generations tbody tr')"
                           ".dataset.id) > g", arg=gen2)
    undo = site.rows("SELECT max(id) FROM generation")[0][0]
    assert undo > gen2 and page.locator(f"#generations tr[data-id='{undo}']").count() == 1
    page.wait_for_function("q => document.getElementById('history').dataset.compared === q",
                           arg=f"from={gen2}&to={undo}")
    assert _drawn(planner).get("added") == [code]
    after = site.grids()
    assert set(after) == set(before)
    for c, g in before.items():
        assert after[c].symmetric_difference(g).area < 1.0, c
    assert site.lookup(west.x, west.y, {code}) == code
    planner.shot("history-undo")
    planner.check()
    planner.close()

    commander = Person(browser, site, "commander", DESKTOP)  # type: ignore[arg-type]
    commander.sign_in()
    commander.page.goto(f"{site.base}/console/planner_history")
    commander.ready()
    assert commander.page.locator("#generations tbody tr").count() >= 3
    assert commander.page.locator("button.undo, button.cancel").count() == 0
    assert "只读" in commander.page.locator("h2").first.inner_text()
    commander.check()
    commander.close()
