"""Dask lookup-file (geo/scale/batch.py) against the single-process ``wangge lookup-file``:
1,000,000 points, row for row, on a real LocalCluster; and a sample against shapely."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
from factories import AREAS_GEN1, seed_hand_made
from typer.testing import CliRunner

from cli.main import app
from geo.scale.batch import dask_client, lookup_file_dask

N = 1_000_000


@pytest.fixture(scope="module")
def points_db(fresh_database):
    url = fresh_database()
    eng = seed_hand_made(url)
    yield url, eng
    eng.dispose()


def _points(path, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(21)
    lon = rng.uniform(119.295, 119.345, n).round(6)  # some outside the district
    lat = rng.uniform(25.995, 26.045, n).round(6)
    frame = pd.DataFrame({"id": np.arange(n), "note": "a,\"b\"", "lon": lon.astype(object),
                          "lat": lat.astype(object)})
    frame.loc[7, "lon"] = "not a number"
    frame.loc[8, ["lon", "lat"]] = [26.01, 119.31]  # swapped
    frame.loc[9, "lat"] = ""
    frame.loc[10, ["lon", "lat"]] = [119.32, 26.015]  # on a shared boundary: smallest code
    frame.to_csv(path, index=False)
    return frame


def test_dask_lookup_file_equals_single_process(points_db, tmp_path):
    url, eng = points_db
    src = tmp_path / "points.csv"
    frame = _points(src, N)
    single, spread = tmp_path / "single.csv", tmp_path / "dask.csv"
    r = CliRunner().invoke(app, ["lookup-file", str(src), str(single)],
                           env={"WANGGE_DATABASE_URL": url})
    assert r.exit_code == 0, r.output
    plain = tmp_path / "dask_plain.csv"
    with dask_client("local", workers=2) as client:
        n, ok = lookup_file_dask(client, eng, src, spread, blocksize=4_000_000,
                                 spatial_partitions=6)
        n2, ok2 = lookup_file_dask(client, eng, src, plain, blocksize=4_000_000,
                                   spatial=False)
    a = pd.read_csv(single, dtype=str, keep_default_na=False)
    b = pd.read_csv(spread, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(b, pd.read_csv(plain, dtype=str, keep_default_na=False))
    assert (n2, ok2) == (n, ok)
    assert n == N == len(a) == len(b)
    assert list(a.columns) == list(b.columns) == ["id", "note", "lon", "lat", "grid_code",
                                                  "community_code", "street_code",
                                                  "lookup_status"]
    for col in ("id", "note", "grid_code", "community_code", "street_code", "lookup_status"):
        diff = (a[col] != b[col]).to_numpy()
        assert not diff.any(), (col, a[diff].head(), b[diff].head())
    assert ok == int((a["lookup_status"] == "ok").sum())
    assert set(a["lookup_status"]) >= {"ok", "outside_district", "no_grid", "not_a_number",
                                       "swapped"}
    # an independent check of a sample: shapely over the hand-made grids, smallest code wins
    grids = sorted((code, shapely.from_wkt(wkt)) for level, code, _p, _n, wkt in AREAS_GEN1
                   if level == "grid")
    sample = np.random.default_rng(3).choice(N, 3000, replace=False).tolist() + [10]
    for i in sample:
        try:
            x, y = float(frame.at[i, "lon"]), float(frame.at[i, "lat"])
        except ValueError:
            continue
        p = shapely.Point(x, y)
        expect = next((code for code, g in grids if g.covers(p)), "")
        assert b.at[i, "grid_code"] == expect, (i, x, y)


def test_dask_parquet_lookup_equals_single_process(points_db, tmp_path):
    """Parquet in (typed lon/lat, in parts), Parquet out: the same answers and row order as
    the single-process ``wangge lookup-file`` over the same points as CSV."""
    url, eng = points_db
    n = 100_000
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"id": np.arange(n), "lon": rng.uniform(119.295, 119.345, n).round(6),
                          "lat": rng.uniform(25.995, 26.045, n).round(6)})
    frame.loc[3, "lon"] = np.nan
    frame.loc[4, ["lon", "lat"]] = [26.01, 119.31]  # swapped
    src = tmp_path / "points.parquet"
    src.mkdir()
    for k, lo in enumerate(range(0, n, 35_000)):
        frame.iloc[lo:lo + 35_000].to_parquet(src / f"part.{k}.parquet", index=False)
    frame.to_csv(tmp_path / "points.csv", index=False)
    r = CliRunner().invoke(app, ["lookup-file", str(tmp_path / "points.csv"),
                                 str(tmp_path / "single.csv")], env={"WANGGE_DATABASE_URL": url})
    assert r.exit_code == 0, r.output
    with dask_client("local", workers=2) as client:
        got, ok = lookup_file_dask(client, eng, src, tmp_path / "out.parquet")
    a = pd.read_csv(tmp_path / "single.csv", dtype=str, keep_default_na=False)
    b = pd.read_parquet(tmp_path / "out.parquet")
    assert got == n == len(b)
    assert (b["id"].to_numpy() == frame["id"].to_numpy()).all()  # input order kept
    for col in ("grid_code", "community_code", "street_code", "lookup_status"):
        mine = b[col].astype(object).where(b[col].notna(), "").to_numpy()
        diff = mine != a[col].to_numpy()
        assert not diff.any(), (col, a[diff].head(), b[diff].head())
    assert ok == int((a["lookup_status"] == "ok").sum())
    assert b.at[3, "lookup_status"] == "not_a_number" and b.at[4, "lookup_status"] == "swapped"
