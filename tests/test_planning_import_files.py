"""Issue 15 item 14 over HTTP: real files import as they come (``POST /v1/planning/import``).

A GeoPackage written by pyogrio with a Chinese layer name (网格) and a data office's field
names (WGBM, WGMC, SQBM); a zipped Shapefile whose fields are named with a ``field`` mapping;
grids digitised with slivers of 2-19 m² along the community's edge (accepted: thinner than
``sliver_width_m``) and a real 30 m² overlap (refused). Slivers, overlaps and what snapping
moved are measured here with shapely in UTM 50N, never taken from the answers.
"""

from __future__ import annotations

import io
import zipfile

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from factories import (
    C1,
    buildings,
    community_geom,
    grids,
    snapshot,
    wgs,
)
from shapely.geometry import box
from sqlalchemy import text

from geo.data.crs import polygonal

WIDTH = 0.3  # metres: thinner than the default sliver width (0.5 m)


def pieces(ring, cell: float, parity: int) -> list:
    """The parts of ``ring`` in every other ``cell`` m square (a checkerboard), 2-19 m² each."""
    x0, y0, x1, y1 = ring.bounds
    out = []
    for i, x in enumerate(np.arange(x0 - cell, x1 + cell, cell)):
        for j, y in enumerate(np.arange(y0 - cell, y1 + cell, cell)):
            if (i + j) % 2 == parity:
                part = ring.intersection(box(x, y, x + cell, y + cell))
                out += [g for g in getattr(part, "geoms", [part])
                        if g.geom_type == "Polygon" and 2 <= g.area <= 19]
    return out


def slivered(eng) -> tuple[dict, dict]:
    """C1's grids (UTM) digitised separately from the community: bits 0.3 m wide stick out of
    its edge and bits of the edge are left uncovered, each 2-19 m². Returns (grids, counts)."""
    comm = community_geom(eng, C1)
    cur = grids(eng, C1)
    homes = shapely.union_all(buildings(eng).geometry.values).buffer(1)
    out = comm.buffer(WIDTH, join_style="mitre").difference(comm)
    inner = comm.difference(comm.buffer(-WIDTH, join_style="mitre"))
    new = dict(cur)
    sticks = pieces(out, 40.0, 0)
    for s in sticks:  # to the grid it lies against
        code = max(new, key=lambda c: new[c].intersection(s.buffer(0.5)).area)
        new[code] = new[code].union(s)
    gaps = [g for g in pieces(inner, 40.0, 1) if not g.intersects(homes)]
    for g in gaps:
        for code in new:
            if new[code].intersects(g):
                new[code] = new[code].difference(g)
    return new, {"sticks": len(sticks), "gaps": len(gaps)}


def lonlat(g):
    """``g`` (UTM) in WGS 84, valid as a file would hold it."""
    return polygonal(shapely.make_valid(wgs(g)))


def outside(geoms: dict, comm) -> dict:
    return {c: shapely.make_valid(g).difference(comm).area for c, g in geoms.items()}


def gpkg(geoms: dict, layer: str, fields: tuple[str, str, str]) -> bytes:
    code, name, parent = fields
    gdf = gpd.GeoDataFrame({code: list(geoms), name: [f"网格{c[-3:]}" for c in geoms],
                            parent: [C1] * len(geoms)},
                           geometry=[lonlat(g) for g in geoms.values()], crs=4326)
    buf = io.BytesIO()
    pyogrio.write_dataframe(gdf, buf, layer=layer, driver="GPKG")
    return buf.getvalue()


def shapefile_zip(tmp_path, geoms: dict, stem: str) -> bytes:
    gdf = gpd.GeoDataFrame({"GRIDNO": list(geoms), "GRIDNM": [f"格{c[-3:]}" for c in geoms]},
                           geometry=[lonlat(g) for g in geoms.values()], crs=4326)
    tmp_path.mkdir()
    pyogrio.write_dataframe(gdf, tmp_path / f"{stem}.shp", driver="ESRI Shapefile",
                            encoding="UTF-8")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(tmp_path.glob(f"{stem}.*")):
            zf.write(f, f.name)
    return buf.getvalue()


def test_chinese_gpkg_with_office_field_names_and_slivers_is_accepted(api):
    client, eng, h = api
    comm = community_geom(eng, C1)
    cur = grids(eng, C1)
    geoms, n = slivered(eng)
    assert n["sticks"] >= 5 and n["gaps"] >= 5
    over = outside(geoms, comm)
    assert max(over.values()) > 1.0  # beyond the 1 m² tolerance: refused before
    data = gpkg(geoms, "网格", ("WGBM", "WGMC", "SQBM"))
    r = client.post("/v1/planning/import", data={"community": C1}, headers=h["planner_in"],
                    files={"file": ("区网格.gpkg", data, "application/geopackage+sqlite3")})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["created"] == [] and out["retired"] == []  # WGBM read as the code
    assert sorted(out["changed"]) == sorted(
        c for c in geoms if geoms[c].symmetric_difference(cur[c]).area > 0.01)
    now = grids(eng, C1)
    assert set(now) == set(geoms)
    for c, g in geoms.items():  # the stored grids are the file's (slivers included)
        assert now[c].symmetric_difference(g).area < 0.05
    renamed = out["source"]["renamed"]
    assert {"layer": "grid", "from": "网格"} in renamed
    assert {(x["field"], x["as"]) for x in renamed if "field" in x} == {
        ("WGBM", "code"), ("WGMC", "name"), ("SQBM", "parent_code")}


def test_snap_moves_grids_onto_the_community_edge(api):
    client, eng, h = api
    comm = community_geom(eng, C1)
    geoms, _ = slivered(eng)
    before = outside(geoms, comm)
    data = gpkg(geoms, "grids", ("WGBM", "WGMC", "SQBM"))
    r = client.post("/v1/planning/import", data={"community": C1, "snap": "0.5"},
                    headers=h["planner_in"], files={"file": ("g.gpkg", data, "x/y")})
    assert r.status_code == 200, r.text
    snapped = r.json()["source"]["snapped"]
    moved = {m["code"] for m in snapped}
    assert moved and all(0 < m["moved_m"] <= 0.5 + 1e-6 and m["parent"] == C1 for m in snapped)
    with eng.connect() as c:
        invalid = c.execute(text("SELECT code, ST_IsValidReason(geom) FROM area WHERE "
                                 "parent_code = :p AND generation_high IS NULL "
                                 "AND NOT ST_IsValid(geom)"), {"p": C1}).all()
    assert invalid == []
    now = outside(grids(eng, C1), comm)
    stuck = [c for c in geoms if before[c] > 1.0]
    assert set(stuck) <= moved
    assert all(now[c] < before[c] / 10 for c in stuck)


def test_zipped_shapefile_with_mapped_fields_refuses_a_real_overlap(api, tmp_path):
    client, eng, h = api
    cur = grids(eng, C1)
    codes = sorted(cur)
    a, b = next((x, y) for x in codes for y in codes
                if x < y and cur[x].intersection(cur[y]).length > 20)
    edge = cur[a].intersection(cur[b])
    p = edge.interpolate(edge.length / 2)
    inside_b = [box(p.x + dx, p.y + dy, p.x + dx + sx, p.y + dy + sy)
                for dx, dy, sx, sy in ((0, -2.5, 6, 5), (-6, -2.5, 6, 5),
                                       (-2.5, 0, 5, 6), (-2.5, -6, 5, 6))]
    bump = max(inside_b, key=lambda q: q.intersection(cur[b]).area)
    assert abs(bump.intersection(cur[b]).area - 30) < 0.5  # a real 30 m² overlap, 5 m thick
    bad = {**cur, a: cur[a].union(bump.intersection(cur[b]))}
    form = {"community": C1, "field": ["code=GRIDNO", "name=GRIDNM"]}
    before = snapshot(eng)
    r = client.post("/v1/planning/import", data=form, headers=h["planner_in"], files={
        "file": ("grids.zip", shapefile_zip(tmp_path / "bad", bad, "grids"), "application/zip")})
    assert r.status_code == 422 and "overlap" in r.text, r.text
    m2 = [p["detail"]["m2"] for p in r.json()["problems"]
          if p.get("detail", {}).get("check") == "overlap"]
    assert m2 and abs(m2[0] - 30) < 1.0
    assert snapshot(eng) == before
    r = client.post("/v1/planning/import", data={**form, "field": ["code=GRIDNO", "bad"]},
                    headers=h["planner_in"], files={
                        "file": ("g.zip", shapefile_zip(tmp_path / "ok", cur, "grids"), "x/y")})
    assert r.status_code == 422 and "field" in r.text and "OURS=THEIRS" in r.text, r.text
    r = client.post("/v1/planning/import", data=form, headers=h["planner_in"], files={
        "file": ("g.zip", shapefile_zip(tmp_path / "ok2", cur, "grids"), "x/y")})
    assert r.status_code == 200, r.text
    assert r.json()["created"] == [] and r.json()["retired"] == []  # GRIDNO read as the code
