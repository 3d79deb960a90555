"""The ``wangge`` CLI: --help on every command, and import/export/demo-load end to end."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely
import typer
from pyproj import Geod
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from cli.main import app

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "shapefiles"
runner = CliRunner()


def _command_paths(t: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for cmd in t.registered_commands:
        name = cmd.name or cmd.callback.__name__.replace("_", "-")
        paths.append(prefix + (name,))
    for grp in t.registered_groups:
        sub = prefix + (grp.name,)
        paths.append(sub)
        paths.extend(_command_paths(grp.typer_instance, sub))
    return paths


def test_top_level_help() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("import", "export", "demo-load"):
        assert cmd in r.output


@pytest.mark.parametrize("path", _command_paths(app), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    r = runner.invoke(app, [*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output


def test_import_export_and_refusal(fresh_database, tmp_path) -> None:
    url = fresh_database()
    env = {"WANGGE_DATABASE_URL": url}
    r = runner.invoke(app, ["import", str(SAMPLES / "sample_city.gpkg")], env=env)
    assert r.exit_code == 0, r.output
    eng = create_engine(url)
    with eng.connect() as c:
        before = c.execute(text("SELECT count(*) FROM area")).scalar()
    assert before == 1 + 1 + 2 + 4
    r = runner.invoke(app, ["import", str(SAMPLES / "grid_bowtie.geojson"), "--layer", "grid"],
                      env=env)
    assert r.exit_code == 1
    assert "350104001001001" in r.output and "Self-intersection" in r.output
    with eng.connect() as c:
        assert c.execute(text("SELECT count(*) FROM area")).scalar() == before
    r = runner.invoke(app, ["import", str(SAMPLES / "grid_bowtie.geojson"), "--repair",
                                     "--layer", "grid"],
                      env=env)
    assert r.exit_code == 0, r.output
    # The repaired grids are what shapely's make_valid makes of the file: same codes, valid,
    # each with the geodesic area of the repaired shape (pyproj, independent of PostGIS).
    source = gpd.read_file(SAMPLES / "grid_bowtie.geojson")
    geod = Geod(ellps="WGS84")
    want = {code: abs(geod.geometry_area_perimeter(shapely.make_valid(g))[0])
            for code, g in zip(source["code"], source.geometry, strict=True)}
    with eng.connect() as c:
        got = {row.code: (row.valid, row.m2) for row in c.execute(text(
            "SELECT code, ST_IsValid(geom) AS valid, ST_Area(geom::geography, true) AS m2"
            " FROM area_current WHERE level = 'grid'"))}
    assert set(got) == set(want)
    for code, (valid, m2) in got.items():
        assert valid and abs(m2 - want[code]) <= 1e-6 * want[code] + 1.0, code
    out = tmp_path / "out.gpkg"
    r = runner.invoke(app, ["export", str(out), "--layers", "grid", "--layers", "station"],
                      env=env)
    assert r.exit_code == 0, r.output
    assert sorted(row[0] for row in pyogrio.list_layers(out)) == ["grid", "station"]
    r = runner.invoke(app, ["export", str(tmp_path / "shp"), "--format", "shp"], env=env)
    assert r.exit_code == 0, r.output
    # The shapefile holds the current grids: the same codes and parents (field names cut to
    # ten characters), in WGS 84, covering the same ground.
    shp = gpd.read_file(tmp_path / "shp" / "grid.shp")
    assert shp.crs.to_epsg() == 4326
    assert dict(zip(shp["code"], shp["parent"], strict=True)) == dict(
        zip(source["code"], source["parent_code"], strict=True))
    for code, g in zip(shp["code"], shp.geometry, strict=True):
        assert abs(abs(geod.geometry_area_perimeter(g)[0]) - want[code]) <= 1e-6 * want[code] + 1
    eng.dispose()


def test_demo_load_once(fresh_database) -> None:
    env = {"WANGGE_DATABASE_URL": fresh_database()}
    r = runner.invoke(app, ["demo-load"], env=env)
    assert r.exit_code == 0 and "已载入" in r.output, r.output
    r = runner.invoke(app, ["demo-load"], env=env)
    assert r.exit_code == 0 and "已有区数据" in r.output


def test_import_with_layer_and_field_mapping(fresh_database, tmp_path) -> None:
    """Issue 15 item 14: ``--map grid=WG_2026 --field code=WGBM --field name=WGMC``."""
    url = fresh_database()
    env = {"WANGGE_DATABASE_URL": url}
    office = tmp_path / "office.gpkg"
    grids = None
    for name in pyogrio.list_layers(SAMPLES / "sample_city.gpkg")[:, 0]:
        gdf = pyogrio.read_dataframe(SAMPLES / "sample_city.gpkg", layer=name)
        if name == "grid":
            grids = gdf
            gdf = gdf.rename(columns={"code": "WGBM", "name": "WGMC"})
            name = "WG_2026"
        pyogrio.write_dataframe(gdf, office, layer=name, driver="GPKG")
    r = runner.invoke(app, ["import", str(office)], env=env)
    assert r.exit_code == 1 and "WG_2026" in r.output, r.output  # unknown without the mapping
    r = runner.invoke(app, ["import", str(office), "--map", "grid=WG_2026", "--field",
                            "code=WGBM", "--field", "name=WGMC"], env=env)
    assert r.exit_code == 0, r.output
    eng = create_engine(url)
    with eng.connect() as c:
        got = dict(c.execute(text("SELECT code, name FROM area WHERE level = 'grid'")).all())
    eng.dispose()
    assert got == dict(zip(grids["code"].astype(str), grids["name"], strict=True))
    r = runner.invoke(app, ["import", str(office), "--map", "grid"], env=env)
    assert r.exit_code != 0 and "OURS=THEIRS" in r.output


def test_import_snap_reports_what_moved(fresh_database, tmp_path) -> None:
    """Issue 15 item 14: ``--snap 0.5`` moves a grid sticking 0.3 m out of its community back
    onto the community's edge and says so; without it (slivers counted) the file is refused."""
    import numpy as np
    from shapely.geometry import box

    url = fresh_database()
    env = {"WANGGE_DATABASE_URL": url, "WANGGE_SLIVER_WIDTH_M": "0"}
    office = tmp_path / "office.gpkg"
    for name in pyogrio.list_layers(SAMPLES / "sample_city.gpkg")[:, 0]:
        gdf = pyogrio.read_dataframe(SAMPLES / "sample_city.gpkg", layer=name)
        if name == "grid":
            x0, y0, x1, y1 = gdf.geometry.iloc[0].bounds
            dlon = 0.3 / (111_320 * np.cos(np.radians((y0 + y1) / 2)))
            gdf.loc[0, "geometry"] = box(x0, y0, x1 + dlon, y1)
            code, east = str(gdf["code"].iloc[0]), x1
        pyogrio.write_dataframe(gdf, office, layer=name, driver="GPKG")
    r = runner.invoke(app, ["import", str(office)], env=env)
    assert r.exit_code == 1 and "not inside" in r.output, r.output
    r = runner.invoke(app, ["import", str(office), "--snap", "0.5"], env=env)
    assert r.exit_code == 0, r.output
    assert f"已吸附 grid {code}" in r.output
    moved = float(r.output.split(f"已吸附 grid {code}")[1].split("最大移动 ")[1].split(" m")[0])
    assert 0.25 < moved < 0.35
    eng = create_engine(url)
    with eng.connect() as c:
        xmax = c.execute(text("SELECT ST_XMax(geom) FROM area WHERE code = :c"),
                         {"c": code}).scalar()
    eng.dispose()
    assert abs(xmax - east) < 1e-9  # back on the community's edge


def test_grid_import_takes_map_field_and_snap(fresh_database, tmp_path) -> None:
    """Issue 15 item 14 on ``wangge grid import``: the same ``--map``/``--field``/``--snap``
    as ``wangge import`` (one helper); WGMC is read as the name without a mapping."""
    import numpy as np
    from shapely.geometry import box

    url = fresh_database()
    env = {"WANGGE_DATABASE_URL": url, "WANGGE_SLIVER_WIDTH_M": "0"}
    assert runner.invoke(app, ["import", str(SAMPLES / "sample_city.gpkg")],
                         env=env).exit_code == 0
    gdf = pyogrio.read_dataframe(SAMPLES / "sample_city.gpkg", layer="grid")
    x0, y0, x1, y1 = gdf.geometry.iloc[0].bounds
    dlon = 0.3 / (111_320 * np.cos(np.radians((y0 + y1) / 2)))
    gdf.loc[0, "geometry"] = box(x0, y0, x1 + dlon, y1)  # 0.3 m out of its community
    code = str(gdf["code"].iloc[0])
    gdf["name"] = [f"第二版{i}" for i in range(len(gdf))]
    office = tmp_path / "office.gpkg"
    pyogrio.write_dataframe(gdf.rename(columns={"code": "BIANHAO", "name": "WGMC"}), office,
                           layer="第二版网格", driver="GPKG")
    mapped = ["grid", "import", str(office), "--map", "grid=第二版网格", "--field",
              "code=BIANHAO"]
    r = runner.invoke(app, mapped, env=env)
    assert r.exit_code == 1 and "outside community" in r.output, r.output  # not snapped
    r = runner.invoke(app, [*mapped, "--snap", "0.5"], env=env)
    assert r.exit_code == 0, r.output
    assert f"已吸附 grid {code}" in r.output and "grid 的字段 WGMC 按 name 读取" in r.output
    assert '"created": []' in r.output and '"retired": []' in r.output  # codes read: BIANHAO
    eng = create_engine(url)
    with eng.connect() as c:
        xmax = c.execute(text("SELECT ST_XMax(geom) FROM area WHERE code = :c "
                              "AND generation_high IS NULL"), {"c": code}).scalar()
    eng.dispose()
    assert abs(xmax - x1) < 1e-9  # back on the community's edge
