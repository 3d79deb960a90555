"""Dry runs of planning changes over HTTP (the preview routes) on the synthetic city.

Fixtures (conftest.py) and independent reads (factories.py): a private copy of the city per
test. Expectations are computed with shapely from the database rows (UTM 50N, m²), never from
the figures the preview returned; "nothing written" is a snapshot of every planning table.
"""

from __future__ import annotations

import shapely
from factories import (
    C1,
    C2,
    RULE,
    buildings,
    community_geom,
    grids,
    snapshot,
    split_line,
    utm,
    wgs,
)
from shapely.geometry import mapping, shape


def test_preview_split_writes_nothing_and_matches_the_real_split(api):
    client, eng, h = api
    code = C1 + "005"
    old, _cx, line, west_pt = split_line(eng, code)
    bl = buildings(eng)
    inside = bl[bl.geometry.within(old)]
    before = snapshot(eng)
    body = {"code": code, "line": mapping(line)}
    r = client.post("/v1/planning/preview/split", json=body, headers=h["planner_in"])
    assert r.status_code == 200, r.text
    p = r.json()
    assert snapshot(eng) == before  # nothing written
    assert p["accepted"] is True and p["retired"] == [code] and len(p["codes"]) == 2
    assert p["codes"] == sorted(p["codes"])
    feats = {f["properties"]["code"]: f for f in p["grids"]["features"]}
    assert set(feats) == set(p["codes"])
    pieces = [utm(shape(feats[c]["geometry"])) for c in p["codes"]]
    assert shapely.union_all(pieces).symmetric_difference(old).area < 1.0
    for c, g in zip(p["codes"], pieces, strict=True):  # households and residents by location
        mine = inside[inside.geometry.within(g)]
        assert feats[c]["properties"]["households"] == int(mine["households"].sum())
    assert sum(f["properties"]["households"] for f in feats.values()) == int(
        inside["households"].sum())
    # the same code path: the real split creates exactly the previewed codes and shapes
    real = client.post("/v1/planning/split", json=body, headers=h["planner_in"])
    assert real.status_code == 200, real.text
    assert real.json()["created"] == p["codes"]
    now = grids(eng)
    for c, g in zip(p["codes"], pieces, strict=True):
        assert now[c].symmetric_difference(g).area < 1.0
    assert any(now[c].contains(utm(west_pt)) for c in p["codes"])


def test_refused_preview_locates_each_problem_with_its_figure(api):
    client, eng, h = api
    code = C2 + "004"
    old = grids(eng)[code]
    shrunk = old.buffer(-25)
    hole = old.difference(shrunk)
    before = snapshot(eng)
    r = client.post("/v1/planning/preview/reshape",
                    json={"geometries": {code: mapping(wgs(shrunk))}},
                    headers=h["planner_in"])
    assert r.status_code == 200, r.text
    p = r.json()
    assert snapshot(eng) == before
    assert p["accepted"] is False and p["changed"] == [code]
    probs = p["problems"]["features"]
    gaps = [f for f in probs if f["properties"]["check"] == "gap"]
    assert len(gaps) == 1 and gaps[0]["properties"]["severity"] == "error"
    assert abs(gaps[0]["properties"]["m2"] - hole.area) < 0.01 * hole.area
    assert hole.buffer(0.5).contains(utm(shape(gaps[0]["geometry"])))
    # buildings in the strip lost lie in no grid: each located at the building
    bl = buildings(eng)
    lost = set(bl[bl.geometry.within(hole)]["code"])
    homeless = {f["properties"]["feature"]: f for f in probs
                if f["properties"]["check"] == "building_in_one_grid"}
    assert set(homeless) == lost
    for b, f in homeless.items():
        at = bl.set_index("code").geometry[b]
        assert utm(shape(f["geometry"])).distance(at) < 0.5
    # the real change is refused with the same problems and writes nothing
    real = client.post("/v1/planning/reshape", json={"geometries": {code: mapping(wgs(shrunk))}},
                       headers=h["planner_in"])
    assert real.status_code == 422 and snapshot(eng) == before


def test_preview_merge_and_balance_rule(api):
    client, eng, h = api
    a, b = C2 + "001", C2 + "002"
    bl = buildings(eng)
    cur = grids(eng)
    hh = int(bl[bl.geometry.within(shapely.union_all([cur[a], cur[b]]))]["households"].sum())
    client.app.state.planning_settings = RULE.model_copy(update={"households_max": hh - 1})
    before = snapshot(eng)
    r = client.post("/v1/planning/preview/merge", json={"codes": [a, b]},
                    headers=h["planner_in"])
    assert r.status_code == 200, r.text
    p = r.json()
    assert snapshot(eng) == before and p["accepted"] is False
    (g,) = p["grids"]["features"]
    assert g["properties"]["households"] == hh
    assert utm(shape(g["geometry"])).symmetric_difference(
        shapely.union_all([cur[a], cur[b]])).area < 1.0
    (bal,) = [f for f in p["problems"]["features"] if f["properties"]["check"] == "balance"]
    assert bal["properties"]["households"] == hh and bal["properties"]["by"] == 1
    assert utm(shape(g["geometry"])).contains(utm(shape(bal["geometry"])))
    refused = client.post("/v1/planning/preview/merge", json={"codes": [a, b]},
                          headers=h["planner_out"])
    assert refused.status_code == 403 and snapshot(eng) == before
    assert community_geom(eng, C2).area > 0
