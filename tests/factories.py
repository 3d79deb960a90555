"""Shared test districts: hand-made areas whose right answers are known from shapely alone,
and the data and independent reads of the shared worlds whose fixtures are in conftest.py.

- The lookup district (``AREAS_GEN1``, written by ``write_generation``/``seed_hand_made``): two
  communities of two grids each, one grid with a hole and one a multipolygon of two strips.
- The two-grid district (``AREA_SQL``): one street, one community, grids ``GRID_W`` | ``GRID_E``
  split at lon 119.31, for the incident and Open311 tests; ``offset`` moves a point on the
  ellipsoid (pyproj, independent of PostGIS).

Coordinates are lon, lat in WGS 84.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from fastapi.testclient import TestClient
from pyproj import Geod, Transformer
from shapely.geometry import LineString
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from geo.auth.service import AuthSettings
from geo.core.db import make_engine
from geo.planning import PlanningSettings

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


@contextmanager
def two_grid_engine(url: str, pool_size: int = 4) -> Iterator[Engine]:
    """An engine on ``url`` (a fresh database) holding the two-grid district (``AREA_SQL``),
    disposed on exit."""
    eng = make_engine(url, pool_size=pool_size)
    with eng.begin() as c:
        c.exec_driver_sql(AREA_SQL)
    try:
        yield eng
    finally:
        eng.dispose()


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


# ---------------------------------------------------------------- the synthetic planning city
# One synthetic city (24 grids: communities C1 and C2 of street S), copied per test by the
# ``api`` fixture (conftest.py); planners ``planner_in`` (area S), ``planner_out`` and ``admin``.
# Geometry read back in UTM 50N (m, m²) to be checked with shapely.

PLANNING_AUTH = AuthSettings(jwt_secret="planning-test-" + "x" * 32, enforce_access=True)
UTM = 32650
TO_UTM = Transformer.from_crs(4326, UTM, always_xy=True)
TO_WGS = Transformer.from_crs(UTM, 4326, always_xy=True)
WARN = PlanningSettings(balance_mode="warn")
RULE = PlanningSettings()


def utm(g):
    return shapely.transform(g, lambda xy: np.column_stack(TO_UTM.transform(xy[:, 0], xy[:, 1])))


def wgs(g):
    return shapely.transform(g, lambda xy: np.column_stack(TO_WGS.transform(xy[:, 0], xy[:, 1])))


def grids(eng, community: str | None = None) -> dict[str, shapely.Geometry]:
    """Current grids {code: geometry in UTM}."""
    with eng.connect() as c:
        rows = c.execute(text(
            "SELECT code, ST_AsBinary(geom) FROM area WHERE level = 'grid' AND "
            "generation_high IS NULL AND (CAST(:c AS text) IS NULL OR parent_code = :c)"),
            {"c": community}).all()
    return {code: utm(shapely.from_wkb(bytes(w))) for code, w in rows}


def community_geom(eng, code: str) -> shapely.Geometry:
    with eng.connect() as c:
        w = c.execute(text("SELECT ST_AsBinary(geom) FROM area WHERE level = 'community' AND "
                           "code = :c AND generation_high IS NULL"), {"c": code}).scalar()
    return utm(shapely.from_wkb(bytes(w)))


def buildings(eng) -> gpd.GeoDataFrame:
    with eng.connect() as c:
        b = gpd.read_postgis(text("SELECT code, grid_code, households, location FROM building"),
                             c, geom_col="location")
    return b.to_crs(UTM)


def snapshot(eng) -> tuple:
    with eng.connect() as c:
        return tuple(tuple(c.execute(text(sql)).all()) for sql in (
            "SELECT id, code, generation_low, generation_high, md5(ST_AsEWKB(geom)::text) "
            "FROM area ORDER BY id", "SELECT code, grid_code FROM building ORDER BY code",
            "SELECT id FROM generation ORDER BY id", "SELECT code FROM retired_code ORDER BY 1",
            "SELECT count(*) FROM building_move"))


def assert_sound(eng, communities: list[str]) -> None:
    """Shapely: grids tile each community (no gap, no overlap > 1 m²), every building lies in
    exactly one grid and is assigned to it."""
    cur = grids(eng)
    codes = list(cur)
    geoms = np.asarray(list(cur.values()), dtype=object)
    for comm in communities:
        mine = [g for c, g in cur.items() if c.startswith(comm)]
        assert shapely.union_all(mine).symmetric_difference(community_geom(eng, comm)).area < 1.0
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    keep = a < b
    assert shapely.area(shapely.intersection(geoms[a[keep]], geoms[b[keep]])).max() < 1.0
    bl = buildings(eng)
    hit_b, hit_g = tree.query(bl.geometry.values, predicate="intersects")
    assert (np.bincount(hit_b, minlength=len(bl)) == 1).all()
    assert (np.asarray(codes)[hit_g[np.argsort(hit_b)]] == bl["grid_code"].to_numpy()).all()


def split_line(eng, code: str):
    """The grid (UTM), x of its centroid, a north-south line through it (WGS 84) and a point
    (WGS 84) in its western half."""
    old = grids(eng)[code]
    cx = old.centroid.x
    line = wgs(LineString([(cx, old.bounds[1] - 20), (cx, old.bounds[3] + 20)]))
    return old, cx, line, wgs(shapely.Point((old.bounds[0] + cx) / 2, old.centroid.y))


def refused(r, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    for w in words:
        assert w in r.text, (w, r.text)




# ---------------------------------------------------------------- the scoped district
# District 350104, streets split at lon 119.31: grids W1A | W1B (street 350104001) and E2
# (350104002); users of every role (``USERS``) and four cases (``CASES``): the ``scoped_world``
# fixture (conftest.py). The expected rows of each role are in tests/test_scoping.py.

SCOPING_AUTH = AuthSettings(jwt_secret="scoping-test-" + "y" * 32, enforce_access=True)
DISTRICT, STREET1, STREET2 = "350104", "350104001", "350104002"
W1A, W1B, E2 = "350104001001001", "350104001001002", "350104002001001"
SCOPED_GRIDS = {W1A: shapely.box(119.300, 26.04, 119.305, 26.06),
                W1B: shapely.box(119.305, 26.04, 119.31, 26.06),
                E2: shapely.box(119.31, 26.04, 119.32, 26.06)}

SCOPED_AREA_SQL = """
INSERT INTO generation (id, kind, effective_from) VALUES (1, 'import', now() - interval '1 day');
SELECT setval(pg_get_serial_sequence('generation', 'id'), 1);
INSERT INTO area (level, code, parent_code, name, geom, generation_low, responsible_body,
                  metric_srid) VALUES
 ('district', '350104', NULL, '仓山区', ST_Multi(ST_MakeEnvelope(119.30, 26.04, 119.32, 26.06,
   4326)), 1, NULL, 32650),
 ('street', '350104001', '350104', '西街道', ST_Multi(ST_MakeEnvelope(119.30, 26.04, 119.31,
   26.06, 4326)), 1, NULL, NULL),
 ('street', '350104002', '350104', '东街道', ST_Multi(ST_MakeEnvelope(119.31, 26.04, 119.32,
   26.06, 4326)), 1, NULL, NULL),
 ('community', '350104001001', '350104001', '西社区', ST_Multi(ST_MakeEnvelope(119.30, 26.04,
   119.31, 26.06, 4326)), 1, NULL, NULL),
 ('community', '350104002001', '350104002', '东社区', ST_Multi(ST_MakeEnvelope(119.31, 26.04,
   119.32, 26.06, 4326)), 1, NULL, NULL),
 ('grid', '350104001001001', '350104001001', '西一网格', ST_Multi(ST_MakeEnvelope(119.300, 26.04,
   119.305, 26.06, 4326)), 1, '西社区居委会', NULL),
 ('grid', '350104001001002', '350104001001', '西二网格', ST_Multi(ST_MakeEnvelope(119.305, 26.04,
   119.31, 26.06, 4326)), 1, '西社区居委会', NULL),
 ('grid', '350104002001001', '350104002001', '东一网格', ST_Multi(ST_MakeEnvelope(119.31, 26.04,
   119.32, 26.06, 4326)), 1, '东社区居委会', NULL);
"""

# username -> (role, area, department code)
USERS = {
    "resident1": ("resident", None, None),
    "resident2": ("resident", None, None),
    "gridworker": ("grid_worker", W1A, None),
    "commander": ("commander", STREET1, None),
    "planner": ("planner", STREET1, None),
    "water": ("department_staff", None, "water"),
    "sanitation": ("department_staff", None, "sanitation"),
    "admin": ("admin", None, None),
}
# (case, category, lon, lat, reporter)
CASES = [("A", "rubbish", 119.302, 26.045, "resident1"),
         ("B", "sewer_blocked", 119.307, 26.045, "resident2"),
         ("C", "pipe_burst", 119.315, 26.045, "resident1"),
         ("D", "rubbish", 119.316, 26.055, "admin")]


@dataclass
class Located:
    lon: float
    lat: float
    district: dict
    street: dict
    community: dict
    grid: dict | None
    boundary_distance_m: float = 100.0


def locator(conn: Any, lon: float, lat: float, *, crs: str = "wgs84", at: Any = None) -> Located:
    """Stand-in for the point lookup over the hand-made grids (shapely)."""
    code = next((c for c, g in SCOPED_GRIDS.items() if g.contains(shapely.Point(lon, lat))), None)
    part = (lambda n: {"code": code[:n]}) if code else (lambda n: None)
    return Located(lon, lat, part(6), part(9), part(12), part(15))


@dataclass
class World:
    client: TestClient
    engine: Engine
    headers: dict[str, dict[str, str]]
    ids: dict[str, int]  # case letter -> incident id
    user_ids: dict[str, int]

    def letters(self, rows: list[dict[str, Any]]) -> set[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return {by_id.get(r["id"], f"#{r['id']}") for r in rows}

    def get(self, who: str, url: str, **kw: Any) -> Any:
        return self.client.get(url, headers=self.headers[who], **kw)

    def post(self, who: str, url: str, body: dict | None = None, **kw: Any) -> Any:
        return self.client.post(url, headers=self.headers[who], json=body, **kw)


_spot = count()


def new_case(w: World, who: str, grid: str, category: str = "noise") -> int:
    """A fresh case in ``grid`` at a spot no other test uses (no duplicate linking)."""
    x0, y0, x1, _ = SCOPED_GRIDS[grid].bounds
    n = next(_spot)
    r = w.post(who, "/v1/incidents", {"category": category, "lon": (x0 + x1) / 2,
                                      "lat": y0 + 0.0005 + 0.0008 * n})
    assert r.status_code == 201 and r.json()["status"] == "reported", r.text
    return r.json()["id"]


def status_of(w: World, incident_id: int) -> str:
    with w.engine.connect() as c:
        return c.execute(text("SELECT status FROM incident WHERE id = :i"),
                         {"i": incident_id}).scalar_one()




@contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` under uvicorn in a thread on a free localhost port; yields its base URL once it
    has started, and stops it on exit (browser tests drive it with Chromium)."""
    import uvicorn

    from geo.core.embedded import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def moved_boundary(cur, a: str, b: str, metres: float):
    """Move the shared (roughly north-south) edge of west grid ``a`` and east grid ``b``
    ``metres`` east: cut their union with a vertical line. Returns new a, new b, area moved."""
    union = cur[a].union(cur[b])
    x = cur[a].boundary.intersection(cur[b].boundary).centroid.x + metres
    minx, miny, maxx, maxy = union.bounds
    new_a = union.intersection(shapely.box(minx - 1, miny - 1, x, maxy + 1))
    new_b = union.intersection(shapely.box(x, miny - 1, maxx + 1, maxy + 1))
    return new_a, new_b, new_a.area - cur[a].area


@contextmanager
def seeded_cluster(prefix: str) -> Iterator[Any]:
    """A private embedded primary (migrated, ``seed_hand_made``) in a state directory beside the
    session's (the postgres user can enter it; pytest's tmp is root's); yields its
    ``DatabaseSettings``; stops it and any standby of it (immediate) and removes it on exit."""
    import shutil
    import uuid

    from geo.core import embedded, replica
    from geo.core.db import migrate
    from geo.core.settings import DatabaseSettings

    state = DatabaseSettings().state_dir.resolve() / f"{prefix}-{uuid.uuid4().hex[:8]}"
    settings = DatabaseSettings(database_url=None, read_database_url=None, db_port=0,
                                state_dir=state)
    embedded.start(settings)
    try:
        url = embedded.url(settings)
        migrate(url)
        seed_hand_made(url).dispose()
        yield settings
    finally:
        embedded.stop(replica.standby_settings(settings), mode="immediate")
        embedded.stop(settings, mode="immediate")
        shutil.rmtree(state, ignore_errors=True)


def posts_at_once(client, calls) -> list:
    """Send the requests at the same instant (a barrier), each from its own thread."""
    barrier = threading.Barrier(len(calls))
    out: list = [None] * len(calls)

    def run(i, path, body, headers):
        barrier.wait()
        out[i] = client.post(path, json=body, headers=headers)

    threads = [threading.Thread(target=run, args=(i, *c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@contextmanager
def city_engine(url: str, users: dict[str, tuple[str, str]] | None = None,
                auth: AuthSettings | None = None, pool_size: int = 4,
                **city: Any) -> Iterator[tuple[Engine, dict[str, Any]]]:
    """A synthetic city of several districts (``generate_districts(**city)``) written to
    ``url``, with a user per ``users`` entry ({name: (role, area code)}, password
    ``NAME-password``); yields the engine and the layers, disposed on exit."""
    from geo.auth.service import create_user
    from geo.data.store import write_layers
    from geo.samples.city import generate_districts

    layers = generate_districts(**city)
    eng = make_engine(url, pool_size=pool_size)
    with eng.begin() as conn:
        write_layers(conn, layers, kind="synth")
        for name, (role, area) in (users or {}).items():
            create_user(conn, name, f"{name}-password", role, area_code=area, settings=auth)
    try:
        yield eng, layers
    finally:
        eng.dispose()


def bearer_headers(client: TestClient, names: Any,
                   password: Any = lambda name: f"{name}-password") -> dict[str, dict[str, str]]:
    """Each user of ``names`` signed in through ``/v1/auth/token`` (the OAuth2 password form;
    ``password(name)`` is theirs): {name: its Authorization header}."""
    headers = {}
    for name in names:
        r = client.post("/v1/auth/token", data={"username": name, "password": password(name)})
        assert r.status_code == 200, r.text
        headers[name] = {"Authorization": f"Bearer {r.json()['access_token']}"}
    return headers

