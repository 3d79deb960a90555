"""The synthetic city, written to the real database and read back with SQL, checked by shapely,
networkx and hand-stated rules (never by the generator's own bookkeeping)."""

from __future__ import annotations

import re
from collections import defaultdict

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
import shapely
from sqlalchemy import text

from geo.core.db import make_engine
from geo.core.settings import DataSettings
from geo.data.store import write_layers
from geo.samples.synth import generate_city

GRIDS, BUILDINGS, STATIONS, SEED = 60, 3000, 40, 7
METRIC = 32650  # UTM 50N: Fuzhou, 119.3E


@pytest.fixture(scope="module")
def city_db(fresh_database):
    url = fresh_database()
    eng = make_engine(url)
    layers = generate_city(grids=GRIDS, buildings=BUILDINGS, stations=STATIONS, seed=SEED)
    with eng.begin() as conn:
        gen = write_layers(conn, layers, kind="synth")
    yield eng, gen, layers
    eng.dispose()


def _areas(eng, level: str) -> gpd.GeoDataFrame:
    with eng.connect() as c:
        df = gpd.read_postgis(
            text("SELECT code, parent_code, name, geom FROM area_current WHERE level = :l"),
            c, params={"l": level}, geom_col="geom",
        )
    return df.to_crs(METRIC)


def test_counts_and_generation(city_db):
    eng, gen, _ = city_db
    with eng.connect() as c:
        counts = dict(c.execute(text(
            "SELECT level, count(*) FROM area_current GROUP BY level")).all())
        assert counts["grid"] == GRIDS and counts["district"] == 1
        assert c.execute(text("SELECT count(*) FROM building")).scalar() == BUILDINGS
        assert c.execute(text("SELECT count(*) FROM station")).scalar() == STATIONS
        assert c.execute(text(
            "SELECT count(*) FROM area WHERE generation_low <> :g"), {"g": gen}).scalar() == 0
        kinds = {r[0] for r in c.execute(text("SELECT DISTINCT kind FROM station"))}
        assert len(kinds) == 7
        srid = c.execute(text("SELECT metric_srid FROM area_current WHERE level='district'"))
        assert srid.scalar() == METRIC


@pytest.mark.parametrize("child,parent", [("grid", "community"), ("community", "street"),
                                          ("street", "district")])
def test_children_tile_parent_exactly(city_db, child, parent):
    eng, _, _ = city_db
    kids, parents = _areas(eng, child), _areas(eng, parent)
    by_parent = defaultdict(list)
    for code, g in zip(kids["parent_code"], kids.geometry, strict=True):
        by_parent[code].append(g)
    assert set(by_parent) == set(parents["code"])
    for code, g in zip(parents["code"], parents.geometry, strict=True):
        union = shapely.union_all(by_parent[code])
        assert union.symmetric_difference(g).area < 1.0, code


def test_no_two_grids_overlap(city_db):
    eng, _, _ = city_db
    grids = _areas(eng, "grid")
    geoms = grids.geometry.values
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    pairs = a < b
    inter = shapely.intersection(geoms[a[pairs]], geoms[b[pairs]])
    assert pairs.sum() > 0  # neighbours touch
    assert shapely.area(inter).max() <= 1.0


def test_every_building_in_exactly_one_grid(city_db):
    eng, _, _ = city_db
    grids = _areas(eng, "grid")
    with eng.connect() as c:
        b = gpd.read_postgis(
            text("SELECT code, grid_code, location, footprint FROM building ORDER BY code"),
            c, geom_col="location").to_crs(METRIC)
        fp = gpd.GeoSeries.from_wkb(
            [bytes(r[0]) for r in c.execute(text(
                "SELECT ST_AsBinary(footprint) FROM building ORDER BY code"))], crs=4326
        ).to_crs(METRIC)
    tree = shapely.STRtree(grids.geometry.values)
    hit_b, hit_g = tree.query(b.geometry.values, predicate="intersects")
    per_building = np.bincount(hit_b, minlength=len(b))
    assert (per_building == 1).all()
    # the one grid is the building's own grid, and the footprint is inside it
    own = grids["code"].values[hit_g[np.argsort(hit_b)]]
    assert (own == b["grid_code"].values).all()
    gmap = dict(zip(grids["code"], grids.geometry, strict=True))
    inside = [gmap[gc].contains(f) for gc, f in zip(b["grid_code"], fp.values, strict=True)]
    assert all(inside)


def test_households_balance_rule(city_db):
    eng, _, _ = city_db
    rule = DataSettings()
    with eng.connect() as c:
        rows = c.execute(text(
            "SELECT a.code, coalesce(sum(b.households), 0), coalesce(sum(b.residents), 0) "
            "FROM area_current a LEFT JOIN building b ON b.grid_code = a.code "
            "WHERE a.level = 'grid' GROUP BY a.code")).all()
    assert len(rows) == GRIDS
    for code, hh, res in rows:
        assert rule.households_min <= hh <= rule.households_max, code
        assert 2.4 * hh <= res <= 3.1 * hh


def test_codes_and_reading_order(city_db):
    """15-digit codes = 350104 + street + community + sequence; within a community the sequence
    numbers follow reading order: rows north->south (two grids are in one row when their
    centroids differ in northing by less than half the median grid side), west->east within a
    row."""
    eng, _, _ = city_db
    grids = _areas(eng, "grid")
    assert all(re.fullmatch(r"350104\d{9}", c) for c in grids["code"])
    assert (grids["code"].str[:12] == grids["parent_code"]).all()
    assert (grids["code"].str[12:].astype(int) >= 1).all()
    half_side = np.median(np.sqrt(grids.area)) / 2
    cent = grids.geometry.centroid
    checked = 0
    for _, part in grids.assign(x=cent.x, y=cent.y).groupby("parent_code"):
        seqs = part["code"].str[12:].astype(int).to_numpy()
        assert sorted(seqs) == list(range(1, len(seqs) + 1))  # 001.. without gaps
        part = part.assign(seq=seqs).sort_values("seq")
        xs, ys = part["x"].to_numpy(), part["y"].to_numpy()
        for i in range(len(xs)):
            for j in range(i + 1, len(xs)):
                dy = ys[i] - ys[j]
                if abs(dy) <= half_side:
                    assert xs[i] < xs[j], "same row: west before east"
                else:
                    assert dy > 0, "earlier number must be in a row further north"
                checked += 1
    assert checked > 100


def test_walking_network_connected_and_river_only_at_bridges(city_db):
    eng, _, _ = city_db
    with eng.connect() as c:
        edges = c.execute(text("SELECT source, target, road_class FROM walk_edge")).all()
        river = c.execute(text(
            "SELECT count(*) FROM walk_edge e JOIN barrier r ON r.kind = 'river' "
            "AND ST_Intersects(e.geom, r.geom) WHERE e.road_class <> 'bridge'")).scalar()
        bridges = c.execute(text(
            "SELECT count(*) FROM walk_edge e JOIN barrier r ON r.kind = 'river' "
            "AND ST_Intersects(e.geom, r.geom) WHERE e.road_class = 'bridge'")).scalar()
        cost_ok = c.execute(text(
            "SELECT bool_and(abs(length_m - ST_Length(geom::geography)) < 0.01 * length_m "
            "AND cost = length_m AND reverse_cost = length_m) FROM walk_edge")).scalar()
        nodes = c.execute(text("SELECT count(*) FROM walk_node")).scalar()
    g = nx.Graph()
    g.add_edges_from((s, t) for s, t, _ in edges)
    assert nx.is_connected(g)
    assert g.number_of_nodes() == nodes
    assert river == 0 and bridges >= 1
    assert cost_ok
    assert any(rc == "primary" for _, _, rc in edges)


def test_grid_teams_follow_2_5_n(city_db):
    eng, _, _ = city_db
    with eng.connect() as c:
        rows = c.execute(text("SELECT count(*), bool_and(complete_2_5_n) FROM grid_team_summary"))
        n, ok = rows.one()
    assert n == GRIDS and ok


def test_deterministic_by_seed():
    a = generate_city(grids=30, buildings=600, stations=10, seed=3)
    b = generate_city(grids=30, buildings=600, stations=10, seed=3)
    c = generate_city(grids=30, buildings=600, stations=10, seed=4)
    for name in a:
        fa, fb = a[name], b[name]
        assert fa.drop(columns="geometry", errors="ignore").equals(
            fb.drop(columns="geometry", errors="ignore")), name
        if "geometry" in fa:
            assert all(shapely.equals_exact(fa.geometry.values, fb.geometry.values, 0)), name
    assert not all(shapely.equals_exact(a["grid"].geometry.values, c["grid"].geometry.values,
                                        1e-9))


def test_too_few_buildings_refused():
    from geo.core.errors import InvalidInput

    with pytest.raises(InvalidInput) as err:
        generate_city(grids=10, buildings=5, stations=0)
    assert err.value.problems[0].field == "buildings"


@pytest.mark.parametrize("grids,buildings,stations", [(1, 1, 0), (5, 40, 0), (13, 200, 3)])
def test_tiny_cities_write(conn, grids, buildings, stations):
    layers = generate_city(grids=grids, buildings=buildings, stations=stations, seed=1)
    write_layers(conn, layers)
    n = conn.execute(text("SELECT count(*) FROM area_current WHERE level = 'grid'")).scalar()
    assert n == grids
    edges = conn.execute(text("SELECT source, target FROM walk_edge")).all()
    assert nx.is_connected(nx.Graph(edges))
