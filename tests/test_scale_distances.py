"""Per-building walking distances on Dask (geo/scale/distances.py) against the single process
(geo/circles/distances.py) on a real 3-district city, with a LocalCluster of 2 processes:
every building and kind equal (none within reach in both, or the same metres and station),
the stored coverage rows equal, and a halo too small loses walks (the halo matters).

The distance limit is cut to 600 m so that each partition's halo holds a part of the city,
not all of it; the districts are cut into tiles (``max_buildings``) as a large one would be."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from factories import city_engine
from sqlalchemy import text
from typer.testing import CliRunner

from cli.main import app
from geo.circles.build import BLOCKED_SQL
from geo.circles.coverage import run_coverage
from geo.circles.distances import building_distances
from geo.circles.runs import CircleSettings, metric_srid
from geo.core.errors import InvalidInput
from geo.scale.batch import dask_client
from geo.scale.distances import building_distances_dask, partition_numbers

LIMIT_M = 600.0
SETTINGS = CircleSettings(distance_limit_m=LIMIT_M)


@pytest.fixture(scope="module")
def city(fresh_database: Any) -> Iterator[tuple[str, Any]]:
    url = fresh_database()
    with city_engine(url, pool_size=2, districts=3, grids=300, buildings=3000, stations=40,
                     seed=7) as (eng, _):
        yield url, eng


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with dask_client("local", workers=2) as c:
        yield c


def _single(eng: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], int]:
    with eng.connect() as conn:
        conn.execute(text(BLOCKED_SQL), {"kinds": list(SETTINGS.circle_barrier_kinds)})
        kinds = [r[0] for r in conn.execute(text("SELECT code FROM station_kind ORDER BY 1"))]
        srid = metric_srid(conn)
        ids, dist, near, _ = building_distances(conn, srid, kinds, LIMIT_M,
                                                SETTINGS.circle_snap_max_m)
        conn.rollback()
    return ids, dist, near, kinds, srid


def _dask(client: Any, url: str, srid: int, kinds: list[str], **kw: Any) -> tuple:
    return building_distances_dask(client, url, srid, kinds, LIMIT_M,
                                   SETTINGS.circle_snap_max_m,
                                   list(SETTINGS.circle_barrier_kinds), **kw)


def test_partitions_are_districts_cut_into_tiles() -> None:
    district = np.array(["b", "a", "a", "b", "a", "c", "a", "a"])
    hilbert = np.array([5, 9, 1, 2, 7, 0, 3, 4])
    part = partition_numbers(district, hilbert, max_buildings=2)
    # a: 5 buildings -> 3 tiles by Hilbert order (1,3 | 4,7 | 9 split evenly), b: 1, c: 1
    by = {(d, h): p for d, h, p in zip(district, hilbert, part, strict=True)}
    assert sorted({p for d, p in zip(district, part, strict=True) if d == "a"}) == [0, 1, 2]
    assert by[("a", 1)] <= by[("a", 3)] <= by[("a", 4)] <= by[("a", 7)] <= by[("a", 9)]
    assert by[("b", 2)] == by[("b", 5)] == 3 and by[("c", 0)] == 4


def test_dask_distances_equal_single_process(city: tuple[str, Any], client: Any) -> None:
    url, eng = city
    ids, dist, near, kinds, srid = _single(eng)
    ids2, dist2, near2, timings = _dask(client, url, srid, kinds, max_buildings=400)
    assert timings["partitions"] >= 6  # 3 districts, each cut into tiles
    assert timings["workers"] == 2
    np.testing.assert_array_equal(ids, ids2)
    assert len(ids) == 3000 and len(kinds) >= 3
    reach = np.isfinite(dist)
    # the test means something: some buildings reach a kind, others do not (600 m)
    assert 0.2 < reach.mean() < 0.98, reach.mean()
    np.testing.assert_array_equal(reach, np.isfinite(dist2))
    np.testing.assert_allclose(dist2[reach], dist[reach], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(near, near2)
    # each partition read a part of the city's network, not all of it
    with eng.connect() as conn:
        edges = conn.execute(text("SELECT count(*) FROM walk_edge")).scalar_one()
    assert timings["halo_edges"] / timings["partitions"] < 0.8 * edges


def test_small_halo_loses_walks(city: tuple[str, Any], client: Any) -> None:
    """With a halo of 60 m instead of 630 m, walks that leave the partition's box are cut:
    some buildings get a longer distance or none, never a shorter one."""
    url, eng = city
    ids, dist, near, kinds, srid = _single(eng)
    _, small, _, _ = _dask(client, url, srid, kinds, max_buildings=400, halo_m=60.0)
    worse = ~np.isclose(np.nan_to_num(small, posinf=1e9), np.nan_to_num(dist, posinf=1e9))
    assert worse.sum() > 20, worse.sum()
    assert (np.nan_to_num(small, posinf=1e9) >= np.nan_to_num(dist, posinf=1e9) - 1e-6).all()


def test_dask_coverage_run_stores_the_same_rows(city: tuple[str, Any], client: Any) -> None:
    """``wangge coverage --dask`` on the scheduler of WANGGE_DASK_SCHEDULER (the fixture's
    cluster), districts cut into tiles (WANGGE_DASK_PARTITION_BUILDINGS), stores the rows a
    single-process coverage run stores; so does ``run_coverage(dask_client=...)`` with one
    partition a district."""
    url, eng = city
    with eng.begin() as conn:
        one = run_coverage(conn, SETTINGS, method="distance", tier_m=500)
    with eng.begin() as conn:
        spread = run_coverage(conn, SETTINGS, method="distance", tier_m=500,
                              dask_client=client, dask_url=url)
    r = CliRunner().invoke(app, ["coverage", "--tier", "500", "--dask"],
                           env={"WANGGE_DATABASE_URL": url, "WANGGE_DISTANCE_LIMIT_M": "600",
                                "WANGGE_DASK_SCHEDULER": client.scheduler.address,
                                "WANGGE_DASK_PARTITION_BUILDINGS": "400"})
    assert r.exit_code == 0, r.output
    cli_run = int(r.output.split("覆盖分析任务 ")[1].split("：")[0])
    sql = text("SELECT building_id, covered, station_ids, kinds, distance_m,"
               " nearest_station_ids FROM building_coverage WHERE run_id = :r"
               " ORDER BY building_id")
    with eng.connect() as conn:
        a = conn.execute(sql, {"r": one}).all()
        b = conn.execute(sql, {"r": spread}).all()
        c = conn.execute(sql, {"r": cli_run}).all()
        summaries = dict(conn.execute(text(
            "SELECT id, summary FROM analysis_run WHERE id = ANY(:r)"),
            {"r": [spread, cli_run]}).all())
    assert len(a) == 3000 and any(row[1] for row in a) and not all(row[1] for row in a)
    assert a == b == c
    assert summaries[spread]["dask_partitions"] == 3  # the districts (< 100,000 buildings)
    assert summaries[cli_run]["dask_partitions"] >= 8  # districts cut into tiles of <= 400


def test_dask_needs_the_distance_method(city: tuple[str, Any], client: Any) -> None:
    url, eng = city
    with eng.begin() as conn, pytest.raises(InvalidInput) as err:
        run_coverage(conn, SETTINGS, method="circles", dask_client=client)
    assert err.value.problems[0].field == "dask"


def test_partition_far_from_every_edge(city: tuple[str, Any]) -> None:
    """A partition whose halo holds no walk edge: none within reach for every kind."""
    import pandas as pd

    from geo.scale.distances import partition_distances

    url, eng = city
    _, _, _, kinds, srid = _single(eng)
    far = pd.DataFrame({"id": [1, 2], "x": [100_000.0, 100_050.0], "y": [100.0, 100.0]})
    out = partition_distances(far, url, srid, kinds, LIMIT_M, 300.0,
                              list(SETTINGS.circle_barrier_kinds), 630.0)
    assert out["edges"].tolist() == [0, 0]
    assert np.isinf(out[[f"d{k}" for k in range(len(kinds))]].to_numpy()).all()
    assert (out[[f"n{k}" for k in range(len(kinds))]].to_numpy() == -1).all()
