"""Buildings answer the grid in force now, not a scheduled one (issue 15 item 1).

A split scheduled for later moves buildings in ``building`` when it is saved; the building
layer, the OGC buildings and grid statistics, and the grid map's households per grid must keep
answering today's grids until its instant, then the new ones. Expected grids come from shapely:
each building's location in the grids in force (``area_current``), never from the answers.
"""

from __future__ import annotations

import shapely
from factories import C1, split_line
from shapely.geometry import mapping
from sqlalchemy import text

from geo.data.mapdata import grids_for_map

FUTURE = "2031-01-01T00:00:00+08:00"


def expected(eng) -> tuple[dict[str, str], dict[str, int]]:
    """({building code: grid in force covering it}, {grid: households}) by shapely."""
    with eng.connect() as c:
        gs = [(code, shapely.from_wkb(bytes(w))) for code, w in c.execute(text(
            "SELECT code, ST_AsBinary(geom) FROM area_current WHERE level = 'grid'")).all()]
        bs = c.execute(text("SELECT code, households, ST_AsBinary(location) FROM building")).all()
    tree = shapely.STRtree([g for _, g in gs])
    where: dict[str, str] = {}
    hh: dict[str, int] = {}
    for code, households, w in bs:
        hits = tree.query(shapely.from_wkb(bytes(w)), predicate="intersects")
        assert len(hits) == 1, (code, hits)
        grid = gs[int(hits[0])][0]
        where[code] = grid
        hh[grid] = hh.get(grid, 0) + households
    return where, hh


def answered(client, eng, h) -> tuple[dict[str, str], dict[str, int], dict[str, int]]:
    """(building layer's grid per building (the same in the OGC buildings and in the layer
    scoped to community C1), OGC grid statistics' households per grid,
    the grid map's households per grid)."""
    r = client.get("/v1/layers/building", params={"limit": 10000}, headers=h["admin"])
    assert r.status_code == 200, r.text
    assert r.json()["total"] <= 10000
    layer = {f["properties"]["code"]: f["properties"]["grid_code"] for f in r.json()["features"]}
    r = client.get("/v1/layers/building", params={"limit": 10000, "within": C1},
                   headers=h["admin"])  # scoped by a range on grid_code: the grid in force
    assert r.status_code == 200, r.text
    assert {f["properties"]["code"]: f["properties"]["grid_code"]
            for f in r.json()["features"]} == {b: g for b, g in layer.items() if g.startswith(C1)}
    r = client.get("/ogc/collections/buildings/items", params={"limit": 10000},
                   headers=h["admin"])
    assert r.status_code == 200, r.text
    ogc = {f["properties"]["code"]: f["properties"]["grid_code"] for f in r.json()["features"]}
    assert ogc == layer
    r = client.get("/ogc/collections/grid_statistics/items", params={"limit": 10000},
                   headers=h["admin"])
    assert r.status_code == 200, r.text
    stats = {f["properties"]["code"]: f["properties"]["households"]
             for f in r.json()["features"] if f["properties"]["households"]}
    with eng.connect() as c:
        gdf = grids_for_map(c)
    shown = {k: int(v) for k, v in zip(gdf["code"], gdf["households"], strict=True) if v}
    return layer, stats, shown


def test_scheduled_split_moves_no_building_before_its_instant(api):
    client, eng, h = api
    code = C1 + "005"
    _, _, line, _ = split_line(eng, code)
    where0, hh0 = expected(eng)
    assert answered(client, eng, h) == (where0, hh0, hh0)

    r = client.post("/v1/planning/split", headers=h["planner_in"], json={
        "code": code, "line": mapping(line), "effective_from": FUTURE})
    assert r.status_code == 200, r.text
    with eng.connect() as c:
        gen = c.execute(text("SELECT max(id) FROM generation")).scalar()
        moved = c.execute(text("SELECT count(*) FROM building_move WHERE generation_id = :g"),
                          {"g": gen}).scalar()
    assert moved > 0  # the split did move buildings (in ``building``), scheduled
    where, hh = expected(eng)
    assert (where, hh) == (where0, hh0)  # the grids in force are today's
    assert answered(client, eng, h) == (where, hh, hh)

    with eng.begin() as c:  # its instant comes
        c.execute(text("UPDATE generation SET effective_from = clock_timestamp() "
                       "- interval '1 second' WHERE id = :g"), {"g": gen})
    where1, hh1 = expected(eng)
    assert sum(where1[b] != where0[b] for b in where0) == moved
    assert set(r.json()["created"]) <= set(hh1) and code not in hh1
    assert answered(client, eng, h) == (where1, hh1, hh1)


def test_stacked_scheduled_moves_answer_the_grid_of_each_instant(conn):
    """Hand-made: building b1 moved A→B by one scheduled change and B→C by a later one
    (``building`` holds C), b2 given its first grid X; the view answers A then B then C, and
    b2 no grid until its change is in force."""
    a, b, c, x = (f"35010400100100{i}" for i in range(1, 5))
    conn.execute(text(
        "INSERT INTO building (code, location, households, grid_code) VALUES "
        "('b1', ST_SetSRID(ST_MakePoint(119.3, 26.05), 4326), 10, :c), "
        "('b2', ST_SetSRID(ST_MakePoint(119.3, 26.06), 4326), 20, :x), "
        "('b3', ST_SetSRID(ST_MakePoint(119.3, 26.07), 4326), 30, :a)"), {"a": a, "c": c, "x": x})
    gens = [conn.execute(text(
        "INSERT INTO generation (effective_from, kind) VALUES "
        "(clock_timestamp() + make_interval(days => :d), 'change') RETURNING id"),
        {"d": d}).scalar() for d in (-1, 1, 2)]
    conn.execute(text(
        "INSERT INTO building_move (generation_id, building_code, from_grid, to_grid) VALUES "
        "(:g1, 'b1', :a, :b), (:g1, 'b2', NULL, :x), (:g2, 'b1', :b, :c)"),
        {"g1": gens[1], "g2": gens[2], "a": a, "b": b, "c": c, "x": x})

    def now() -> dict[str, str | None]:
        return dict(conn.execute(text("SELECT code, grid_code FROM building_now")).all())

    assert now() == {"b1": a, "b2": None, "b3": a}
    for gen, want in ((gens[1], {"b1": b, "b2": x, "b3": a}),
                      (gens[2], {"b1": c, "b2": x, "b3": a})):
        conn.execute(text("UPDATE generation SET effective_from = clock_timestamp() "
                          "- interval '1 second' WHERE id = :g"), {"g": gen})
        assert now() == want
