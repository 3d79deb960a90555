"""Incidents against the real database: routing, duplicates, the state machine, atomicity.

Area data: a hand-made district of one street, one community and two grids split at
lon 119.31 (west grid ...001, east grid ...002), so the expected grid of a point is known from
shapely alone. Routing uses ``geo.lookup.locate_point``; tests that are about
the workflow (not the lookup) use a stand-in locator built here with shapely and pyproj.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import shapely
from factories import GRID_E, GRID_W, Located, offset, two_grid_engine
from pyproj import Geod, Transformer
from shapely.geometry import Point, box
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from geo import incidents as inc
from geo.core.errors import Conflict, InvalidInput, PayloadTooLarge
from geo.incidents import intake, workflow

W, S, E, N, MID = 119.30, 26.04, 119.32, 26.06, 119.31
DISTRICT, STREET, COMMUNITY = "350104", "350104001", "350104001001"
GRIDS = {GRID_W: box(W, S, MID, N), GRID_E: box(MID, S, E, N)}
GEOD = Geod(ellps="WGS84")



_TO_UTM = Transformer.from_crs(4326, 32650, always_xy=True)


def shapely_locator(conn: Any, lon: float, lat: float, *, crs: str = "wgs84",
                    at: Any = None) -> Located:
    """Stand-in for geo.lookup.locate_point over the hand-made grids (WGS 84 input only)."""
    assert crs == "wgs84"
    p = Point(lon, lat)
    code = next((c for c, g in GRIDS.items() if g.covers(p)), None)
    dist = math.inf
    if code:
        x, y = _TO_UTM.transform(lon, lat)
        g = shapely.transform(
            GRIDS[code], lambda xy: np.column_stack(_TO_UTM.transform(xy[:, 0], xy[:, 1])))
        dist = g.exterior.distance(Point(x, y))
    return Located(lon, lat, {"code": DISTRICT}, {"code": STREET}, {"code": COMMUNITY},
                      {"code": code} if code else None, dist)


@pytest.fixture(scope="module")
def db(fresh_database: Any) -> Iterator[Engine]:
    with two_grid_engine(fresh_database(), pool_size=10) as eng:
        yield eng


@pytest.fixture
def c(db: Engine) -> Iterator[Any]:
    with db.connect() as connection:
        tx = connection.begin()
        try:
            yield connection
        finally:
            tx.rollback()


SETTINGS = inc.IncidentSettings(holidays=[date(2026, 10, 1)])
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # a Monday, 10:00 in Fuzhou


def _report(c: Any, lon: float, lat: float, cat: str = "rubbish", **kw: Any) -> inc.ReportResult:
    return inc.report(c, category=cat, lon=lon, lat=lat, settings=SETTINGS,
                      locator=kw.pop("locator", shapely_locator), now=kw.pop("now", NOW), **kw)


# ---------------------------------------------------------------- routing


def test_report_routes_to_the_grid_shapely_names(c: Any) -> None:
    for lon, lat in [(119.305, 26.05), (119.3149, 26.041), (119.3001, 26.0599)]:
        expected = next(code for code, g in GRIDS.items() if g.contains(Point(lon, lat)))
        r = inc.report(c, category="noise", lon=lon, lat=lat, settings=SETTINGS, now=NOW)
        assert r.grid_code == expected
        assert (r.community_code, r.street_code) == (COMMUNITY, STREET)


def test_gcj02_report_lands_in_the_right_grid(c: Any) -> None:
    prcoords = pytest.importorskip("prcoords")
    # a WGS 84 point 60 m west of the grid boundary; GCJ-02 shifts it ~500 m, far into the wrong
    # grid if the offset were ignored
    lon, lat = offset(MID, 26.05, 60, 270)
    g_lat, g_lon = prcoords.wgs_gcj((lat, lon))
    # read as WGS 84, the raw GCJ-02 coordinates would fall outside the west grid
    assert not GRIDS[GRID_W].contains(Point(g_lon, g_lat))
    r = inc.report(c, category="noise", lon=g_lon, lat=g_lat, crs="gcj02", settings=SETTINGS,
                   now=NOW)
    assert r.grid_code == GRID_W


def test_near_boundary_flagged(c: Any) -> None:
    lon, lat = offset(MID, 26.05, 3, 270)
    assert _report(c, lon, lat).near_boundary
    lon, lat = offset(MID, 26.05, 40, 270)
    assert not _report(c, lon, lat, cat="noise").near_boundary


# ---------------------------------------------------------------- duplicates


def test_duplicate_30m_linked_80m_not(c: Any) -> None:
    first = _report(c, 119.305, 26.05)
    assert first.status == "reported"
    lon30, lat30 = offset(119.305, 26.05, 30, 45)
    lon80, lat80 = offset(119.305, 26.05, 80, 45)
    assert GEOD.inv(119.305, 26.05, lon30, lat30)[2] == pytest.approx(30, abs=0.01)
    d30 = _report(c, lon30, lat30)
    assert (d30.status, d30.duplicate_of) == ("duplicate", first.id)
    d80 = _report(c, lon80, lat80)
    assert (d80.status, d80.duplicate_of) == ("reported", None)
    # another category at 30 m, or the same category after the window, opens a new case
    assert _report(c, lon30, lat30, cat="noise").duplicate_of is None
    later = NOW + timedelta(hours=SETTINGS.duplicate_window_hours + 1)
    assert _report(c, lon30, lat30, now=later).duplicate_of is None
    hist = c.execute(text("SELECT action FROM incident_history WHERE incident_id = :i"
                          " ORDER BY id"), {"i": first.id}).scalars().all()
    assert hist == ["report", "duplicate_linked"]


def test_duplicate_check_uses_the_partial_geography_index(c: Any) -> None:
    # incident is partitioned by month: each partition has its copy of the partial index;
    # a month holding cases spread over the district (analysed) is searched through it
    c.execute(text(
        "INSERT INTO incident (category_code, location, status, checkin_due, amber_at,"
        " resolve_due) SELECT 'rubbish', ST_SetSRID(ST_MakePoint(119.2 + (i % 100) * 0.002,"
        " 26.0 + (i / 100) * 0.002), 4326), 'reported', now(), now(), now()"
        " FROM generate_series(0, 4999) i"))
    c.execute(text("ANALYZE incident"))
    copies = set(c.execute(text(
        "SELECT inhrelid::regclass::text FROM pg_inherits"
        " WHERE inhparent = 'ix_incident_open_geog'::regclass")).scalars())
    assert copies
    plan = "\n".join(c.execute(text(
        "EXPLAIN SELECT id FROM incident WHERE is_open AND category_code = 'rubbish'"
        " AND ST_DWithin(location::geography, ST_MakePoint(119.3, 26.05)::geography, 50)"
    )).scalars())
    assert any(f"using {name} " in plan for name in copies), plan


# ---------------------------------------------------------------- state machine


def test_six_steps_walk_and_history(c: Any) -> None:
    r = _report(c, 119.306, 26.045, cat="road_damage")
    steps = ["checked_in", "consulting", "in_progress", "feedback"]
    for s in steps:
        inc.transition(c, r.id, s, actor="dept:transport", note=s, settings=SETTINGS)
    inc.transition(c, r.id, "rated", actor="resident", rating=1, settings=SETTINGS)
    inc.transition(c, r.id, "in_progress", actor="centre", note="poor rating",
                   settings=SETTINGS)
    inc.transition(c, r.id, "feedback", actor="dept:transport", settings=SETTINGS)
    inc.transition(c, r.id, "rated", actor="resident", rating=5, settings=SETTINGS)
    with pytest.raises(Conflict, match="only a poor rating"):
        inc.transition(c, r.id, "in_progress", actor="centre", settings=SETTINGS)
    inc.transition(c, r.id, "closed", actor="centre", settings=SETTINGS)
    case = inc.get(c, r.id)
    assert case["status"] == "closed" and case["reopen_count"] == 1 and case["rating"] == 5
    assert [h["action"] for h in case["history"]] == [
        "report", "check_in", "consult", "carry_out", "feed_back", "rate", "reopen",
        "feed_back", "rate", "close"]
    assert all(h["actor"] for h in case["history"])


def test_every_illegal_transition_refused(c: Any) -> None:
    r = _report(c, 119.307, 26.047, cat="parking")
    refused = 0
    for frm in inc.STATUSES:
        for to in inc.STATUSES:
            if (frm, to) in inc.TRANSITIONS:
                continue
            c.execute(text("UPDATE incident SET status = :s, duplicate_of = CASE WHEN :s ="
                           " 'duplicate' THEN id END WHERE id = :i"), {"s": frm, "i": r.id})
            with pytest.raises(Conflict) as err:
                inc.transition(c, r.id, to, actor="x", rating=3, settings=SETTINGS)
            assert err.value.problems[0].detail["from"] == frm
            refused += 1
    n = len(inc.STATUSES)
    assert refused == n * n - len(inc.TRANSITIONS) == 57
    # refusals wrote nothing
    assert c.execute(text("SELECT count(*) FROM incident_history WHERE incident_id = :i"),
                     {"i": r.id}).scalar() == 1


def test_history_is_append_only(c: Any) -> None:
    r = _report(c, 119.308, 26.048, cat="noise")
    for sql in ("UPDATE incident_history SET note = 'x' WHERE incident_id = :i",
                "DELETE FROM incident_history WHERE incident_id = :i"):
        sp = c.begin_nested()
        with pytest.raises(DBAPIError, match="append-only"):
            c.execute(text(sql), {"i": r.id})
        sp.rollback()


def test_failure_mid_transition_leaves_case_unchanged(db: Engine, monkeypatch: Any) -> None:
    with db.begin() as c:
        r = _report(c, 119.3155, 26.055, cat="pipe_burst", now=NOW - timedelta(days=30))
    with db.connect() as c:
        before = c.execute(text("SELECT * FROM incident WHERE id = :i"), {"i": r.id}).one()
        hist = c.execute(text("SELECT count(*) FROM incident_history WHERE incident_id = :i"),
                         {"i": r.id}).scalar()

    def boom(*a: Any, **k: Any) -> None:
        raise RuntimeError("injected failure after the history insert")

    monkeypatch.setattr(workflow, "_apply_update", boom)
    with pytest.raises(RuntimeError), db.begin() as c:
        inc.transition(c, r.id, "checked_in", actor="dept:water", settings=SETTINGS)
    with db.connect() as c:
        after = c.execute(text("SELECT * FROM incident WHERE id = :i"), {"i": r.id}).one()
        assert after == before
        assert c.execute(text("SELECT count(*) FROM incident_history WHERE incident_id = :i"),
                         {"i": r.id}).scalar() == hist


def test_reroute_urge_escalate(c: Any) -> None:
    r = _report(c, 119.309, 26.049, cat="snow_ice")  # check-in 0.5 working days
    inc.reroute(c, r.id, ["water"], actor="centre", settings=SETTINGS, now=NOW)
    inc.urge(c, r.id, actor="district-command", note="市委督单")
    late = NOW + timedelta(days=1)
    esc = inc.escalate_overdue(c, settings=SETTINGS, now=late)
    assert [e["to"] for e in esc if e["incident_id"] == r.id] == ["street"]
    esc2 = inc.escalate_overdue(c, settings=SETTINGS, now=late + timedelta(days=1))
    assert [e["to"] for e in esc2 if e["incident_id"] == r.id] == ["district"]
    esc3 = inc.escalate_overdue(c, settings=SETTINGS, now=late + timedelta(days=9))
    assert [e["to"] for e in esc3 if e["incident_id"] == r.id] == ["city"]
    esc4 = inc.escalate_overdue(c, settings=SETTINGS, now=late + timedelta(days=19))
    assert [e for e in esc4 if e["incident_id"] == r.id] == []
    case = inc.get(c, r.id)
    assert case["departments"] == ["water"] and case["urge_count"] == 1
    assert [h["action"] for h in case["history"]] == [
        "report", "reroute", "urge", "escalate", "escalate", "escalate"]
    with pytest.raises(InvalidInput):
        inc.reroute(c, r.id, ["no_such_dept"], actor="centre", settings=SETTINGS)


# ---------------------------------------------------------------- SLA calendar


def test_working_day_calendar() -> None:
    cal = inc.WorkCalendar(inc.IncidentSettings(holidays=[date(2026, 11, 30)]))
    fri_10 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # Friday 10:00 Asia/Shanghai
    # 1 working day from Friday 10:00 skips Sat, Sun and the Monday holiday: Tuesday 10:00
    assert cal.add(fri_10, 1) == datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    assert cal.add(fri_10, 0.5) == datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
    sat = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
    assert cal.add(sat, 2) == datetime(2026, 12, 2, 16, 0, tzinfo=UTC)  # Wed 24:00 local


def test_amber_red_and_overdue_lists(c: Any) -> None:
    r = _report(c, 119.301, 26.041, cat="manhole_missing")  # resolve in 1 working day
    due = c.execute(text("SELECT resolve_due, amber_at FROM incident WHERE id = :i"),
                    {"i": r.id}).one()
    assert due.resolve_due == NOW + timedelta(days=1)
    assert due.amber_at == NOW + timedelta(hours=0.8 * 24)
    assert inc.get(c, r.id, now=NOW + timedelta(hours=1))["sla"] == "green"
    assert inc.get(c, r.id, now=NOW + timedelta(hours=20))["sla"] == "amber"
    assert inc.get(c, r.id, now=NOW + timedelta(hours=25))["sla"] == "red"
    red = inc.overdue(c, street=STREET, now=NOW + timedelta(hours=25))
    assert r.id in [o["id"] for o in red]
    assert r.id not in [o["id"] for o in inc.overdue(c, street=STREET, now=NOW)]
    assert r.id in [o["id"] for o in inc.overdue(c, grid=GRID_W, level="amber",
                                                 now=NOW + timedelta(hours=20))]
    assert r.id in [o["id"] for o in inc.overdue(c, department="water",
                                                 now=NOW + timedelta(hours=25))]


# ---------------------------------------------------------------- photos, stats, routing table


def test_photo_size_limit(c: Any) -> None:
    r = _report(c, 119.302, 26.043, cat="facade_falling")
    small = inc.IncidentSettings(photo_max_bytes=100)
    pid = inc.attach_photo(c, r.id, b"\xff\xd8" + b"x" * 50, "image/jpeg", settings=small)
    assert inc.get_photo(c, r.id, pid)[0][:2] == b"\xff\xd8"
    with pytest.raises(PayloadTooLarge):
        inc.attach_photo(c, r.id, b"x" * 101, "image/jpeg", settings=small)


def test_stats_per_grid_geojson(c: Any) -> None:
    a = _report(c, 119.3011, 26.0411, cat="street_stall")
    _report(c, 119.3189, 26.0589, cat="street_stall")
    t = NOW
    for s, h in [("checked_in", 2), ("consulting", 3), ("in_progress", 4), ("feedback", 10)]:
        t += timedelta(hours=h)
        inc.transition(c, a.id, s, actor="d", settings=SETTINGS, now=t)
    inc.transition(c, a.id, "rated", actor="r", rating=4, settings=SETTINGS, now=t)
    fc = inc.stats_geojson(c, by="grid", start=NOW - timedelta(minutes=1),
                           end=NOW + timedelta(minutes=1))
    feats = {f["id"]: f for f in fc["features"]}
    assert set(feats) == {GRID_W, GRID_E}
    w = feats[GRID_W]["properties"]
    assert w["incidents"] == 1 and w["median_checkin_h"] == pytest.approx(2)
    assert w["median_consult_h"] == pytest.approx(3) and w["satisfaction_mean"] == 4
    coords = feats[GRID_W]["geometry"]["coordinates"][0][0]
    assert {tuple(p) for p in coords} == set(GRIDS[GRID_W].exterior.coords)
    deps = {r["code"]: r["incidents"] for r in inc.stats(c, by="department",
                                                           start=NOW - timedelta(minutes=1))}
    assert deps == {"market": 2, "urban_management": 2}


def test_routing_table_editable(c: Any) -> None:
    cats = {x["code"]: x for x in inc.categories(c)}
    assert len(cats) == 12 and cats["rubbish"]["name_zh"] == "垃圾堆放"
    inc.set_routing(c, "rubbish", ["urban_management", "sanitation"])
    r = _report(c, 119.303, 26.044)
    assert inc.get(c, r.id)["departments"] == ["sanitation", "urban_management"]
    with pytest.raises(InvalidInput):
        inc.set_routing(c, "nope", ["water"])


# ---------------------------------------------------------------- filing many at once


@pytest.fixture
def batch_db(fresh_database: Any) -> Iterator[Engine]:
    """A database of its own: these tests commit."""
    with two_grid_engine(fresh_database()) as eng:
        yield eng


def _rows(eng: Engine) -> list[Any]:
    with eng.connect() as conn:
        return conn.execute(text("SELECT id, category_code, grid_code, status, duplicate_of,"
                                 " description FROM incident ORDER BY id")).all()


def test_file_reports_files_the_good_refuses_the_bad_and_links_twins(batch_db: Engine) -> None:
    west = (119.305, 26.05)
    twin = offset(*west, 30, 45)
    east = (119.315, 26.045)
    batch = [
        dict(category="rubbish", lon=west[0], lat=west[1], description="a"),
        dict(category="rubbish", lon=twin[0], lat=twin[1], description="twin of a"),
        dict(category="no-such-thing", lon=east[0], lat=east[1], description="bad category"),
        dict(category="rubbish", lon=121.5, lat=31.2, description="Shanghai: outside"),
        dict(category="noise", lon=west[0], lat=west[1], description="other category"),
        dict(category="noise", lon=east[0], lat=east[1], description="nul \x00 byte"),
        dict(category="noise", lon=east[0], lat=east[1], description="east"),
    ]
    out = inc.file_reports(batch_db, batch, settings=SETTINGS)
    a, b, bad_cat, outside, other, nul, e = out
    assert a.status == "reported" and a.grid_code == GRID_W
    assert GRIDS[GRID_W].contains(Point(*west)) and GRIDS[GRID_E].contains(Point(*east))
    assert (b.status, b.duplicate_of) == ("duplicate", a.id)
    assert isinstance(bad_cat, InvalidInput) and bad_cat.problems[0].field == "category"
    assert isinstance(outside, Exception) and not isinstance(outside, inc.ReportResult)
    assert (other.status, other.duplicate_of) == ("reported", None)
    assert isinstance(nul, InvalidInput) and nul.problems[0].field == "description"
    assert e.grid_code == GRID_E and e.status == "reported"
    rows = _rows(batch_db)
    assert [r.description for r in rows] == ["a", "twin of a", "other category", "east"]
    with batch_db.connect() as conn:
        hist = conn.execute(text("SELECT incident_id, action FROM incident_history"
                                 " ORDER BY id")).all()
    assert sorted((h.incident_id, h.action) for h in hist) == sorted(
        [(a.id, "report"), (b.id, "report"), (a.id, "duplicate_linked"), (other.id, "report"),
         (e.id, "report")])


def test_file_reports_falls_back_to_one_transaction_each(batch_db: Engine,
                                                         monkeypatch: Any) -> None:
    """A database error in one report drops the shared transaction; each report is then filed
    alone, and only the one that failed is missing."""
    original = intake._insert_report

    def failing(conn: Any, args: Any, *rest: Any) -> Any:
        if args.get("description") == "boom":
            conn.exec_driver_sql("SELECT 1 / 0")  # a real error: the transaction is aborted
        return original(conn, args, *rest)

    monkeypatch.setattr(intake, "_insert_report", failing)
    batch = [dict(category="rubbish", lon=119.301 + 0.002 * i, lat=26.05,
                  description="boom" if i == 2 else f"r{i}") for i in range(5)]
    out = inc.file_reports(batch_db, batch, settings=SETTINGS)
    assert isinstance(out[2], DBAPIError)
    assert all(isinstance(r, inc.ReportResult) for i, r in enumerate(out) if i != 2)
    assert [r.description for r in _rows(batch_db)] == ["r0", "r1", "r3", "r4"]


def test_report_writer_files_concurrent_twins_once(batch_db: Engine) -> None:
    """Many callers, two writer threads, small batches: every report is filed exactly once,
    and each cluster of twins has one case with all the others linked to it."""
    from concurrent.futures import ThreadPoolExecutor

    sites = [(119.303, 26.043), (119.307, 26.057), (119.313, 26.05), (119.318, 26.042)]
    jobs = [(k, offset(*sites[k], 10 * (j % 3), 60 * j)) for j in range(12) for k in range(4)]
    writer = inc.ReportWriter(batch_db, SETTINGS, threads=2, max_batch=5)
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = list(pool.map(lambda job: writer.submit(
                category="rubbish", lon=job[1][0], lat=job[1][1], description=f"site {job[0]}"),
                jobs))
        results = [f.result(timeout=60) for f in futures]
    finally:
        writer.close()
    rows = _rows(batch_db)
    assert len(rows) == len(jobs) == len({r.id for r in results})
    for k in range(4):
        mine = [r for r in rows if r.description == f"site {k}"]
        cases = [r for r in mine if r.status == "reported"]
        assert len(cases) == 1
        assert all(r.duplicate_of == cases[0].id for r in mine if r is not cases[0])


def test_report_writer_survives_callers_that_give_up(batch_db: Engine) -> None:
    """A cancelled report (its caller went away before it was taken) is not filed, and the
    writer keeps serving the others."""
    writer = inc.ReportWriter(batch_db, SETTINGS, threads=1, max_batch=4)
    try:
        outcomes = []
        for i in range(30):
            future = writer.submit(category="rubbish", lon=119.301 + 0.0005 * i, lat=26.05,
                                   description=f"g{i}")
            outcomes.append((i, future.cancel(), future))
        kept = writer.submit(category="noise", lon=119.315, lat=26.045, description="kept")
        assert kept.result(timeout=60).status == "reported"
        filed = {r.description for r in _rows(batch_db)}
        for i, cancelled, future in outcomes:
            if cancelled:
                assert f"g{i}" not in filed
            else:
                assert future.result(timeout=60).id > 0 and f"g{i}" in filed
        assert all(t.is_alive() for t in writer._threads)
    finally:
        writer.close()
