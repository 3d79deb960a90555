"""The draft's balancing (geo.planning.balance, flips, recom): contiguity, balance and
households checked with networkx on hand-made lattices, and drafts of the synthetic city and of
the demo district checked with shapely/geopandas from the database's buildings (households
counted by location, independently of the draft's own sums)."""

from __future__ import annotations

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
import shapely
from factories import (
    C1,
    C2,
    RULE,
    buildings,
    community_geom,
    utm,
)
from shapely.geometry import box, shape
from sqlalchemy import text

from geo.planning import PlanningSettings, draft_partition
from geo.planning.balance import (
    bound_of,
    link_components,
    tree_partition,
    unit_neighbors,
)
from geo.planning.flips import local_search, stays_connected
from geo.planning.recom import recom_search


def lattice(n: int) -> tuple[list[shapely.Polygon], dict[int, list[int]]]:
    cells = [box(c * 100, r * 100, (c + 1) * 100, (r + 1) * 100)
             for r in range(n) for c in range(n)]
    g = nx.grid_2d_graph(n, n)
    nb = {r * n + c: [rr * n + cc for rr, cc in g.neighbors((r, c))]
          for r in range(n) for c in range(n)}
    return cells, nb


def regions_connected(labels: np.ndarray, nb: dict[int, list[int]]) -> bool:
    g = nx.Graph([(i, j) for i, js in nb.items() for j in js])
    return all(nx.is_connected(g.subgraph(np.flatnonzero(labels == r).tolist()))
               for r in np.unique(labels))


def test_unit_neighbors_are_shared_edges_not_corners():
    cells, nb = lattice(4)
    # float noise on one cell: a shared-vertex test would lose its neighbours
    cells[5] = shapely.affinity.translate(cells[5], 0.01, -0.01)
    got = unit_neighbors(cells)
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in nb.items()}


def test_link_components_joins_detached_pieces_to_their_nearest_unit():
    cells, _ = lattice(3)
    island = box(450, 0, 500, 50)  # 150 m east of cell 2 (200..300, 0..100): its nearest
    corner = box(300, 300, 350, 350)  # touches cell 8 at one point only
    geoms = [*cells, island, corner]
    nb = unit_neighbors(geoms)
    assert nb[9] == [] and nb[10] == []
    links = link_components(geoms, nb)
    assert sorted(tuple(sorted(x)) for x in links) == [(2, 9), (8, 10)]
    assert nx.is_connected(nx.Graph([(i, j) for i, js in nb.items() for j in js]))


def test_stays_connected_matches_networkx_articulation_points():
    _, nb = lattice(6)
    rng = np.random.default_rng(0)
    labels = tree_partition(nb, rng.integers(0, 30, 36).astype(float), 4, rng)
    g = nx.Graph([(i, j) for i, js in nb.items() for j in js])
    for r in np.unique(labels):
        members = np.flatnonzero(labels == r).tolist()
        cut = set(nx.articulation_points(g.subgraph(members)))
        for u in members:
            want = len(members) > 1 and u not in cut
            assert stays_connected(u, labels, nb, len(members)) == want, (r, u)


def test_tree_partition_gives_k_contiguous_regions():
    _, nb = lattice(8)
    hh = np.random.default_rng(2).integers(0, 40, 64).astype(float)
    labels = tree_partition(nb, hh, 5, np.random.default_rng(1))
    assert sorted(np.unique(labels)) == [0, 1, 2, 3, 4]
    assert regions_connected(labels, nb)


@pytest.mark.parametrize("refine", [local_search, recom_search])
def test_refinement_balances_keeps_contiguity_and_is_deterministic(refine):
    n = 10
    _, nb = lattice(n)
    hh = np.random.default_rng(3).integers(5, 40, n * n).astype(float)
    hh[44] = 120  # one indivisible unit a third of a region
    # a poor contiguous start: columns 1, 2, 3 and 4 wide
    labels = np.array([0 if c < 1 else 1 if c < 3 else 2 if c < 6 else 3
                       for r in range(n) for c in range(n)])
    before = np.bincount(labels, weights=hh)
    out = refine(labels, nb, hh, 0, 10**6, seed=4, target=1.2)
    after = np.bincount(out, weights=hh)
    assert len(after) == 4 and after.sum() == before.sum()
    assert after.max() / after.min() <= 1.2 < before.max() / before.min(), after
    assert regions_connected(out, nb)
    assert (refine(labels, nb, hh, 0, 10**6, seed=4, target=1.2) == out).all()


def test_bound_of_an_indivisible_unit():
    # 1999 households in 5 grids, one unit of 481: the others share at most 1518
    assert bound_of(481, 1999, 5) == pytest.approx(481 / (1518 / 4))
    assert bound_of(100, 1000, 4) == 1.0  # the unit fits under the mean: no bound


def grid_figures(polys: np.ndarray, bl: gpd.GeoDataFrame) -> np.ndarray:
    """Households per grid by a geopandas spatial join (each building exactly once)."""
    grids = gpd.GeoDataFrame({"grid": range(len(polys))}, geometry=list(polys), crs=bl.crs)
    joined = gpd.sjoin(bl, grids, predicate="intersects", how="left")
    assert joined.index.is_unique and joined["grid"].notna().all()  # one grid each
    return joined.groupby("grid")["households"].sum().reindex(range(len(polys)),
                                                              fill_value=0).to_numpy()


@pytest.mark.parametrize("community", [C1, C2])
def test_draft_of_synthetic_city_within_1_20(api, community):
    client, eng, h = api
    client.app.state.planning_settings = RULE
    r = client.get(f"/v1/planning/draft/{community}", headers=h["planner_in"])
    assert r.status_code == 200, r.text
    polys = np.asarray([utm(shape(f["geometry"])) for f in r.json()["features"]])
    bl = buildings(eng)
    comm = community_geom(eng, community)
    bl = bl[bl.geometry.within(comm)]
    hh = grid_figures(polys, bl)
    assert hh.sum() == bl["households"].sum()
    assert ((hh >= RULE.households_min) & (hh <= RULE.households_max)).all(), hh
    assert hh.max() / hh.min() <= 1.20, hh
    assert shapely.union_all(polys).symmetric_difference(comm).area < 1.0
    for p in polys:  # contiguous: one part once the ±1 cm slivers are closed
        parts = getattr(p.buffer(0.05), "geoms", [p])
        assert len(parts) == 1, [q.area for q in parts]


# the demo (OpenStreetMap streets): buildings of up to 309 households and communities in up to
# five pieces; 350104001003 (a 481-household building) is the one that cannot reach 1.20
DEMO = ["350104001001", "350104003001", "350104002003"]


@pytest.fixture(scope="module")
def demo_engine(fresh_database):
    from geo.core.db import make_engine
    from geo.samples.demo import ensure_demo_loaded

    e = make_engine(fresh_database(), pool_size=2)
    with e.begin() as conn:
        ensure_demo_loaded(conn)
    yield e
    e.dispose()


@pytest.mark.parametrize("community", DEMO)
def test_draft_of_demo_within_1_20_contiguous_and_deterministic(demo_engine, community):
    with demo_engine.connect() as c:
        draft = draft_partition(c, community, settings=PlanningSettings())
        again = draft_partition(c, community, settings=PlanningSettings())
        srid = c.execute(text("SELECT metric_srid FROM area_current "
                              "WHERE level = 'district'")).scalar()
        bl = gpd.read_postgis(text(
            "SELECT b.households, b.location FROM building b JOIN area a ON a.level = "
            "'community' AND a.code = :c AND a.generation_high IS NULL "
            "AND ST_Intersects(a.geom, b.location)"), c, geom_col="location",
            params={"c": community}).to_crs(srid)
        comm = gpd.read_postgis(text(
            "SELECT geom FROM area WHERE level = 'community' AND code = :c "
            "AND generation_high IS NULL"), c, geom_col="geom", params={"c": community})
    comm = comm.to_crs(srid).geometry.iloc[0]
    polys = draft.grids.to_crs(srid).geometry.values
    hh = grid_figures(polys, bl)
    assert hh.sum() == bl["households"].sum()  # households preserved
    assert ((hh >= 150) & (hh <= 500)).all(), hh
    assert hh.max() / hh.min() <= 1.20, hh
    assert shapely.union_all(polys).symmetric_difference(comm).area < 1.0
    for g in polys:  # within each piece of the community, a grid is one polygon
        for piece in getattr(comm, "geoms", [comm]):
            part = shapely.intersection(shapely.make_valid(g), piece.buffer(0.05)).buffer(0.05)
            assert part.area < 1.0 or len(getattr(part, "geoms", [part])) == 1
    assert draft.grids["households"].tolist() == again.grids["households"].tolist()
    assert draft.grids.geometry.is_valid.all()
    assert draft.grids.geometry.to_wkb().tolist() == again.grids.geometry.to_wkb().tolist()


def test_why_not_proves_350104001003_cannot_reach_1_20():
    """The demo's 350104001003 by its 28 buildings (households, from the demo): 4 grids must
    each hold 499-500 under the 150-500 rule, but the 481-household building can only gain
    5 + 2 + 2 (22 would make 503); 5 or more grids leave the others below 481 / 1.2."""
    from bench.planning_draft import subset_sums, why_not

    demo = [481, 199, 149, 135, 132, 103, 92, 80, 74, 68, 67, 58, 51, 51, 40, 40, 38, 34, 27,
            25, 24, 22, 5, 2, 2, 0, 0, 0]
    assert sum(demo) == 1999
    assert np.flatnonzero(subset_sums([5, 2, 2, 22], 30)).tolist() == [
        0, 2, 4, 5, 7, 9, 22, 24, 26, 27, 29]
    w = why_not("350104001003", np.array(demo), PlanningSettings())
    assert not w["reachable"]
    assert w["by_grid_count"]["4"]["largest_grid_households"] == [499, 500]
    # one building fewer of 481 and one of 481 - 19 = 462 more: reachable again
    assert why_not("x", np.array([462, *demo[1:], 19]), PlanningSettings())["reachable"]


def test_every_demo_communitys_draft_covers_it_and_is_accepted(demo_engine):
    """Every demo community's draft covers the community (shapely: < 1 m² uncovered beyond
    slivers thinner than 0.5 m) and
    passes the planning checks when accepted (rolled back); the drafts of 350104001002,
    350104001003 and 350104002001 used to leave 600-2,200 m² gaps and were refused."""
    from geo.planning import accept_draft

    warn = PlanningSettings(balance_mode="warn")  # 350104001003 cannot reach the rule
    with demo_engine.connect() as c:
        comms = list(c.execute(text("SELECT code FROM area_current WHERE level = 'community' "
                                    "ORDER BY code")).scalars())
        srid = c.execute(text("SELECT metric_srid FROM area_current "
                              "WHERE level = 'district'")).scalar()
    assert len(comms) == 9
    for community in comms:
        with demo_engine.connect() as c:
            comm = gpd.read_postgis(text(
                "SELECT geom FROM area WHERE level = 'community' AND code = :c "
                "AND generation_high IS NULL"), c, geom_col="geom", params={"c": community})
            draft = draft_partition(c, community, settings=warn)
            polys = draft.grids.to_crs(srid).geometry.values
            gap = comm.to_crs(srid).geometry.iloc[0].difference(shapely.union_all(polys))
            # slivers thinner than 0.5 m (WANGGE_SLIVER_WIDTH_M) are not gaps: open them away
            assert gap.buffer(-0.25).buffer(0.25).area < 1.0, (community, gap.area)
            try:
                accept_draft(c, community, draft.grids, settings=warn)  # refused: raises
            finally:
                c.rollback()
