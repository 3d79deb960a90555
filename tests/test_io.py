"""Import (refusals leave the database unchanged), reprojection, and round trips through
GeoJSON, Shapefile and GeoPackage, against the real database."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import Point, Polygon, box
from sqlalchemy import text

from geo.core.errors import (
    InvalidInput,
    OutsideDistrict,
    PayloadTooLarge,
    SwappedCoordinates,
    UnknownCRS,
)
from geo.core.settings import DataSettings
from geo.data.io import export_layers, import_file, read_file, read_layer

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "shapefiles"
sys.path.insert(0, str(SAMPLES))
from make_samples import X0, XM, Y1, YM, sample_layers  # noqa: E402

TOL_DEG = 1e-9  # geometry round-trip tolerance, degrees (~0.1 mm)
TABLES = ("generation", "area", "building", "station", "walk_edge", "walk_node")


@pytest.fixture(scope="module")
def eng(fresh_database):
    from geo.core.db import make_engine

    e = make_engine(fresh_database(), pool_size=2)
    with e.begin() as conn:
        import_file(conn, SAMPLES / "sample_city.gpkg")
    yield e
    e.dispose()


def counts(e) -> dict[str, int]:
    with e.connect() as c:
        return {t: c.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}


def write(layers: dict[str, gpd.GeoDataFrame], path: Path) -> Path:
    for name, gdf in layers.items():
        pyogrio.write_dataframe(gdf, path, layer=name, driver="GPKG", append=path.exists())
    return path


def refused(e, path: Path, exc_type: type[Exception], **kw) -> Exception:
    before = counts(e)
    with pytest.raises(exc_type) as err:
        with e.begin() as conn:
            import_file(conn, path, **kw)
    assert counts(e) == before, "the database changed after a refused import"
    return err.value


def test_sample_loaded(eng) -> None:
    with eng.connect() as c:
        assert read_layer(c, "grid")["code"].tolist() == [
            "350104001001001", "350104001001002", "350104001002001", "350104001002002"]
        b = read_layer(c, "building")
        assert b["households"].sum() == 1000


def test_bowtie_refused_then_repaired(eng, tmp_path) -> None:
    err = refused(eng, SAMPLES / "grid_bowtie.geojson", InvalidInput, layer="grid")
    (p,) = err.problems
    assert p.field == "geometry" and "350104001001001" in p.feature
    assert "Self-intersection" in p.reason
    before = counts(eng)
    with eng.begin() as conn:
        gen = import_file(conn, SAMPLES / "grid_bowtie.geojson", layer="grid", repair=True)
        g = read_layer(conn, "grid").set_index("code").geometry["350104001001001"]
        assert g.is_valid
        # Independent: the two triangles of the bowtie, each a quarter of the grid's box.
        assert g.area == pytest.approx(box(X0, YM, XM, Y1).area / 2, rel=1e-9)
        assert gen > 1
        # The generation before still holds the original box (boundary generations).
        first = conn.execute(text("SELECT min(id) FROM generation")).scalar()
        old = read_layer(conn, "grid", generation=first).set_index("code")
        assert old.geometry["350104001001001"].equals(box(X0, YM, XM, Y1))
        assert len(read_layer(conn, "grid", generation=gen)) == 4
        conn.rollback()
    assert counts(eng) == before


def test_bad_inputs_refused_db_unchanged(eng, tmp_path) -> None:
    # Swapped lat/lon on one station.
    lay = sample_layers()
    lay["station"].loc[1, "geometry"] = Point(26.045, 119.305)
    err = refused(eng, write({"station": lay["station"]}, tmp_path / "sw.gpkg"),
                  SwappedCoordinates)
    assert "S2" in err.problems[0].feature and "swapped" in err.problems[0].reason
    # Outside the district (checked against the district in the database).
    lay = sample_layers()
    lay["building"].loc[0, "geometry"] = Point(119.35, 26.05)
    err = refused(eng, write({"building": lay["building"]}, tmp_path / "out.gpkg"),
                  OutsideDistrict)
    assert "B1" in err.problems[0].feature
    # Duplicate codes.
    lay = sample_layers()
    lay["grid"].loc[1, "code"] = "350104001001001"
    err = refused(eng, write({"grid": lay["grid"]}, tmp_path / "dup.gpkg"), InvalidInput)
    assert {p.detail["rule"] for p in err.problems} >= {"duplicate_code"}
    assert all(p.field in ("code", "geometry") for p in err.problems)
    # Grid not inside its community (parent from the database), and an overlap.
    lay = sample_layers()
    lay["grid"].loc[0, "geometry"] = box(X0 + 0.002, YM, XM + 0.002, Y1)
    lay["grid"].loc[2, "geometry"] = box(XM, YM - 0.001, 119.32, Y1)
    err = refused(eng, write({"grid": lay["grid"]}, tmp_path / "geo.gpkg"), InvalidInput)
    rules = {(p.detail["rule"], p.detail["code"]) for p in err.problems}
    assert ("not_inside_parent", "350104001001001") in rules
    assert ("overlap", "350104001002001") in rules
    # Self-intersection inside a GeoPackage.
    lay = sample_layers()
    lay["community"].loc[0, "geometry"] = Polygon([(X0, 26.03), (XM, Y1), (XM, 26.03),
                                                   (X0, Y1)])
    err = refused(eng, write({"community": lay["community"]}, tmp_path / "si.gpkg"),
                  InvalidInput)
    assert any(p.detail["rule"] == "invalid_geometry" and p.field == "geometry"
               for p in err.problems)
    # Oversized.
    refused(eng, SAMPLES / "sample_city.gpkg", PayloadTooLarge,
            settings=DataSettings(max_import_features=5))


def test_missing_and_unknown_crs_refused(eng) -> None:
    err = refused(eng, SAMPLES / "no_crs" / "grid.shp", UnknownCRS)
    assert err.problems[0].feature == "grid" and "no coordinate reference" in err.problems[0].reason
    err = refused(eng, SAMPLES / "local_crs" / "grid.shp", UnknownCRS)
    assert err.problems[0].field == "crs"


@pytest.mark.parametrize("epsg", [32650, 4547])
def test_reprojection_lands_where_pyproj_says(eng, epsg) -> None:
    path = SAMPLES / f"sample_grid_epsg{epsg}.gpkg"
    src = read_file(path)["grid"]
    back = Transformer.from_crs(epsg, 4326, always_xy=True)
    with eng.begin() as conn:
        import_file(conn, path)
        got = read_layer(conn, "grid").set_index("code")
        for code, geom in zip(src["code"], src.geometry, strict=True):
            xy = shapely.get_coordinates(geom)
            lon, lat = back.transform(xy[:, 0], xy[:, 1])
            expect = np.column_stack([lon, lat])
            assert np.allclose(shapely.get_coordinates(got.geometry[code]), expect,
                               atol=TOL_DEG, rtol=0)
        # And it is the original box within a millimetre (the files were made from it).
        orig = sample_layers()["grid"].set_index("code")
        assert got.geometry["350104001001001"].equals_exact(
            orig.geometry["350104001001001"], 1e-8)
        conn.rollback()


def _same(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame, cols: list[str]) -> None:
    a = a.sort_values(cols[0]).reset_index(drop=True)
    b = b.sort_values(cols[0]).reset_index(drop=True)
    assert len(a) == len(b)
    for c in cols:
        left = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in a[c]]
        right = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v
                 for v in b[c]]
        if c in ("households", "residents", "floors", "metric_srid", "source", "target"):
            left = [None if v is None else int(v) for v in left]
            right = [None if v is None else int(v) for v in right]
        if c == "is_crossing":
            left, right = [bool(v) for v in left], [bool(v) for v in right]
        assert left == right, c
    ga = shapely.normalize(shapely.force_2d(np.asarray(a.geometry.array, dtype=object)))
    gb = shapely.normalize(shapely.force_2d(np.asarray(b.geometry.array, dtype=object)))
    # Polygon vs single-part MultiPolygon is not a geometric difference.
    ga = np.array([g.geoms[0] if g.geom_type.startswith("Multi") and len(g.geoms) == 1 else g
                   for g in ga], dtype=object)
    gb = np.array([g.geoms[0] if g.geom_type.startswith("Multi") and len(g.geoms) == 1 else g
                   for g in gb], dtype=object)
    assert shapely.equals_exact(ga, gb, TOL_DEG).all()


ATTRS = {
    "district": ["code", "name", "metric_srid"],
    "street": ["code", "parent_code", "name"],
    "community": ["code", "parent_code", "name"],
    "grid": ["code", "parent_code", "name", "responsible_body"],
    "building": ["code", "name", "households", "residents", "floors", "grid_code"],
    "station": ["code", "name", "kind", "community_code"],
    "walk_edge": ["source", "target", "length_m", "road_class", "is_crossing", "name"],
}


@pytest.mark.parametrize("fmt", ["gpkg", "geojson", "shp"])
def test_round_trip(eng, fresh_database, tmp_path, fmt) -> None:
    from geo.core.db import make_engine

    target = tmp_path / ("city.gpkg" if fmt == "gpkg" else f"city_{fmt}")
    with eng.connect() as conn:
        layers = list(ATTRS)  # buildings mix points and footprints (B3 is a polygon)
        files = export_layers(conn, target, layers=layers, driver=fmt)
        original = {n: read_layer(conn, n) for n in layers}
    assert files
    # The files themselves hold the same features and attributes.
    back = read_file(target)
    for n in layers:
        _same(original[n], back[n], ATTRS[n])
    # And a second, empty database given the files holds the same again.
    e2 = make_engine(fresh_database(), pool_size=1)
    try:
        with e2.begin() as conn:
            import_file(conn, target)
        with e2.connect() as conn:
            for n in layers:
                _same(original[n], read_layer(conn, n), ATTRS[n])
    finally:
        e2.dispose()
    if fmt == "geojson":
        assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.geojson" for n in layers)
    if fmt == "shp":
        import pyogrio as po

        fields = po.read_info(target / "grid.shp")["fields"].tolist()
        assert all(len(f) <= 10 for f in fields) and "resp_body" in fields
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_plural_and_chinese_layer_names(tmp_path) -> None:
    """Issue 15 item 14: a data office's GeoPackage names its layers 'grids', '社区', ..."""
    from geo.planning import read_grid_layer

    layers = sample_layers()
    path = tmp_path / "office.gpkg"
    names = {"district": "districts", "street": "街道", "community": "communities",
             "grid": "网格", "building": "buildings"}
    for ours, theirs in names.items():
        layers[ours].to_file(path, layer=theirs, driver="GPKG")
    assert {n for n, _ in pyogrio.list_layers(path)} == set(names.values())  # as written
    got = read_file(path)
    assert set(got) == set(names)
    for ours in names:
        assert len(got[ours]) == len(layers[ours])
        assert list(got[ours]["code"]) == list(layers[ours]["code"].astype(str))
    grid = read_grid_layer(path)  # planning's import finds '网格' as the grid layer
    assert list(grid["code"]) == list(layers["grid"]["code"].astype(str))
