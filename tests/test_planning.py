"""Planning: split, merge, reshape, reassign, import, diff, refusals, lookups by date, draft.

Hand-made geometry: one community = a 400 m × 400 m square (in UTM 50N, EPSG:32650) holding four
200 m grids; buildings at known points. Expected areas and memberships come from shapely.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import LineString, box
from sqlalchemy import text

from geo.core.errors import Conflict, InvalidInput
from geo.data.store import write_layers
from geo.planning import (
    PlanningSettings,
    allocate_codes,
    diff_generations,
    import_grid_layer,
    merge_grids,
    reassign_buildings,
    reshape_grids,
    split_grid,
)

SRID = 32650
X0, Y0 = 500_000.0, 2_880_000.0  # UTM 50N, near Fuzhou
TO_WGS = Transformer.from_crs(SRID, 4326, always_xy=True)
TO_UTM = Transformer.from_crs(4326, SRID, always_xy=True)
COMM = "350104001001"
BASE = datetime(2020, 1, 1, tzinfo=UTC)
LATER = datetime(2021, 1, 1, tzinfo=UTC)
LOOSE = PlanningSettings(households_min=0, households_max=10_000)


def _tr(t, g):
    return shapely.transform(g, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))


def wgs(g):
    return _tr(TO_WGS, g)


def utm(g):
    return _tr(TO_UTM, g)


def sq(x, y, w=200.0, h=200.0):
    return box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)


# grids 001 NW, 002 NE, 003 SW, 004 SE
GRIDS = {"001": sq(0, 200), "002": sq(200, 200), "003": sq(0, 0), "004": sq(200, 0)}
# buildings: (code, x, y, households)
BUILDINGS = [("b1", 50, 250, 200), ("b2", 150, 350, 150), ("b3", 250, 300, 300),
             ("b4", 350, 300, 100), ("b5", 100, 100, 300), ("b6", 300, 100, 300)]


def load(conn) -> int:
    community = sq(0, 0, 400, 400)
    layers = {
        "district": gpd.GeoDataFrame({"code": ["350104"], "name": ["台江区"],
                                      "metric_srid": [SRID]}, geometry=[wgs(community)],
                                     crs=4326),
        "street": gpd.GeoDataFrame({"code": ["350104001"], "parent_code": ["350104"],
                                    "name": ["街道"]}, geometry=[wgs(community)], crs=4326),
        "community": gpd.GeoDataFrame({"code": [COMM], "parent_code": ["350104001"],
                                       "name": ["社区"]}, geometry=[wgs(community)], crs=4326),
        "grid": gpd.GeoDataFrame({"code": [COMM + k for k in GRIDS],
                                  "parent_code": COMM, "name": list(GRIDS),
                                  "responsible_body": "居委会"},
                                 geometry=[wgs(g) for g in GRIDS.values()], crs=4326),
        "building": gpd.GeoDataFrame({"code": [b[0] for b in BUILDINGS],
                                      "households": [b[3] for b in BUILDINGS],
                                      "residents": [b[3] * 3 for b in BUILDINGS]},
                                     geometry=[wgs(shapely.Point(X0 + b[1], Y0 + b[2]))
                                               for b in BUILDINGS], crs=4326),
    }
    return write_layers(conn, layers, kind="test", effective_from=BASE)


def snapshot(conn) -> str:
    h = hashlib.sha256()
    for sql in ("SELECT id, code, generation_low, generation_high, ST_AsEWKB(geom) FROM area "
                "ORDER BY id", "SELECT id, code, grid_code FROM building ORDER BY id",
                "SELECT id, kind FROM generation ORDER BY id", "SELECT * FROM retired_code",
                "SELECT count(*) FROM building_move"):
        for row in conn.execute(text(sql)):
            h.update(repr(tuple(bytes(v) if isinstance(v, memoryview) else v
                                for v in row)).encode())
    return h.hexdigest()


def current(conn) -> dict[str, shapely.Geometry]:
    rows = conn.execute(text("SELECT code, ST_AsBinary(geom) FROM area WHERE level = 'grid' "
                             "AND generation_high IS NULL")).all()
    return {c: utm(shapely.from_wkb(bytes(w))) for c, w in rows}


def assigned(conn) -> dict[str, str]:
    return dict(conn.execute(text("SELECT code, grid_code FROM building")).all())


def test_split_along_line_makes_two_new_codes(conn):
    gen0 = load(conn)
    line = wgs(LineString([(X0 + 100, Y0 + 190), (X0 + 100, Y0 + 410)]))
    res = split_grid(conn, COMM + "001", line, effective_from=LATER, settings=LOOSE)
    assert res.generation > gen0
    assert res.retired == [COMM + "001"]
    assert res.created == [COMM + "005", COMM + "006"]  # numbers after 004; west first
    grids = current(conn)
    # independent: the west half is x in [0,100], the east half x in [100,200]
    assert abs(grids[COMM + "005"].area - 100 * 200) < 1.0
    assert grids[COMM + "005"].centroid.x < grids[COMM + "006"].centroid.x
    assert grids[COMM + "006"].symmetric_difference(sq(100, 200, 100, 200)).area < 1.0
    assert COMM + "001" not in grids and len(grids) == 5
    # buildings follow location: b1 at x=50 -> west piece, b2 at x=150 -> east piece
    a = assigned(conn)
    assert a["b1"] == COMM + "005" and a["b2"] == COMM + "006"
    # unchanged grids carried over (same row, still open)
    n_open_002 = conn.execute(text("SELECT count(*) FROM area WHERE code = :c"),
                              {"c": COMM + "002"}).scalar()
    assert n_open_002 == 1
    d = diff_generations(conn, gen0, res.generation)
    assert d["grids_removed"] == [COMM + "001"]
    assert d["codes_created"] == [COMM + "005", COMM + "006"]
    assert d["codes_retired"] == [COMM + "001"]
    assert {m["building"] for m in d["buildings_moved"]} == {"b1", "b2"}


def test_merge_adjacent_and_refuse_non_adjacent(conn):
    gen0 = load(conn)
    with pytest.raises(InvalidInput):  # NW and SE touch only at a corner
        merge_grids(conn, [COMM + "001", COMM + "004"], settings=LOOSE)
    res = merge_grids(conn, [COMM + "001", COMM + "002"], effective_from=LATER, settings=LOOSE)
    grids = current(conn)
    new = res.created[0]
    assert new == COMM + "005"
    assert grids[new].symmetric_difference(sq(0, 200, 400, 200)).area < 1.0
    assert set(assigned(conn).values()) == {new, COMM + "003", COMM + "004"}
    d = diff_generations(conn, gen0, res.generation)
    assert d["codes_retired"] == [COMM + "001", COMM + "002"]


def test_reshape_moves_boundary(conn):
    load(conn)
    # move the NW/NE boundary 100 m east: NW = [0,300], NE = [300,400]
    res = reshape_grids(conn, {COMM + "001": wgs(sq(0, 200, 300, 200)),
                               COMM + "002": wgs(sq(300, 200, 100, 200))},
                        effective_from=LATER, settings=LOOSE)
    assert res.changed == [COMM + "001", COMM + "002"] and res.created == []
    grids = current(conn)
    assert abs(grids[COMM + "001"].area - 60_000) < 2.0
    assert assigned(conn)["b3"] == COMM + "001"  # b3 at x=250 now west of the boundary
    assert assigned(conn)["b4"] == COMM + "002"


def test_refused_overlap_and_gap_leave_db_unchanged(conn):
    load(conn)
    before = snapshot(conn)
    with pytest.raises(InvalidInput) as exc:  # NW grows 50 m into NE: overlap 50x200
        reshape_grids(conn, {COMM + "001": wgs(sq(0, 200, 250, 200))}, settings=LOOSE)
    probs = [p for p in exc.value.problems if p.detail.get("check") == "overlap"]
    assert probs and abs(probs[0].detail["m2"] - 50 * 200) < 20  # by how much, in m²
    assert snapshot(conn) == before
    with pytest.raises(InvalidInput) as exc:  # NW shrinks 50 m: gap 50x200
        reshape_grids(conn, {COMM + "001": wgs(sq(0, 200, 150, 200))}, settings=LOOSE)
    gaps = [p for p in exc.value.problems if p.detail.get("check") == "gap"]
    assert gaps and abs(gaps[0].detail["m2"] - 50 * 200) < 20
    assert snapshot(conn) == before
    with pytest.raises(InvalidInput) as exc:  # NW sticks 30 m out of the community (north)
        reshape_grids(conn, {COMM + "001": wgs(sq(0, 200, 200, 230))}, settings=LOOSE)
    outs = [p for p in exc.value.problems if p.detail.get("check") == "inside_community"]
    assert outs and abs(outs[0].detail["m2"] - 30 * 200) < 20
    assert snapshot(conn) == before


def test_balance_rule_error_and_warn(conn):
    load(conn)
    strict = PlanningSettings(households_min=150, households_max=500)
    before = snapshot(conn)
    # split NW (350 households) into b1 side (200) and b2 side (150): ok; NE (400: 300 + 100)
    # split leaves 100 households in the east piece: refused, 50 below the minimum
    line = wgs(LineString([(X0 + 300, Y0 + 190), (X0 + 300, Y0 + 410)]))
    with pytest.raises(InvalidInput) as exc:
        split_grid(conn, COMM + "002", line, settings=strict)
    bal = [p for p in exc.value.problems if p.detail.get("check") == "balance"]
    assert len(bal) == 1 and bal[0].detail["households"] == 100 and bal[0].detail["by"] == 50
    assert snapshot(conn) == before
    warn = PlanningSettings(households_min=150, households_max=500, balance_mode="warn")
    res = split_grid(conn, COMM + "002", line, settings=warn)
    assert len(res.warnings) == 1


def test_reassign_building_and_diff(conn):
    gen0 = load(conn)
    res = reassign_buildings(conn, {"b2": COMM + "002"}, effective_from=LATER, settings=LOOSE)
    assert assigned(conn)["b2"] == COMM + "002"
    d = diff_generations(conn, gen0, res.generation)
    assert d["buildings_moved"] == [{"building": "b2", "from": COMM + "001",
                                     "to": COMM + "002", "by": "assignment"}]
    with pytest.raises(InvalidInput):
        reassign_buildings(conn, {"b2": "350104001001999"}, settings=LOOSE)


def test_retired_code_never_reused(conn):
    load(conn)
    merge_grids(conn, [COMM + "003", COMM + "004"], settings=LOOSE)
    # a layer import that brings the retired code back is refused
    gdf = gpd.GeoDataFrame({"code": [COMM + "001", COMM + "002", COMM + "003", COMM + "004"],
                            "parent_code": COMM},
                           geometry=[wgs(g) for g in GRIDS.values()], crs=4326)
    before = snapshot(conn)
    with pytest.raises(Conflict):
        import_grid_layer(conn, gdf, community=COMM, settings=LOOSE)
    assert snapshot(conn) == before
    # and the database itself refuses it
    with pytest.raises(Exception, match="retired"), conn.begin_nested():
        conn.execute(text(
            "INSERT INTO area (level, code, parent_code, name, geom, generation_low, "
            "responsible_body) SELECT 'grid', :c, parent_code, 'x', geom, generation_low, 'x' "
            "FROM area WHERE level = 'community' LIMIT 1"), {"c": COMM + "003"})
    # new codes continue after the highest ever used
    assert allocate_codes(conn, COMM, [wgs(sq(0, 0))], LOOSE) == [COMM + "006"]


def test_import_layer_community_file(conn, tmp_path):
    gen0 = load(conn)
    # redraw as two halves (west/east); NW/SW kept? no: file replaces all four
    west, east = sq(0, 0, 200, 400), sq(200, 0, 200, 400)
    gdf = gpd.GeoDataFrame({"code": [None, None], "parent_code": COMM, "name": ["W", "E"],
                            "responsible_body": "居委会"},
                           geometry=[wgs(west), wgs(east)], crs=4326).to_crs(SRID)
    path = tmp_path / "grid.gpkg"
    gdf.to_file(path, layer="grid", driver="GPKG")
    res = import_grid_layer(conn, path, community=COMM, effective_from=LATER, settings=LOOSE)
    assert sorted(res.retired) == [COMM + k for k in GRIDS]
    assert res.created == [COMM + "005", COMM + "006"]  # same row: west then east
    grids = current(conn)
    assert grids[COMM + "005"].symmetric_difference(west).area < 1.0
    a = assigned(conn)
    expect = {b[0]: COMM + ("005" if b[1] < 200 else "006") for b in BUILDINGS}
    assert a == expect
    d = diff_generations(conn, gen0, res.generation)
    assert len(d["buildings_moved"]) == len(BUILDINGS)
    # unchanged re-import: nothing changes except a new generation
    same = import_grid_layer(conn, gpd.GeoDataFrame(
        {"code": [COMM + "005", COMM + "006"], "parent_code": COMM},
        geometry=[wgs(west), wgs(east)], crs=4326), community=COMM, settings=LOOSE)
    assert same.changed == [] and same.created == [] and same.retired == []


def test_lookup_before_and_after_change(engine, fresh_database):
    from geo.core.db import make_engine

    eng = make_engine(fresh_database())
    try:
        with eng.begin() as conn:
            load(conn)
        with eng.begin() as conn:
            res = split_grid(conn, COMM + "001",
                             wgs(LineString([(X0 + 100, Y0 + 190), (X0 + 100, Y0 + 410)])),
                             effective_from=LATER, settings=LOOSE)
        p = wgs(shapely.Point(X0 + 50, Y0 + 300))
        from geo.lookup import locate_point

        with eng.connect() as conn:
            old = locate_point(conn, p.x, p.y, at="2020-06-01")
            new = locate_point(conn, p.x, p.y, at="2021-06-01")
            assert old.grid["code"] == COMM + "001"
            assert new.grid["code"] == res.created[0]
            sql = ("SELECT code FROM area WHERE level = 'grid' AND generation_low <= g "
                   "AND coalesce(generation_high, 2147483647) >= g "
                   "AND ST_Intersects(geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326))")
            for ts, want in (("2020-06-01", COMM + "001"), ("2021-06-01", res.created[0])):
                got = conn.execute(text(
                    f"SELECT code FROM area, generation_at(CAST(:ts AS timestamptz)) g "
                    f"WHERE {sql.split('WHERE ')[1]}"), {"ts": ts, "x": p.x, "y": p.y}).scalar()
                assert got == want
    finally:
        eng.dispose()
