"""Scoping inside handlers: each role reaches only its own rows (issue 8), with access enforced.

Hand-made district 350104 with two streets split at lon 119.31:
- street 350104001 (west): community ...001001, grids W1A (lon 119.300-119.305) and W1B
  (119.305-119.310);
- street 350104002 (east): community ...002001, grid E2 (119.31-119.32).

Four incidents whose place, reporter and department are chosen here (routing from migration
0004: rubbish → sanitation, sewer_blocked and pipe_burst → water):

| case | grid | reporter  | department |
|------|------|-----------|------------|
| A    | W1A  | resident1 | sanitation |
| B    | W1B  | resident2 | water      |
| C    | E2   | resident1 | water      |
| D    | E2   | admin     | sanitation |

The expected rows below come from this table, not from the code under test.
"""

from __future__ import annotations

import json
from typing import Any

import geopandas as gpd
import pytest
from factories import (  # noqa: F401
    CASES,
    DISTRICT,
    E2,
    SCOPED_AREA_SQL,
    SCOPED_GRIDS,
    SCOPING_AUTH,
    STREET1,
    STREET2,
    USERS,
    W1A,
    W1B,
    Located,
    World,
    locator,
    new_case,
    status_of,
    tiny_png,
)
from shapely.geometry import box
from sqlalchemy import event, text

from geo import incidents as inc
from geo.auth.service import Scope, refuse_import_outside
from geo.core.errors import Forbidden
from geo.data import mapdata

# What each role reaches, from the table in the module docstring.
EXPECTED = {
    "resident1": {"A", "C"},
    "resident2": {"B"},
    "gridworker": {"A"},
    "commander": {"A", "B"},
    "planner": {"A", "B"},
    "water": {"B", "C"},
    "sanitation": {"A", "D"},
    "admin": {"A", "B", "C", "D"},
}
STAFF = ("gridworker", "commander", "water", "sanitation", "admin")


@pytest.fixture(scope="module")
def world(scoped_world: World) -> World:
    """This module's copy of the scoped district (the ``scoped_world`` fixture, conftest.py)."""
    return scoped_world


# ---------------------------------------------------------------- reads


def test_reports_record_the_signed_in_reporter(world: World) -> None:
    with world.engine.connect() as c:
        got = dict(c.execute(text("SELECT id, reporter_user_id FROM incident WHERE id = ANY(:i)"),
                             {"i": list(world.ids.values())}).all())
    for letter, _, _, _, who in CASES:
        assert got[world.ids[letter]] == world.user_ids[who]


@pytest.mark.parametrize("who", sorted(EXPECTED))
def test_list_returns_exactly_the_callers_rows(world: World, who: str) -> None:
    r = world.get(who, "/v1/incidents", params={"limit": 1000})
    assert r.status_code == 200, r.text
    assert world.letters(r.json()["items"]) & set(world.ids) == EXPECTED[who]
    assert r.json()["total"] == len(r.json()["items"])


@pytest.mark.parametrize("who", sorted(EXPECTED))
def test_get_inside_allowed_outside_refused(world: World, who: str) -> None:
    for letter, incident_id in world.ids.items():
        r = world.get(who, f"/v1/incidents/{incident_id}")
        if letter in EXPECTED[who]:
            assert r.status_code == 200, (letter, r.text)
            assert r.json()["id"] == incident_id
        elif who.startswith("resident"):
            assert r.status_code == 404, (letter, r.text)  # existence not leaked
        else:
            assert r.status_code == 403, (letter, r.text)


def test_resident_sees_anothers_report_as_missing(world: World) -> None:
    other = world.get("resident2", f"/v1/incidents/{world.ids['A']}")
    missing = world.get("resident2", "/v1/incidents/987654321")
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"].replace(str(world.ids["A"]), "N") == \
        missing.json()["detail"].replace("987654321", "N")


@pytest.mark.parametrize("who", STAFF)
def test_overdue_lists_only_the_callers_rows(world: World, who: str) -> None:
    r = world.get(who, "/v1/incidents/overdue", params={"level": "red"})
    assert r.status_code == 200, r.text
    assert world.letters(r.json()["items"]) & set(world.ids) == EXPECTED[who]
    total, rows = r.json()["total"], r.json()["items"]
    assert total == len(rows)
    paged, url = [], "/v1/incidents/overdue?level=red&limit=1"
    while url:  # one case a page, following the next links
        page = world.get(who, url).json()
        assert page["total"] == total and len(page["items"]) <= 1
        paged += page["items"]
        url = next((x["href"] for x in page["links"] if x["rel"] == "next"), None)
    assert [x["id"] for x in paged] == [x["id"] for x in rows]


@pytest.mark.parametrize("who, grids", [("gridworker", {W1A}), ("commander", {W1A, W1B}),
                                        ("water", {W1B, E2}), ("admin", {W1A, W1B, E2})])
def test_stats_cover_only_the_callers_rows(world: World, who: str, grids: set[str]) -> None:
    r = world.get(who, "/v1/incidents/stats", params={"by": "grid", "format": "json"})
    assert r.status_code == 200, r.text
    assert {row["code"] for row in r.json()} == grids
    geo = world.get(who, "/v1/incidents/stats", params={"by": "street"}).json()
    streets = {g[:9] for g in grids}
    assert {f["id"] for f in geo["features"]} == streets


def test_area_filters_outside_the_area_are_refused(world: World) -> None:
    assert world.get("commander", "/v1/incidents", params={"street": STREET2}).status_code == 403
    assert world.get("gridworker", "/v1/incidents/overdue",
                     params={"grid": W1B}).status_code == 403
    assert world.get("commander", "/v1/incidents/stats",
                     params={"street": STREET2}).status_code == 403
    # a wider filter than the caller's area is narrowed by the scope, not refused
    r = world.get("gridworker", "/v1/incidents", params={"street": STREET1})
    assert r.status_code == 200 and world.letters(r.json()["items"]) & set(world.ids) == {"A"}


# ---------------------------------------------------------------- changes


def test_grid_worker_moves_and_reroutes_only_their_grids(world: World) -> None:
    mine, theirs = new_case(world, "admin", W1A), new_case(world, "admin", W1B)
    ok = world.post("gridworker", f"/v1/incidents/{mine}/transitions", {"to": "checked_in"})
    assert ok.status_code == 200, ok.text
    no = world.post("gridworker", f"/v1/incidents/{theirs}/transitions", {"to": "checked_in"})
    assert no.status_code == 403 and status_of(world, theirs) == "reported"
    assert world.post("gridworker", f"/v1/incidents/{mine}/reroute",
                      {"departments": ["water"]}).status_code == 200
    assert world.post("gridworker", f"/v1/incidents/{theirs}/reroute",
                      {"departments": ["water"]}).status_code == 403


def test_department_staff_move_only_their_departments_cases(world: World) -> None:
    case = new_case(world, "admin", E2, category="pipe_burst")  # routed to water
    no = world.post("sanitation", f"/v1/incidents/{case}/transitions", {"to": "checked_in"})
    assert no.status_code == 403 and status_of(world, case) == "reported"
    ok = world.post("water", f"/v1/incidents/{case}/transitions", {"to": "checked_in"})
    assert ok.status_code == 200 and status_of(world, case) == "checked_in"


def test_commander_urges_only_in_their_area(world: World) -> None:
    inside, outside = new_case(world, "admin", W1B), new_case(world, "admin", E2)
    assert world.post("commander", f"/v1/incidents/{inside}/urge", {}).status_code == 200
    assert world.post("commander", f"/v1/incidents/{outside}/urge", {}).status_code == 403
    with world.engine.connect() as c:
        urged = dict(c.execute(text("SELECT id, urge_count FROM incident WHERE id = ANY(:i)"),
                               {"i": [inside, outside]}).all())
    assert urged == {inside: 1, outside: 0}


def test_commander_escalates_only_in_their_area(world: World) -> None:
    inside, outside = new_case(world, "admin", W1A), new_case(world, "admin", E2)
    with world.engine.begin() as c:
        c.execute(text("UPDATE incident SET checkin_due = now() - interval '1 hour'"
                       " WHERE id = ANY(:i)"), {"i": [inside, outside]})
    r = world.post("commander", "/v1/incidents/escalate")
    assert r.status_code == 200, r.text
    escalated = {e["incident_id"] for e in r.json()}
    assert inside in escalated and outside not in escalated
    with world.engine.connect() as c:
        levels = dict(c.execute(text("SELECT id, escalation_level FROM incident"
                                     " WHERE id = ANY(:i)"), {"i": [inside, outside]}).all())
        grids = c.execute(text("SELECT DISTINCT left(grid_code, 9) FROM incident"
                               " WHERE id = ANY(:i)"), {"i": list(escalated)}).scalars().all()
    assert levels == {inside: "street", outside: "grid"}
    assert set(grids) == {STREET1}


def test_resident_rates_only_their_own_report(world: World) -> None:
    case = new_case(world, "resident1", W1B, category="parking")
    for step in ("checked_in", "consulting", "in_progress", "feedback"):
        assert world.post("admin", f"/v1/incidents/{case}/transitions",
                          {"to": step}).status_code == 200
    other = world.post("resident2", f"/v1/incidents/{case}/transitions",
                       {"to": "rated", "rating": 1})
    assert other.status_code == 404 and status_of(world, case) == "feedback"
    staff_step = world.post("resident1", f"/v1/incidents/{case}/transitions", {"to": "closed"})
    assert staff_step.status_code == 403
    ok = world.post("resident1", f"/v1/incidents/{case}/transitions", {"to": "rated", "rating": 5})
    assert ok.status_code == 200 and status_of(world, case) == "rated"


def test_photos_follow_the_scope(world: World) -> None:
    a = world.ids["A"]
    png = {"Content-Type": "image/png"}
    r = world.client.post(f"/v1/incidents/{a}/photos", content=tiny_png(),
                          headers={**world.headers["resident1"], **png})
    assert r.status_code == 201, r.text
    photo = r.json()["id"]
    other = world.client.post(f"/v1/incidents/{a}/photos", content=tiny_png(),
                              headers={**world.headers["resident2"], **png})
    assert other.status_code == 404
    assert world.get("resident1", f"/v1/incidents/{a}/photos/{photo}").status_code == 200
    assert world.get("gridworker", f"/v1/incidents/{a}/photos/{photo}").status_code == 200
    assert world.get("resident2", f"/v1/incidents/{a}/photos/{photo}").status_code == 404
    assert world.get("water", f"/v1/incidents/{a}/photos/{photo}").status_code == 403


# ---------------------------------------------------------------- maps and layers


@pytest.mark.parametrize("page", ["/maps/grids", "/maps/incidents", "/maps/coverage"])
def test_commander_maps_show_only_their_area(world: World, page: str) -> None:
    r = world.get("commander", page)
    assert r.status_code == 200, r.text[:300]
    assert f'"{W1A}"' in r.text and f'"{W1B}"' in r.text and f'"{E2}"' not in r.text
    wider = world.get("commander", page, params={"within": DISTRICT})
    assert wider.status_code == 200 and f'"{E2}"' not in wider.text
    assert world.get("commander", page, params={"within": STREET2}).status_code == 403
    assert f'"{E2}"' in world.get("admin", page).text


def test_incident_map_data_is_filtered_in_sql(world: World) -> None:
    with world.engine.connect() as c:
        rows = mapdata.incidents_for_map(c, within=STREET1)
        grid_rows = mapdata.incidents_for_map(c, within=W1A)
    assert world.letters(rows.to_dict("records")) & set(world.ids) == {"A", "B"}
    assert world.letters(grid_rows.to_dict("records")) & set(world.ids) == {"A"}


@pytest.mark.parametrize("who, layer, codes", [
    ("commander", "grid", {W1A, W1B}), ("commander", "street", {STREET1}),
    ("gridworker", "grid", {W1A}), ("admin", "grid", {W1A, W1B, E2}),
])
def test_layer_reads_are_limited_to_the_area(world: World, who: str, layer: str,
                                             codes: set[str]) -> None:
    r = world.get(who, f"/v1/layers/{layer}")
    assert r.status_code == 200, r.text
    assert {f["properties"]["code"] for f in r.json()["features"]} == codes


def test_layer_read_outside_the_area_is_refused(world: World) -> None:
    assert world.get("commander", "/v1/layers/grid",
                     params={"within": STREET2}).status_code == 403
    bad = world.get("commander", "/v1/layers/grid", params={"within": "35x"})
    assert bad.status_code == 422 and "within" in bad.text


def _grid_upload(*features: tuple[str, Any]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": json.loads(gpd.GeoSeries([g]).to_json())["features"][0]
         ["geometry"], "properties": {"code": code, "parent_code": code[:12], "name": code,
                                      "responsible_body": "居委会"}}
        for code, g in features]}).encode()


def test_planner_import_refuses_features_outside_their_street(world: World) -> None:
    body = _grid_upload((W1A, SCOPED_GRIDS[W1A]), (E2, SCOPED_GRIDS[E2]))
    r = world.client.post("/v1/layers/import", headers=world.headers["planner"],
                          files={"file": ("grids.geojson", body, "application/geo+json")},
                          data={"layer": "grid"})
    assert r.status_code == 403, r.text
    problems = r.json()["problems"]
    assert {"reason": f"outside your area {STREET1}", "field": "code",
            "feature": "grid[1]"} in problems
    assert not any(p.get("feature") == "grid[0]" for p in problems)
    with world.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM generation")).scalar() == 1


def test_import_scope_check(world: World) -> None:
    """Features inside, layer holding only the area: admitted; otherwise refused by name."""
    frame = gpd.GeoDataFrame({"code": [W1A, W1B]},
                             geometry=[SCOPED_GRIDS[W1A], SCOPED_GRIDS[W1B]], crs=4326)
    walk = gpd.GeoDataFrame({"name": ["far"]}, geometry=[box(120, 27, 120.1, 27.1)], crs=4326)
    with world.engine.connect() as c:
        refuse_import_outside(c, {"grid": frame}, DISTRICT)  # the district holds every grid
        with pytest.raises(Forbidden) as street:
            refuse_import_outside(c, {"grid": frame}, STREET1)  # stored E2 would be replaced
        with pytest.raises(Forbidden) as edges:
            refuse_import_outside(c, {"walk_edge": walk}, DISTRICT)
    assert [p.feature for p in street.value.problems] == ["grid"]
    assert [(p.feature, p.field) for p in edges.value.problems] == [("walk_edge[0]", "geometry")]


# ---------------------------------------------------------------- the filters use indexes

BULK_SQL = """
INSERT INTO incident (category_code, location, district_code, street_code, community_code,
    grid_code, status, department_ids, reporter_user_id, reported_at, checkin_due, amber_at,
    resolve_due)
SELECT 'rubbish', ST_SetSRID(ST_MakePoint(119.3, 26.05), 4326), '350104', s, s || '001',
    s || '001' || lpad((1 + g / 100 % 20)::text, 3, '0'),
    CASE WHEN g % 3 = 0 THEN 'reported' ELSE 'closed' END, ARRAY[1 + g % 11],
    CASE WHEN g % 1000 = 0 THEN CAST(:uid AS bigint) END,
    now() - g * interval '1 minute', now(), now(), now()
FROM generate_series(1, 100000) g, LATERAL (SELECT '350104' || lpad((1 + g % 100)::text, 3, '0')
    AS s) st
"""


SCOPES = [Scope(area=STREET1), Scope(area=W1A), Scope(reporter_user_id=0),  # 0: set below
          Scope(department_id=3)]


def _plans(conn: Any, call: Any) -> list[str]:
    """The EXPLAIN of the last statement ``call(conn)`` runs (the real query, real values)."""
    seen: list[tuple[str, Any]] = []

    def grab(*args: Any) -> None:
        seen.append((args[2], args[3]))

    event.listen(conn, "before_cursor_execute", grab)
    try:
        call(conn)
    finally:
        event.remove(conn, "before_cursor_execute", grab)
    statement, parameters = seen[-1]
    cursor = conn.connection.cursor()
    cursor.execute("EXPLAIN " + statement, parameters)
    return [r[0] for r in cursor.fetchall()]


def test_scoped_lists_use_indexes_not_a_table_scan(world: World) -> None:
    """Over 100k cases (100 streets x 20 grids, 11 departments; rolled back) the scoped list
    and overdue queries never scan the incident table (figures at 2 M in
    docs/sections/security.md)."""
    uid = world.user_ids["resident2"]
    scans = {}
    with world.engine.connect() as c, c.begin() as tx:
        c.execute(text(BULK_SQL), {"uid": uid})
        c.exec_driver_sql("ANALYZE incident")
        # incident is partitioned by month (migration 0016): a partition's index counts as
        # its parent's ix_ index, and only a scan of a month holding rows is a table scan
        parent_of = dict(c.execute(text(
            "SELECT h.inhrelid::regclass::text, h.inhparent::regclass::text FROM pg_inherits h"
            " JOIN pg_class p ON p.oid = h.inhparent WHERE p.relkind = 'I'")).all())
        full = {t for t, n in c.execute(text(
            "SELECT tableoid::regclass::text, count(*) FROM incident GROUP BY 1")).all() if n}
        for scope in SCOPES:
            if scope.reporter_user_id is not None:
                scope = Scope(reporter_user_id=uid)
            for name, fn, kw in (("list", inc.list_incidents, {"limit": 100}),
                                 ("overdue", inc.overdue, {"level": "amber"})):
                plan = _plans(c, lambda conn, fn=fn, kw=kw, s=scope: fn(conn, scope=s, **kw))
                words = [w for line in plan for w in line.split()]
                indexes = sorted({parent_of.get(w, w) for w in words
                                  if parent_of.get(w, w)[:3] == "ix_"})
                scans[(scope, name)] = (indexes, any(
                    f"Seq Scan on {t} " in line for line in plan for t in full))
        tx.rollback()
    assert [k for k, (indexes, seq) in scans.items() if seq or not indexes] == [], scans
