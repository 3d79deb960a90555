"""geo.data.store.write_layers: generations, the COPY load, derived columns. Hand-made geometry with
known answers; every test runs in a transaction that is rolled back."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely
from shapely.geometry import LineString, Point, box
from sqlalchemy import text

from geo.core.errors import InvalidInput
from geo.data.store import write_layers

# Two 0.01 x 0.01 degree grids side by side in one community, near Fuzhou (UTM 50N).
X0, Y0, D = 119.30, 26.05, 0.01


def _areas(grid_names=("A", "B")) -> dict[str, gpd.GeoDataFrame]:
    left, right = box(X0, Y0, X0 + D, Y0 + D), box(X0 + D, Y0, X0 + 2 * D, Y0 + D)
    whole = box(X0, Y0, X0 + 2 * D, Y0 + D)
    return {
        "district": gpd.GeoDataFrame({"code": ["350104"], "name": ["区"]}, geometry=[whole],
                                     crs=4326),
        "street": gpd.GeoDataFrame({"code": ["350104001"], "parent_code": ["350104"],
                                    "name": ["街道"]}, geometry=[whole], crs=4326),
        "community": gpd.GeoDataFrame({"code": ["350104001001"], "parent_code": ["350104001"],
                                       "name": ["社区"]}, geometry=[whole], crs=4326),
        "grid": gpd.GeoDataFrame({
            "code": ["350104001001001", "350104001001002"],
            "parent_code": ["350104001001"] * 2,
            "name": list(grid_names),
            "responsible_body": ["居委会"] * 2,
        }, geometry=[left, right], crs=4326),
    }


def _grid_names_at(conn, generation: int) -> dict[str, str]:
    rows = conn.execute(text(
        "SELECT code, name FROM area WHERE level = 'grid' AND generation_low <= :g "
        "AND (generation_high IS NULL OR generation_high >= :g)"), {"g": generation}).all()
    return dict(rows)


def test_second_write_closes_previous_versions(conn):
    g1 = write_layers(conn, _areas(("A", "B")), note="first")
    g2 = write_layers(conn, {"grid": _areas(("A2", "B2"))["grid"]}, note="second")
    assert g2 > g1
    assert _grid_names_at(conn, g2) == {"350104001001001": "A2", "350104001001002": "B2"}
    # the past stays queryable
    assert _grid_names_at(conn, g1) == {"350104001001001": "A", "350104001001002": "B"}
    rows = conn.execute(text(
        "SELECT level, generation_low, generation_high FROM area ORDER BY level, id")).all()
    closed = [r for r in rows if r.generation_high is not None]
    assert {(r.level, r.generation_low, r.generation_high) for r in closed} == {("grid", g1, g1)}
    # only the level written is versioned again: the community still has its first version
    current = conn.execute(text(
        "SELECT level, generation_low FROM area_current ORDER BY level")).all()
    assert sorted(current) == sorted([("community", g1), ("district", g1), ("grid", g2),
                                      ("grid", g2), ("street", g1)])


def test_closing_uses_previous_generation_even_with_id_gaps(conn):
    g1 = write_layers(conn, _areas())
    # a write that is rolled back consumes a generation id: ids are no longer consecutive
    sp = conn.begin_nested()
    write_layers(conn, {"grid": _areas(("X", "Y"))["grid"]})
    sp.rollback()
    g3 = write_layers(conn, {"grid": _areas(("C", "D"))["grid"]})
    assert g3 >= g1 + 2
    highs = conn.execute(text(
        "SELECT DISTINCT generation_high FROM area WHERE level = 'grid' "
        "AND generation_high IS NOT NULL")).scalars().all()
    assert highs == [g1]
    assert _grid_names_at(conn, g1) == {"350104001001001": "A", "350104001001002": "B"}


def test_metric_srid_estimated_as_utm_zone(conn):
    write_layers(conn, _areas())
    srid = conn.execute(text(
        "SELECT metric_srid FROM area_current WHERE level = 'district'")).scalar()
    assert srid == 32650  # 119.3E: zone floor((119.3 + 180) / 6) + 1 = 50, north


def test_buildings_location_footprint_and_grid_join(conn):
    write_layers(conn, _areas())
    # an L-shaped footprint whose centroid lies outside it; a point; a polygon in grid 2
    ell = shapely.Polygon([(X0 + 0.001, Y0 + 0.001), (X0 + 0.004, Y0 + 0.001),
                           (X0 + 0.004, Y0 + 0.0015), (X0 + 0.0015, Y0 + 0.0015),
                           (X0 + 0.0015, Y0 + 0.004), (X0 + 0.001, Y0 + 0.004)])
    assert not ell.contains(ell.centroid)
    b = gpd.GeoDataFrame({
        "code": ["b1", "b2", "b3"], "households": [10, 20, 30], "residents": [25, 50, 80],
        "grid_code": [None, None, None],
    }, geometry=[ell, Point(X0 + 0.005, Y0 + 0.005), box(X0 + D + 0.002, Y0 + 0.002,
                                                          X0 + D + 0.003, Y0 + 0.003)], crs=4326)
    write_layers(conn, {"building": b})
    rows = {r.code: r for r in conn.execute(text(
        "SELECT code, grid_code, households, ST_Within(location, footprint) AS inside, "
        "footprint IS NULL AS no_fp, GeometryType(footprint) AS fp_type FROM building"))}
    assert rows["b1"].inside and rows["b1"].fp_type == "MULTIPOLYGON"
    assert rows["b2"].no_fp
    assert rows["b1"].grid_code == "350104001001001"
    assert rows["b2"].grid_code == "350104001001001"
    assert rows["b3"].grid_code == "350104001001002"
    assert rows["b3"].households == 30


def test_walk_nodes_derived_from_edges(conn):
    e = gpd.GeoDataFrame({
        "source": [1, 2, 2], "target": [2, 3, 4],
        "road_class": ["residential", "primary", "footway"],
    }, geometry=[LineString([(X0, Y0), (X0 + 0.001, Y0)]),
                 LineString([(X0 + 0.001, Y0), (X0 + 0.002, Y0)]),
                 LineString([(X0 + 0.001, Y0), (X0 + 0.001, Y0 + 0.001)])], crs=4326)
    write_layers(conn, {"walk_edge": e})
    nodes = dict(conn.execute(text("SELECT id, ST_AsText(geom) FROM walk_node")).all())
    assert set(nodes) == {1, 2, 3, 4}
    assert shapely.from_wkt(nodes[2]).equals_exact(Point(X0 + 0.001, Y0), 1e-12)
    rows = conn.execute(text(
        "SELECT length_m, cost, reverse_cost, ST_Length(geom::geography) FROM walk_edge")).all()
    for length, cost, rev, geodesic in rows:
        assert cost == rev == length
        assert abs(length - geodesic) < 0.01 * geodesic  # length estimated in UTM when absent
    # pgRouting can route on it
    n = conn.execute(text(
        "SELECT count(*) FROM pgr_dijkstra('SELECT id, source, target, cost, reverse_cost "
        "FROM walk_edge', 1, 4)")).scalar()
    assert n == 3


def test_wrong_crs_refused_and_nothing_written(conn):
    before = conn.execute(text("SELECT count(*) FROM generation")).scalar()
    bad = _areas()["grid"].to_crs(32650)
    with pytest.raises(InvalidInput) as err:
        write_layers(conn, {"grid": bad})
    assert err.value.problems[0].field == "crs"
    assert conn.execute(text("SELECT count(*) FROM generation")).scalar() == before


def test_unknown_layer_refused(conn):
    with pytest.raises(InvalidInput) as err:
        write_layers(conn, {"gird": _areas()["grid"]})
    assert err.value.problems[0].feature == "gird"
