"""Shared test districts: hand-made areas whose right answers are known from shapely alone.

- The lookup district (``AREAS_GEN1``, written by ``write_generation``/``seed_hand_made``): two
  communities of two grids each, one grid with a hole and one a multipolygon of two strips.
- The two-grid district (``AREA_SQL``): one street, one community, grids ``GRID_W`` | ``GRID_E``
  split at lon 119.31, for the incident and Open311 tests; ``offset`` moves a point on the
  ellipsoid (pyproj, independent of PostGIS).

Coordinates are lon, lat in WGS 84.
"""

from __future__ import annotations

from typing import Any

from pyproj import Geod
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from geo.core.db import make_engine

GEOD = Geod(ellps="WGS84")

# ---------------------------------------------------------------- the lookup district

D, S = "350104", "350104001"
C1, C2 = S + "001", S + "002"
G11, G12, G21, G22 = C1 + "001", C1 + "002", C2 + "001", C2 + "002"


def box(x0: float, y0: float, x1: float, y1: float) -> str:
    """WKT of the lon/lat rectangle."""
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


# District 119.30..119.34 E, 26.00..26.04 N; communities split at 119.32 E.
AREAS_GEN1 = [
    ("district", D, None, "Gulou", box(119.30, 26.00, 119.34, 26.04)),
    ("street", S, D, "Street 1", box(119.30, 26.00, 119.34, 26.04)),
    ("community", C1, S, "West", box(119.30, 26.00, 119.32, 26.04)),
    ("community", C2, S, "East", box(119.32, 26.00, 119.34, 26.04)),
    # a square with a hole (the hole is in no grid)
    ("grid", G11, C1, "SW",
     "POLYGON((119.30 26.00,119.32 26.00,119.32 26.02,119.30 26.02,119.30 26.00),"
     "(119.305 26.005,119.307 26.005,119.307 26.007,119.305 26.007,119.305 26.005))"),
    ("grid", G12, C1, "NW", box(119.30, 26.02, 119.32, 26.04)),
    # a multipolygon of two strips
    ("grid", G21, C2, "E strips",
     "MULTIPOLYGON(((119.32 26.00,119.34 26.00,119.34 26.01,119.32 26.01,119.32 26.00)),"
     "((119.32 26.03,119.34 26.03,119.34 26.04,119.32 26.04,119.32 26.03)))"),
    ("grid", G22, C2, "E middle", box(119.32, 26.01, 119.34, 26.03)),
]


def write_generation(conn: Connection, areas: list[tuple[str, str, str | None, str, str]],
                     effective_from: Any, *, close_previous: bool = False) -> int:
    """One generation of (level, code, parent, name, WKT) areas; with ``close_previous`` the
    current areas end at the generation before."""
    gen = conn.execute(text("INSERT INTO generation (effective_from, kind) VALUES (:t, 'import') "
                            "RETURNING id"), {"t": effective_from}).scalar()
    if close_previous:
        conn.execute(text("UPDATE area SET generation_high = :p WHERE generation_high IS NULL"),
                     {"p": gen - 1})
    for level, code, parent, name, wkt in areas:
        conn.execute(text(
            "INSERT INTO area (level, code, parent_code, name, geom, generation_low,"
            " responsible_body, metric_srid) VALUES (:l, :c, :p, :n,"
            " ST_Multi(ST_GeomFromText(:w, 4326)), :g, :rb, :srid)"),
            {"l": level, "c": code, "p": parent, "n": name, "w": wkt, "g": gen,
             "rb": "office" if level == "grid" else None,
             "srid": 32650 if level == "district" else None})
    return int(gen)


def seed_hand_made(url: str) -> Engine:
    """An engine on ``url`` with the lookup district and a two-person team in ``G11``."""
    eng = make_engine(url)
    with eng.begin() as c:
        write_generation(c, AREAS_GEN1, "2025-01-01T00:00:00+08:00")
        c.execute(text("INSERT INTO grid_team_member (grid_code, role, name, phone) VALUES "
                       "(:g, 'grid_leader', 'Lin Wei', '13800000000'),"
                       "(:g, 'grid_worker', 'Chen Jie', NULL)"), {"g": G11})
    return eng


# ---------------------------------------------------------------- the two-grid district

GRID_W, GRID_E = "350104001001001", "350104001001002"

AREA_SQL = """
INSERT INTO generation (id, kind, effective_from) VALUES (1, 'import', now() - interval '1 day');
INSERT INTO area (level, code, parent_code, name, geom, generation_low, responsible_body,
                  metric_srid) VALUES
 ('district', '350104', NULL, '仓山区', ST_Multi(ST_MakeEnvelope(119.30, 26.04, 119.32, 26.06,
   4326)), 1, NULL, 32650),
 ('street', '350104001', '350104', '测试街道', ST_Multi(ST_MakeEnvelope(119.30, 26.04, 119.32,
   26.06, 4326)), 1, NULL, NULL),
 ('community', '350104001001', '350104001', '测试社区', ST_Multi(ST_MakeEnvelope(119.30, 26.04,
   119.32, 26.06, 4326)), 1, NULL, NULL),
 ('grid', '350104001001001', '350104001001', '西网格', ST_Multi(ST_MakeEnvelope(119.30, 26.04,
   119.31, 26.06, 4326)), 1, '测试社区居委会', NULL),
 ('grid', '350104001001002', '350104001001', '东网格', ST_Multi(ST_MakeEnvelope(119.31, 26.04,
   119.32, 26.06, 4326)), 1, '测试社区居委会', NULL);
SELECT setval(pg_get_serial_sequence('generation', 'id'), 1);
"""


def offset(lon: float, lat: float, metres: float, azimuth: float = 90.0) -> tuple[float, float]:
    """A point ``metres`` away on the ellipsoid (independent of PostGIS)."""
    lo, la, _ = GEOD.fwd(lon, lat, azimuth, metres)
    return lo, la


def tiny_png(size: tuple[int, int] = (4, 4)) -> bytes:
    """A real PNG, made by Pillow."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()
