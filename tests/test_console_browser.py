"""The console in Debian's Chromium (Playwright, headless), against the real service under
uvicorn and a real PostGIS database with a small synthetic city.

The loop as people do it: a resident on a 390-px phone reports with a photo and a point picked
on the map → the grid worker checks it in on their desk → the department carries it out and
feeds back → the resident rates it → the worker closes it → the commander's view shows it
closed, with counts and SLA colours checked against the database. Also: a new report appears on
an open commander view within 10 s, an overdue case colours its cluster red, and role
boundaries hold in the browser. Every page fails the test on a console error or a request
leaving localhost. Screenshots: tests/artifacts/console-*.png.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import shapely
from browsers import AUTH, DESKTOP, PASSWORD, PHONE, Person
from factories import served
from sqlalchemy import text

from api.main import create_app
from geo.auth.service import create_user
from geo.core.db import make_engine
from geo.data.store import write_layers
from geo.samples.synth import generate_city
from maps import assets


def _png(rgb: tuple[int, int, int] = (200, 40, 40), size: int = 8) -> bytes:
    """A small solid-colour PNG (the 'photo taken on the phone')."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class Site:
    """The running service, its database and the people using it."""

    def __init__(self, base: str, engine: Any, city: dict, grid: dict, users: dict) -> None:
        self.base, self.engine, self.city, self.grid, self.users = base, engine, city, grid, users

    def token(self, user: str) -> str:
        r = httpx.post(f"{self.base}/v1/auth/token",
                       data={"username": user, "password": PASSWORD})
        return r.json()["access_token"]

    def api(self, user: str, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.base}{path}", timeout=30,
                             headers={"Authorization": f"Bearer {self.token(user)}"}, **kw)

    def one(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as c:
            return c.execute(text(sql), params).first()


@pytest.fixture(scope="module")
def site(fresh_database: Any) -> Iterator[Site]:
    assets.fetch()
    eng = make_engine(fresh_database(), pool_size=8)
    city = generate_city(grids=12, buildings=120, stations=4, seed=7)
    grids = city["grid"].to_crs(4326)
    grid = grids.iloc[0]
    with eng.begin() as c:
        write_layers(c, city)
        deps = dict(c.execute(text("SELECT code, id FROM department")).all())
        district = city["district"].iloc[0]["code"]
        users = {
            "resident1": ("resident", None, None), "resident2": ("resident", None, None),
            "worker": ("grid_worker", grid["code"], None),
            "sanitation": ("department_staff", None, deps["sanitation"]),
            "commander": ("commander", district, None),
            "planner": ("planner", district, None),
        }
        for name, (role, area, dep) in users.items():
            create_user(c, name, PASSWORD, role, area_code=area, department_id=dep, settings=AUTH)
    app = create_app(engine=eng, auth_settings=AUTH)
    with served(app) as base:
        yield Site(base, eng, city,
                   {"code": grid["code"], "name": grid["name"], "geom": grid.geometry}, users)
    eng.dispose()


def _pick(person: Person, map_id: str, lon: float, lat: float) -> None:
    """Click the Leaflet map ``map_id`` at (lon, lat), as a person taps it."""
    box = person.page.locator(f"#{map_id}")
    box.scroll_into_view_if_needed()
    x, y = person.page.evaluate(
        """([id, lat, lon]) => { const m = WG.maps[id]; m.setView([lat, lon], 17, {animate: false});
           const p = m.latLngToContainerPoint([lat, lon]); return [p.x, p.y]; }""",
        [map_id, lat, lon])
    box.click(position={"x": x, "y": y})


def _step(person: Person, case_id: int, to: str, note: str, photo: bytes | None = None) -> None:
    page = person.page
    page.locator(f"#step-{case_id}").select_option(to)
    page.locator(f"#step-{case_id}-note").fill(note)
    if photo:
        page.locator(f"#step-{case_id}-photo").set_input_files(
            files=[{"name": "step.png", "mimeType": "image/png", "buffer": photo}])
    page.get_by_role("button", name="下一步").click()
    page.wait_for_function(
        """([id, to]) => { const f = document.querySelector('.case .steps .now');
           return f && document.querySelector('#case h2')?.textContent.includes('#' + id)
             && f.textContent === WG.M.status[to]; }""", arg=[case_id, to], timeout=10_000)


def _status(site: Site, case_id: int) -> str:
    return site.one("SELECT status FROM incident WHERE id = :i", i=case_id).status


def test_the_whole_loop_as_people(site: Site, browser: Any) -> None:
    geom = site.grid["geom"]
    spot = geom.representative_point()
    # The grid and community the point falls in, by shapely over the generated layers.
    grids = site.city["grid"].to_crs(4326)
    holder = grids[grids.contains(spot)].iloc[0]
    comms = site.city["community"].to_crs(4326)
    community = comms[comms.contains(spot)].iloc[0]

    # 1. The resident reports on a phone, with a photo and a point picked on the map.
    resident = Person(browser, site, "resident1", PHONE)
    resident.sign_in()
    assert resident.page.url.endswith("/console/resident")
    page = resident.page
    page.get_by_label("问题类别").select_option(label="垃圾堆放")
    page.get_by_label("问题描述").fill("小区门口垃圾堆放三天无人清理")
    page.get_by_label("现场照片").set_input_files(
        files=[{"name": "rubbish.png", "mimeType": "image/png", "buffer": _png()}])
    _pick(resident, "pick-map", spot.x, spot.y)
    place = page.locator("#place")
    place.wait_for(state="visible")
    page.wait_for_function("document.querySelector('#place').dataset.grid !== undefined")
    assert page.locator("#place").get_attribute("data-grid") == holder["code"]
    assert holder["name"] in place.inner_text() and community["name"] in place.inner_text()
    resident.shot("1-resident-report")
    page.get_by_role("button", name="提交上报").click()
    page.wait_for_selector("#report-msg[data-id]")
    case_id = int(page.locator("#report-msg").get_attribute("data-id"))
    row = site.one("SELECT grid_code, category_code, ST_X(location) AS lon, ST_Y(location) AS lat,"
                   " (SELECT count(*) FROM incident_photo WHERE incident_id = i.id) AS photos"
                   " FROM incident i WHERE id = :i", i=case_id)
    assert row.grid_code == holder["code"] and row.category_code == "rubbish"
    assert row.photos == 1
    assert shapely.Point(row.lon, row.lat).distance(spot) < 1e-4  # the tapped point, ~10 m
    page.wait_for_selector(f"#mine [data-id='{case_id}']")
    resident.shot("1-resident-sent")

    # 2. The grid worker sees it on their desk (phone) and checks it in, with a note and photo.
    worker = Person(browser, site, "worker", PHONE)
    worker.sign_in()
    assert worker.page.url.endswith("/console/worker")
    worker.page.locator(f"#cases [data-id='{case_id}']").click()
    _step(worker, case_id, "checked_in", "已到现场核实", _png((40, 160, 40)))
    assert _status(site, case_id) == "checked_in"
    worker.shot("2-worker-checked-in")

    # 3. The department consults, carries it out and feeds back.
    dep = Person(browser, site, "sanitation", PHONE)
    dep.sign_in()
    assert dep.page.url.endswith("/console/department")
    dep.page.locator(f"#cases [data-id='{case_id}']").click()
    _step(dep, case_id, "consulting", "与社区会商清运方案")
    _step(dep, case_id, "in_progress", "安排清运车辆")
    _step(dep, case_id, "feedback", "垃圾已清运完毕", _png((40, 40, 200)))
    assert _status(site, case_id) == "feedback"
    dep.shot("3-department-feedback")

    # 4. The resident rates the result.
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.locator(f"#mine [data-id='{case_id}']").click()
    page.get_by_label("满意度（1-5）").select_option("5")
    page.get_by_role("button", name="提交评价").click()
    page.wait_for_function("document.querySelector('.case .steps .now')?.textContent === '评价'")
    assert site.one("SELECT rating FROM incident WHERE id = :i", i=case_id).rating == 5
    resident.shot("4-resident-rated")

    # 5. The worker closes it (评价 → 办结).
    worker.page.reload()
    worker.page.wait_for_selector("body[data-ready='1']")
    worker.page.locator(f"#cases [data-id='{case_id}']").click()
    _step(worker, case_id, "closed", "居民满意，办结")
    assert _status(site, case_id) == "closed"

    # 6. The commander sees it closed, with the counts and SLA colours of the database.
    # Other cases: one green, one amber, one red (overdue).
    others = _seed_cases(site, [("noise", "green"), ("parking", "amber"), ("street_stall", "red")])
    cmd = Person(browser, site, "commander", DESKTOP)
    cmd.sign_in()
    assert cmd.page.url.endswith("/console/commander")
    got = cmd.page.evaluate("""() => Object.fromEntries([...commander.cases.values()]
                               .map(({row}) => [row[0], [row[3], row[4]]]))""")
    assert got[str(case_id)] == ["none", "closed"]
    now = datetime.now(UTC)
    with site.engine.connect() as c:
        for cid in others:
            r = c.execute(text("SELECT resolve_due, amber_at FROM incident WHERE id = :i"),
                          {"i": cid}).first()
            want = "red" if now >= r.resolve_due else "amber" if now >= r.amber_at else "green"
            assert got[str(cid)][0] == want
        # Counts per street against a count of the rows themselves.
        rows = c.execute(text("SELECT street_code, status, resolve_due, amber_at FROM incident")
                         ).all()
    expect: dict[str, dict[str, int]] = {}
    for r in rows:
        e = expect.setdefault(r.street_code, {"open": 0, "red": 0, "amber": 0, "closed": 0})
        if r.status == "closed":
            e["closed"] += 1
        elif r.status != "duplicate":
            e["open"] += 1
            if now >= r.resolve_due:
                e["red"] += 1
            elif now >= r.amber_at:
                e["amber"] += 1
    for code, e in expect.items():
        cells = cmd.page.locator(f"#count-table tr[data-code='{code}'] td").all_inner_texts()
        assert [int(v) for v in cells] == [e["open"], e["open"] - e["red"] - e["amber"],
                                           e["amber"], e["red"], e["closed"]], (code, cells)
    cmd.page.wait_for_selector(".cluster, .case-dot")
    cmd.shot("5-commander")

    # Drill-down: the grid (clicked on the map, away from the cases) → its 2+5+N team with the
    # gap flagged → its cases → the case's history with the three photos; 督办 an open case.
    with site.engine.begin() as c:
        c.execute(text("DELETE FROM grid_team_member WHERE grid_code = :g"
                       " AND role = 'community_medic'"), {"g": holder["code"]})
    poly = holder.geometry
    centre, corner = poly.centroid, shapely.Point(poly.exterior.coords[0])
    inside = shapely.Point(centre.x + 0.8 * (corner.x - centre.x),
                           centre.y + 0.8 * (corner.y - centre.y))
    cmd.page.evaluate("([lat, lon]) => commander.map.setView([lat, lon], 17, {animate: false})",
                      [inside.y, inside.x])  # a district's grids are drawn from zoom 14
    cmd.page.wait_for_function("() => commander.base.grid && commander.base.grid._map")
    _pick(cmd, "map", inside.x, inside.y)
    drill = cmd.page.locator("#drill")
    drill.locator("h2").wait_for()
    assert holder["name"] in drill.locator("h2").inner_text()
    assert "社区医生" in drill.locator(".gap").inner_text()
    drill.locator(f"[data-id='{case_id}']").click()
    cmd.page.wait_for_function("document.querySelectorAll('#case img.photo').length === 3")
    cmd.page.wait_for_function("""[...document.querySelectorAll('#case img.photo')]
                                  .every((i) => i.complete && i.naturalWidth === 8)""")
    assert cmd.page.locator("#case .urge").count() == 0  # a closed case is not urged
    red = next(i for i in others[::-1] if site.one(
        "SELECT grid_code FROM incident WHERE id = :i", i=i).grid_code == holder["code"])
    drill.locator(f"[data-id='{red}']").click()
    cmd.page.locator("#case .urge").click()
    cmd.page.wait_for_function("document.querySelector('#case .history')?.textContent"
                               ".includes('督办')")
    assert site.one("SELECT urge_count FROM incident WHERE id = :i", i=red).urge_count == 1
    cmd.shot("5-commander-drill-down")
    for p in (resident, worker, dep, cmd):
        p.check()
        p.close()


def _seed_cases(site: Site, specs: list[tuple[str, str]]) -> list[int]:
    """Report cases through the API (as resident2) near the grid's point, then set their
    deadlines so that each is in the given SLA state."""
    spot = site.grid["geom"].representative_point()
    ids = []
    for n, (category, state) in enumerate(specs):
        r = site.api("resident2", "POST", "/v1/incidents",
                     json={"category": category, "lon": spot.x + 0.0003 * (n + 1),
                           "lat": spot.y, "description": "测试"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        if state != "green":
            amber, due = ("-1 hour", "+1 day") if state == "amber" else ("-2 hours", "-1 hour")
            with site.engine.begin() as c:
                c.execute(text("UPDATE incident SET amber_at = now() + CAST(:a AS interval),"
                               " resolve_due = now() + CAST(:d AS interval), updated_at = now()"
                               " WHERE id = :i"), {"a": amber, "d": due, "i": ids[-1]})
    return ids


def test_a_new_report_appears_on_an_open_commander_view_within_10_s(site: Site,
                                                                       browser: Any) -> None:
    cmd = Person(browser, site, "commander", DESKTOP)
    cmd.sign_in()
    spot = site.grid["geom"].representative_point()
    t0 = time.monotonic()
    r = site.api("resident2", "POST", "/v1/incidents",
                 json={"category": "pipe_burst", "lon": spot.x - 0.0002, "lat": spot.y})
    assert r.status_code == 201, r.text
    new = r.json()["id"]
    cmd.page.wait_for_function("(id) => commander.cases.has(id)", arg=new, timeout=10_000)
    assert time.monotonic() - t0 < 10
    cmd.check()
    cmd.close()


def test_an_overdue_case_colours_its_cluster(site: Site, browser: Any) -> None:
    ids = _seed_cases(site, [("manhole_missing", "green"), ("sewer_blocked", "red"),
                             ("road_damage", "green")])
    cmd = Person(browser, site, "commander", DESKTOP)
    cmd.sign_in()
    # Zoomed out, the three cases sit in one cluster: it must show red, and count the overdue.
    spot = site.grid["geom"].representative_point()
    state = cmd.page.evaluate(
        """([ids, lat, lon]) => { commander.map.setView([lat, lon], 13, {animate: false});
           const els = ids.map((id) => commander.clusterOf(id));
           return {same: els.every((e) => e && e === els[0]), cls: els[0] && els[0].className,
                   red: els[0] && (els[0].querySelector('i') || {}).textContent}; }""",
        [ids, spot.y, spot.x])
    assert state["same"], state
    assert "cluster-red" in state["cls"]
    with site.engine.connect() as c:  # the badge counts at least the overdue of those three
        overdue = c.execute(text("SELECT count(*) FROM incident WHERE id = ANY(:i)"
                                 " AND resolve_due <= now()"), {"i": ids}).scalar()
    assert overdue == 1 and int(state["red"]) >= overdue
    cmd.page.wait_for_timeout(700)  # let the zoom settle before the picture
    cmd.shot("6-commander-overdue-cluster")
    cmd.check()
    cmd.close()


def test_role_boundaries_in_the_browser(site: Site, browser: Any) -> None:
    other = _seed_cases(site, [("neighbour_dispute", "green")])[0]  # resident2's report
    res = Person(browser, site, "resident1", PHONE)
    res.sign_in()
    page = res.page
    r = page.goto(f"{site.base}/console/commander")
    assert r is not None and r.status == 403
    res.shot("7-resident-forbidden")
    page.goto(f"{site.base}/console/resident")
    page.wait_for_selector("body[data-ready='1']")
    got = page.evaluate("""async (id) => {
        const a = await fetch('/v1/incidents/' + id);
        const b = await fetch('/v1/console/counts');
        const csrf = document.cookie.match(/wangge_csrf=([^;]+)/)[1];
        const body = JSON.stringify({category: 'noise', lon: 0, lat: 0});
        const c = await fetch('/v1/incidents', {method: 'POST', body,
                              headers: {'Content-Type': 'application/json'}});
        const d = await fetch('/v1/incidents', {method: 'POST', body,
                              headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}});
        return [a.status, b.status, c.status, d.status, (await c.json()).detail]; }""", other)
    assert got[0] == 404  # another resident's case does not exist for them
    assert got[1] == 403  # the command counts are staff-only
    assert got[2] == 403 and "CSRF" in got[4]  # no CSRF token: refused before anything else
    assert got[3] == 422  # with the token the request goes through (and lon 0 is refused)
    res.check(allowed_errors=("403", "404", "422"))
    res.close()
    # Without a session the console sends the browser to the sign-in page.
    anon = Person(browser, site, None, PHONE)
    anon.page.goto(f"{site.base}/console/worker")
    assert "/console/login" in anon.page.url
    anon.check()
    anon.close()


def test_docs_and_redoc_work_offline(site: Site, browser: Any) -> None:
    p = Person(browser, site, None, DESKTOP)
    p.page.goto(f"{site.base}/docs")
    p.page.wait_for_selector(".opblock-tag", timeout=20_000)
    p.shot("8-docs")
    p.page.goto(f"{site.base}/redoc")
    p.page.wait_for_selector("[role=menuitem], .menu-content", timeout=30_000)
    p.check()
    p.close()


def test_the_analyst_runs_and_reads_circles(site: Site, browser: Any) -> None:
    """Start circles, coverage and siting from the page; circles one tier at a time by kind;
    shares with Chinese kind names; uncovered buildings with grid names; export links."""
    ana = Person(browser, site, "planner", DESKTOP)
    ana.sign_in()
    page = ana.page
    for button, kind in (("计算服务圈", "服务圈"), ("覆盖分析", "覆盖分析"),
                         ("选址建议", "选址建议")):
        page.get_by_role("button", name=button).click()
        page.wait_for_function(
            """(k) => { const t = document.querySelector('#progress').textContent;
                        return t.startsWith(k) && t.includes('已完成'); }""",
            arg=kind, timeout=120_000)
    try:
        page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 3")
    except Exception as exc:
        raise AssertionError(page.locator("#progress").inner_text() + " | "
                             + page.locator("#runs").inner_text() + str(ana.errors)) from exc
    with site.engine.connect() as c:
        runs = c.execute(text("SELECT kind, status FROM analysis_run ORDER BY id")).all()
        kinds = dict(c.execute(text("SELECT code, name_zh FROM station_kind")).all())
    assert [r.kind for r in runs] == ["circles", "coverage", "siting"]
    assert page.locator("#runs tbody tr").count() == 3
    # One tier drawn at a time: the options are the run's tiers; switching redraws.
    options = page.locator("#tier option").all_inner_texts()
    assert len(options) >= 2 and all(o.endswith("米") for o in options)
    drawn = page.evaluate("() => { const m = WG.maps.map; let n = 0; m.eachLayer((l) => {"
                          " if (l.feature && l.feature.properties.tier_m !== undefined) n++; });"
                          " return n; }")
    assert drawn >= 1
    shares = page.locator("#shares tbody th").all_inner_texts()
    assert shares and set(shares) <= set(kinds.values())
    # the runs table is refreshed just after the last run's progress says done
    page.wait_for_function("() => [...document.querySelectorAll('#runs a')]"
                           ".filter((a) => a.textContent.includes('GPKG')).length === 3")
    ana.shot("9-analyst")
    ana.check()
    ana.close()


def test_keyboard_only_sign_in_and_desk(site: Site, browser: Any) -> None:
    """Sign in and open a case with the keyboard alone; every form field has a label."""
    spot = site.grid["geom"].representative_point()
    r = site.api("resident2", "POST", "/v1/incidents",
                 json={"category": "snow_ice", "lon": spot.x, "lat": spot.y + 0.0001})
    assert r.status_code == 201 and r.json()["grid_code"] == site.grid["code"], r.text
    p = Person(browser, site, "worker", PHONE)
    page = p.page
    page.goto(f"{site.base}/console/login")
    page.locator("body").click(position={"x": 5, "y": 200})
    for _ in range(10):  # Tab until the username field has the focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "username":
            break
    page.keyboard.type("worker")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/worker")
    p.ready()
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
        .map((e) => e.id || e.name)""")
    assert unlabelled == []
    first = page.locator("#cases .case-row").first
    first.focus()
    page.keyboard.press("Enter")
    page.locator("#case h2").wait_for()
    assert page.locator("#case h2").inner_text().endswith("#" + first.get_attribute("data-id"))
    p.check()
    p.close()
