"""Make the small sample files the tests read.

Run: .venv/bin/python data/shapefiles/make_samples.py

A district 350104 (Fuzhou, lon 119.28-119.32 E, lat 26.03-26.07 N): one street, two communities
(west and east halves), each split into a north grid (sequence 001) and a south grid (002), one
building per grid with known households, two stations, a 3-edge walking network. Known answers:
4 grids, 1000 households in total, every grid 0.02 deg x 0.02 deg.

Files (all < 100 kB):
  sample_city.gpkg           every layer, EPSG:4326
  sample_grid_epsg32650.gpkg the grid layer in WGS 84 / UTM 50N
  sample_grid_epsg4547.gpkg  the grid layer in CGCS2000 / 3-degree GK CM 114E
  grid_bowtie.geojson        the grid layer, grid 350104001001001 a self-intersecting bowtie
  no_crs/grid.shp            the grid layer with no .prj
  local_crs/grid.shp         the grid layer with an engineering (LOCAL_CS) .prj
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from shapely.geometry import LineString, Point, Polygon, box

HERE = Path(__file__).resolve().parent
X0, Y0, X1, Y1 = 119.28, 26.03, 119.32, 26.07
XM, YM = 119.30, 26.05


def sample_layers() -> dict[str, gpd.GeoDataFrame]:
    """The good sample district's layers (EPSG:4326)."""
    c = 4326
    district = gpd.GeoDataFrame({"code": ["350104"], "name": ["台江区"], "metric_srid": [32650]},
                                geometry=[box(X0, Y0, X1, Y1)], crs=c)
    street = gpd.GeoDataFrame({"code": ["350104001"], "parent_code": ["350104"],
                               "name": ["茶亭街道"]}, geometry=[box(X0, Y0, X1, Y1)], crs=c)
    community = gpd.GeoDataFrame(
        {"code": ["350104001001", "350104001002"], "parent_code": ["350104001"] * 2,
         "name": ["西社区", "东社区"]},
        geometry=[box(X0, Y0, XM, Y1), box(XM, Y0, X1, Y1)], crs=c)
    grid = gpd.GeoDataFrame(
        {"code": ["350104001001001", "350104001001002", "350104001002001", "350104001002002"],
         "parent_code": ["350104001001"] * 2 + ["350104001002"] * 2,
         "name": ["西北网格", "西南网格", "东北网格", "东南网格"],
         "responsible_body": ["西社区居委会"] * 2 + ["东社区居委会"] * 2},
        geometry=[box(X0, YM, XM, Y1), box(X0, Y0, XM, YM), box(XM, YM, X1, Y1),
                  box(XM, Y0, X1, YM)], crs=c)
    building = gpd.GeoDataFrame(
        {"code": ["B1", "B2", "B3", "B4"], "name": ["一号楼", "二号楼", "三号楼", "四号楼"],
         "households": [100, 200, 300, 400], "residents": [250, 500, 750, 1000],
         "floors": [6, 11, 18, 33],
         "grid_code": ["350104001001001", "350104001001002", "350104001002001",
                       "350104001002002"]},
        geometry=[Point(119.29, 26.06), Point(119.29, 26.04),
                  Polygon([(119.309, 26.059), (119.311, 26.059), (119.311, 26.061),
                           (119.309, 26.061)]), Point(119.31, 26.04)], crs=c)
    station = gpd.GeoDataFrame(
        {"code": ["S1", "S2"], "name": ["西社区党群服务站", "东社区卫生服务站"],
         "kind": ["party_service_station", "health_station"],
         "community_code": ["350104001001", "350104001002"]},
        geometry=[Point(119.295, 26.055), Point(119.305, 26.045)], crs=c)
    walk_edge = gpd.GeoDataFrame(
        {"source": [1, 2, 3], "target": [2, 3, 4], "length_m": [1000.0, 1000.0, 1000.0],
         "road_class": ["residential", "crossing", "footway"],
         "is_crossing": [False, True, False], "name": ["甲路", None, "乙路"]},
        geometry=[LineString([(119.285, 26.035), (119.295, 26.035)]),
                  LineString([(119.295, 26.035), (119.305, 26.035)]),
                  LineString([(119.305, 26.035), (119.315, 26.035)])], crs=c)
    return {"district": district, "street": street, "community": community, "grid": grid,
            "building": building, "station": station, "walk_edge": walk_edge}


def main() -> None:
    layers = sample_layers()
    city = HERE / "sample_city.gpkg"
    city.unlink(missing_ok=True)
    for name, gdf in layers.items():
        pyogrio.write_dataframe(gdf, city, layer=name, driver="GPKG", append=city.exists())
    grid = layers["grid"]
    for epsg in (32650, 4547):
        p = HERE / f"sample_grid_epsg{epsg}.gpkg"
        p.unlink(missing_ok=True)
        pyogrio.write_dataframe(grid.to_crs(epsg), p, layer="grid", driver="GPKG")
    bow = grid.copy()
    bow.loc[0, "geometry"] = Polygon([(X0, YM), (XM, Y1), (XM, YM), (X0, Y1)])
    p = HERE / "grid_bowtie.geojson"
    p.unlink(missing_ok=True)
    pyogrio.write_dataframe(bow, p, driver="GeoJSON")
    for sub, prj in (("no_crs", None),
                     ("local_crs", 'LOCAL_CS["arbitrary",UNIT["metre",1]]')):
        d = HERE / sub
        d.mkdir(exist_ok=True)
        for f in d.glob("grid.*"):
            f.unlink()
        shp = pd.DataFrame(grid.drop(columns="geometry"))
        shp = shp.rename(columns={"parent_code": "parent", "responsible_body": "resp_body"})
        pyogrio.write_dataframe(gpd.GeoDataFrame(shp, geometry=grid.geometry.values),
                                d / "grid.shp", driver="ESRI Shapefile", encoding="UTF-8")
        (d / "grid.prj").unlink(missing_ok=True)
        if prj:
            (d / "grid.prj").write_text(prj)


if __name__ == "__main__":
    main()
