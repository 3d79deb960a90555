"""Planning over HTTP on the synthetic city, with access enforcement and area scope on.

Each test gets its own copy of one synthetic city (24 grids: two communities of street 001).
Every expectation is computed independently with shapely from the database rows read back
(areas in UTM 50N, m²), never from the numbers the planning code returned.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pytest
import shapely
from factories import (  # noqa: F401
    C1,
    C2,
    PLANNING_AUTH,
    RULE,
    TO_UTM,
    TO_WGS,
    UTM,
    WARN,
    S,
    assert_sound,
    buildings,
    community_geom,
    grids,
    moved_boundary,
    refused,
    snapshot,
    split_line,
    utm,
    wgs,
)
from shapely.geometry import LineString, mapping
from sqlalchemy import text
from typer.testing import CliRunner

# -- operations -----------------------------------------------------------------------------


def test_split_on_synthetic_city(api):
    client, eng, h = api
    code = C1 + "005"
    old, cx, line, _ = split_line(eng, code)
    before = snapshot(eng)
    body = {"code": code, "line": mapping(line)}
    refused(client.post("/v1/planning/split", json=body, headers=h["planner_out"]), 403, code)
    miss = {"code": code, "line": mapping(wgs(LineString([(cx, old.bounds[3] + 5),
                                                          (cx, old.bounds[3] + 50)])))}
    refused(client.post("/v1/planning/split", json=miss, headers=h["planner_in"]), 422, "line")
    assert snapshot(eng) == before
    r = client.post("/v1/planning/split", json=body, headers=h["planner_in"])
    assert r.status_code == 200, r.text
    created = r.json()["created"]
    now = grids(eng)
    assert code not in now and len(created) == 2
    pieces = [now[c] for c in created]
    assert shapely.union_all(pieces).symmetric_difference(old).area < 1.0
    west, east = sorted(pieces, key=lambda g: g.centroid.x)
    assert west.bounds[2] == pytest.approx(cx, abs=0.5) and east.bounds[0] == pytest.approx(cx,
                                                                                          abs=0.5)
    assert created == sorted(created)  # DB11: the western piece numbered first
    assert now[created[0]].centroid.x < now[created[1]].centroid.x
    assert_sound(eng, [C1, C2])
    d = client.get("/v1/planning/diff", params={"from": 1, "to": r.json()["generation"]},
                   headers=h["planner_in"]).json()
    assert d["codes_retired"] == [code] and sorted(d["codes_created"]) == sorted(created)
    bl = buildings(eng)
    inside_old = bl[bl.geometry.within(old)]
    assert {m["building"] for m in d["buildings_moved"]} == set(inside_old["code"])


def test_merge_on_synthetic_city(api):
    client, eng, h = api
    a, b, far = C2 + "001", C2 + "002", C2 + "003"
    cur = grids(eng)
    before = snapshot(eng)
    refused(client.post("/v1/planning/merge", json={"codes": [a, b]},
                        headers=h["planner_out"]), 403, "codes")
    refused(client.post("/v1/planning/merge", json={"codes": [a, far]},
                        headers=h["planner_in"]), 422, "adjacent")
    refused(client.post("/v1/planning/merge", json={"codes": [a, C1 + "001"]},
                        headers=h["planner_in"]), 422, "communities")
    assert snapshot(eng) == before
    r = client.post("/v1/planning/merge", json={"codes": [a, b]}, headers=h["planner_in"])
    assert r.status_code == 200, r.text
    (new,) = r.json()["created"]
    assert grids(eng)[new].symmetric_difference(cur[a].union(cur[b])).area < 1.0
    assert sorted(r.json()["retired"]) == [a, b]
    assert_sound(eng, [C2])


def test_reshape_on_synthetic_city(api):
    client, eng, h = api
    a, b = C1 + "001", C1 + "002"
    cur = grids(eng)
    new_a, new_b, strip_m2 = moved_boundary(cur, a, b, 25.0)
    before = snapshot(eng)
    only_a = {"geometries": {a: mapping(wgs(new_a))}}
    refused(client.post("/v1/planning/reshape", json=only_a, headers=h["planner_out"]), 403, a)
    r = client.post("/v1/planning/reshape", json=only_a, headers=h["planner_in"])
    refused(r, 422, "overlap", b)
    over = [p for p in r.json()["problems"] if "overlap" in p["reason"]]
    assert over[0]["detail"]["m2"] == pytest.approx(strip_m2, rel=0.02)
    assert snapshot(eng) == before
    both = {"geometries": {a: mapping(wgs(new_a)), b: mapping(wgs(new_b))}}
    r = client.post("/v1/planning/reshape", json=both, headers=h["planner_in"])
    assert r.status_code == 200, r.text
    now = grids(eng)
    assert now[a].area == pytest.approx(cur[a].area + strip_m2, abs=1.0)
    assert now[b].area == pytest.approx(cur[b].area - strip_m2, abs=1.0)
    assert_sound(eng, [C1])


def test_reassign_on_synthetic_city(api):
    client, eng, h = api
    bl = buildings(eng)
    code = bl[bl["grid_code"] == C1 + "001"]["code"].iloc[0]
    before = snapshot(eng)
    refused(client.post("/v1/planning/reassign", json={"assignments": {code: C1 + "002"}},
                        headers=h["planner_out"]), 403)
    refused(client.post("/v1/planning/reassign", json={"assignments": {code: C2 + "001"}},
                        headers=h["planner_in"]), 422, "within a community")
    refused(client.post("/v1/planning/reassign", json={"assignments": {"nope": C1 + "002"}},
                        headers=h["planner_in"]), 404, "nope")
    assert snapshot(eng) == before
    r = client.post("/v1/planning/reassign", json={"assignments": {code: C1 + "002"}},
                    headers=h["planner_in"])
    assert r.status_code == 200, r.text
    with eng.connect() as c:
        assert c.execute(text("SELECT grid_code FROM building WHERE code = :c"),
                         {"c": code}).scalar() == C1 + "002"
    d = client.get("/v1/planning/diff", params={"from": 1, "to": r.json()["generation"]},
                   headers=h["planner_in"]).json()
    assert d["buildings_moved"] == [{"building": code, "from": C1 + "001", "to": C1 + "002",
                                     "by": "assignment"}]


def _gpkg(frame: gpd.GeoDataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_file(buf, layer="grid", driver="GPKG")
    return buf.getvalue()


def test_import_on_synthetic_city(api):
    client, eng, h = api
    cur = grids(eng, C1)
    layer = gpd.GeoDataFrame({"code": [None] * len(cur), "parent_code": C1},
                             geometry=list(cur.values()), crs=UTM)
    files = {"file": ("grid.gpkg", _gpkg(layer), "application/geopackage+sqlite3")}
    before = snapshot(eng)
    refused(client.post("/v1/planning/import", files=files, headers=h["planner_in"]), 403,
            "community")
    refused(client.post("/v1/planning/import", files=files, data={"community": C1},
                        headers=h["planner_out"]), 403, "community")
    holed = layer.iloc[1:]
    r = client.post("/v1/planning/import", data={"community": C1}, headers=h["planner_in"],
                    files={"file": ("grid.gpkg", _gpkg(holed), "application/octet-stream")})
    refused(r, 422, "gap")
    gap = [p for p in r.json()["problems"] if p.get("detail", {}).get("check") == "gap"]
    assert gap[0]["detail"]["m2"] == pytest.approx(layer.geometry.iloc[0].area, rel=0.01)
    refused(client.post("/v1/planning/import", files=files, headers=h["planner_in"],
                        data={"community": C1, "layer": "nope"}), 422, "layer")
    assert snapshot(eng) == before
    r = client.post("/v1/planning/import", files=files, data={"community": C1},
                    headers=h["admin"])
    assert r.status_code == 200, r.text
    out = r.json()
    assert sorted(out["retired"]) == sorted(cur) and len(out["created"]) == len(cur)
    highest = max(int(c[-3:]) for c in cur)
    assert sorted(int(c[-3:]) for c in out["created"]) == list(
        range(highest + 1, highest + 1 + len(cur)))  # never a retired number
    assert_sound(eng, [C1, C2])


def test_draft_on_synthetic_city_keeps_balance_and_accepts(api):
    client, eng, h = api
    client.app.state.planning_settings = RULE
    refused(client.get(f"/v1/planning/draft/{C1}", headers=h["planner_out"]), 403, C1)
    r = client.get(f"/v1/planning/draft/{C1}", headers=h["planner_in"])
    assert r.status_code == 200, r.text
    fc = r.json()
    polys = np.asarray([utm(shapely.geometry.shape(f["geometry"])) for f in fc["features"]])
    bl = buildings(eng)
    comm = community_geom(eng, C1)
    bl = bl[bl.geometry.within(comm)]
    pt, poly = shapely.STRtree(polys).query(bl.geometry.values, predicate="intersects")
    assert (np.bincount(pt, minlength=len(bl)) == 1).all()
    hh = np.bincount(poly, weights=bl["households"].to_numpy()[pt], minlength=len(polys))
    assert ((hh >= RULE.households_min) & (hh <= RULE.households_max)).all(), hh
    assert hh.max() / hh.min() <= RULE.draft_ratio, hh
    assert shapely.union_all(polys).symmetric_difference(comm).area < 1.0
    before = snapshot(eng)
    bad = {"community": C1, "draft": {"type": "FeatureCollection", "features": []}}
    refused(client.post("/v1/planning/draft/accept", json=bad, headers=h["planner_in"]),
            422, "draft")
    refused(client.post("/v1/planning/draft/accept", json={"community": C1, "draft": fc},
                        headers=h["planner_out"]), 403, "community")
    assert snapshot(eng) == before
    r = client.post("/v1/planning/draft/accept", json={"community": C1, "draft": fc},
                    headers=h["planner_in"])
    assert r.status_code == 200, r.text
    with eng.connect() as c:
        gens = c.execute(text("SELECT max(id) FROM generation")).scalar()
    assert r.json()["generation"] == gens
    assert len(grids(eng, C1)) == len(polys)
    assert_sound(eng, [C1, C2])


def test_diff_unknown_generation_and_bad_body(api):
    client, eng, h = api
    refused(client.get("/v1/planning/diff", params={"from": 1, "to": 999},
                       headers=h["planner_in"]), 404, "999")
    refused(client.post("/v1/planning/split", json={"code": C1 + "001", "line": {"type": "x"}},
                        headers=h["planner_in"]), 422, "line")
    refused(client.post("/v1/planning/split", json={"code": C1 + "999", "line": mapping(
        LineString([(0, 0), (1, 1)]))}, headers=h["planner_in"]), 404, C1 + "999")


def test_lookup_follows_the_change_by_date(api):
    from geo.lookup import locate_point

    client, eng, h = api
    code = C1 + "005"
    _, _, line, west = split_line(eng, code)
    r = client.post("/v1/planning/split", headers=h["planner_in"], json={
        "code": code, "line": mapping(line), "effective_from": "2031-01-01T00:00:00+08:00"})
    assert r.status_code == 200, r.text
    west_code = min(r.json()["created"])
    with eng.connect() as c:
        assert locate_point(c, west.x, west.y, at="2030-06-01").grid["code"] == code
        assert locate_point(c, west.x, west.y, at="2031-06-01").grid["code"] == west_code
    assert datetime(2031, 1, 1, tzinfo=UTC) > datetime.now(UTC)  # the old grid is today's


def test_cli_grid_merge_and_refusal(api):
    from cli.main import app

    _, eng, _ = api
    env = {"WANGGE_DATABASE_URL": eng.url.render_as_string(hide_password=False),
           "WANGGE_BALANCE_MODE": "warn"}
    runner = CliRunner()
    before = snapshot(eng)
    r = runner.invoke(app, ["grid", "merge", C1 + "001", C1 + "003"], env=env)
    assert r.exit_code == 1 and "adjacent" in r.output, r.output
    assert snapshot(eng) == before
    r = runner.invoke(app, ["grid", "merge", C1 + "001", C1 + "002"], env=env)
    assert r.exit_code == 0, r.output
    assert C1 + "001" not in grids(eng) and C1 + "013" in grids(eng)
    r = runner.invoke(app, ["grid", "diff", "1", "2"], env=env)
    assert r.exit_code == 0 and C1 + "013" in r.output
