"""Polygons of chunks of circles in forked worker processes (raster contour or exact buffer,
then the barrier cut), as ``service_circle`` COPY rows. Metres in the run's metric CRS in,
EPSG:4326 out. ``geo.circles.build`` hands chunks to ``process_pool`` (or draws them itself).

Workers' CPU on the demo's 162 real circles: 0.53-0.60 s (0.78-0.89 s before the compiled
pieces and feature transform, load ~3); on the dense city's 15,000: 60-72 s (cut 32-39,
raster 15-18, pieces 8-9, store 5-7; 97 s before: cut 34, raster 41, pieces 16, store 6).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from geo.circles.geometry import (
    EdgeCoords,
    PieceIndex,
    circle_polygons,
    cut_barrier,
    edge_reach,
    prepared_barrier,
    tier_intervals,
)
from geo.circles.raster import raster_polygons
from geo.circles.seeds import EdgeSamples, reached_pieces
from geo.data.store import _ewkb, _multi_polygons

CHUNK = 250  # circles per buffer task
POOL_MIN_CIRCLES = 100  # fewer circles are drawn in this process (forking costs more)


@dataclass
class Job:
    """What every chunk of a run shares (picklable, sent to the worker processes)."""

    run_id: int
    srid: int
    method: str
    cell_m: float
    buffer_m: float
    quad_segs: int
    speed: float
    barrier: bytes | None


@dataclass
class Chunk:
    """Some circles' reached pieces: vertices (m), piece of each vertex, circle of each piece
    (all local to the chunk), and each circle's station, tier (m) and piece count."""

    xy: np.ndarray
    piece: np.ndarray
    circle: np.ndarray
    n: int
    station: np.ndarray
    tier: np.ndarray
    pieces: np.ndarray
    start: np.ndarray | None = None  # circle k's points: xy[start[k]:start[k + 1]] (seeds)
    corner: np.ndarray | None = None  # the points that are piece ends or edge vertices


@dataclass
class Network:
    """The run's usable edges (vertex arrays in metres, end node ids, planar lengths), the
    stations' snapped positions (station, edge index, frac, snap m) and the tiers (m): set in
    the parent before the workers fork, so they inherit it rather than receive it."""

    coords: EdgeCoords
    source: np.ndarray
    target: np.ndarray
    length: np.ndarray
    own: pd.DataFrame
    tiers: np.ndarray
    samples: EdgeSamples | None = None  # for the raster method (``geo.circles.seeds``)

    def __post_init__(self) -> None:
        o = self.own.sort_values("station")
        self.own_station = o["station"].to_numpy(np.int64)
        self.own_edge = o["edge"].to_numpy(np.int64)
        self.own_frac = o["frac"].to_numpy(float)
        self.own_snap = o["snap"].to_numpy(float)


_NETWORK: Network | None = None


def set_network(net: Network | None, job: Job | None = None) -> None:
    """Make ``net`` the network that ``station_csv`` works on (None: forget it); with ``job``,
    also parse its barrier and make its transformer here, so that forked workers inherit them
    instead of each making its own on every run (~10-20 ms a worker)."""
    global _NETWORK
    _NETWORK = net
    if job is not None:
        if job.barrier is not None:
            prepared_barrier(job.barrier)
        _to_wgs84(job.srid)


class Reach(NamedTuple):
    """Part of the search's answer: station id, walk node id, network metres (arrays)."""

    station: np.ndarray
    node: np.ndarray
    d: np.ndarray


def station_chunks(members: np.ndarray, dd: pd.DataFrame,
                   size: int) -> Iterator[tuple[np.ndarray, Reach]]:
    """The search's answer (station, node, d) split into chunks of ``size`` stations of
    ``members`` (in their order: near one another), as plain arrays (cheap to pickle, no
    pandas in the workers' hot path); each chunk's rows by station in ``members`` order."""
    st = dd["station"].to_numpy(np.int64)
    node, d = dd["node"].to_numpy(np.int64), dd["d"].to_numpy(float)
    pos = pd.Index(members).get_indexer(st)
    order = np.argsort(pos, kind="stable")
    bounds = np.searchsorted(pos[order], np.arange(0, len(members) + size, size))
    for k in range(len(bounds) - 1):
        rows = order[bounds[k]:bounds[k + 1]]
        yield members[k * size:(k + 1) * size], Reach(st[rows], node[rows], d[rows])


def circle_pieces(net: Network, members: np.ndarray, dd: Reach) -> Chunk:
    """The reached pieces of every tier's circle of the stations ``members`` from the search's
    answer for them (station, node, d m): partial edges cut at the remaining budget."""
    reach = edge_reach(pd.DataFrame(dd._asdict()), net.source, net.target)
    iv = tier_intervals(reach, net.own[net.own["station"].isin(members)], net.length,
                        list(net.tiers))
    xy, piece = net.coords.substrings(iv["edge"].to_numpy(), iv["lo"].to_numpy(),
                                      iv["hi"].to_numpy())
    key = iv[["station", "tier"]].to_numpy()
    new = np.r_[True, (key[1:] != key[:-1]).any(axis=1)] if len(key) else np.zeros(0, bool)
    circle = np.cumsum(new) - 1
    first = np.nonzero(new)[0]
    return Chunk(xy, piece, circle, len(first), iv["station"].to_numpy()[first],
                 net.tiers[iv["tier"].to_numpy()[first]],
                 np.bincount(circle, minlength=len(first)))


def circle_seeds(net: Network, members: np.ndarray, dd: Reach) -> Chunk:
    """The reached pieces of every tier's circle of the stations ``members`` as sampled
    points (``geo.circles.seeds``): the same pieces as ``circle_pieces``, points at most a
    cell apart along them, circle k's points ``start[k]:start[k + 1]``. ``dd``'s rows come
    grouped by station in ``members`` order (``station_chunks``)."""
    es = net.samples
    assert es is not None
    first = np.nonzero(np.r_[True, dd.station[1:] != dd.station[:-1]])[0][:len(dd.station)]
    runs = np.diff(np.r_[first, len(dd.station)])
    pos = np.repeat(pd.Index(members).get_indexer(dd.station[first]), runs)  # in members
    k = np.minimum(np.searchsorted(es.nodes, dd.node), len(es.nodes) - 1)
    ok = (es.nodes[k] == dd.node) & (pos >= 0)
    row_off = np.r_[0, np.cumsum(np.bincount(pos[ok], minlength=len(members)))]
    at = np.searchsorted(net.own_station, members)  # own rows sorted by station
    oe, ofr, osn = net.own_edge[at], net.own_frac[at], net.own_snap[at]

    def c(a: np.ndarray, dtype: type = float) -> np.ndarray:  # the types ``seeds.warm`` loads
        return np.require(a, dtype, ["C", "W"])

    xy, corner, ppt, pcirc, cst, ctier, coff = reached_pieces(
        c(row_off, np.int64), c(k[ok], np.int64), c(dd.d[ok]), c(oe, np.int64), c(ofr),
        c(osn), es.su, es.sv, es.adj_off, es.adj, es.xy, es.s, es.vertex, es.off,
        c(net.tiers, float))
    return Chunk(xy, ppt, pcirc, len(cst), members[cst], net.tiers[ctier],
                 np.bincount(pcirc, minlength=len(cst)), coff, corner)


def station_csv(job: Job, members: np.ndarray,
                dd: Reach) -> tuple[str, int, dict[str, float]]:
    """``chunk_csv`` of the circles of stations ``members``, their pieces built here from the
    search's answer (in a worker: from the network it inherited)."""
    assert _NETWORK is not None, "set_network first"
    t0 = time.process_time()
    ch = (circle_pieces if job.method == "exact" else circle_seeds)(_NETWORK, members, dd)
    spent_pieces = time.process_time() - t0
    csv, count, spent = chunk_csv(job, ch)
    spent["pieces_s"] = spent_pieces
    spent["pieces"] = float(len(ch.circle))
    return csv, count, spent


def chunk_csv(job: Job, ch: Chunk) -> tuple[str, int, dict[str, float]]:
    """Polygons of one chunk of circles (raster contour or exact buffer, then the barrier
    cut), in EPSG:4326, as ``service_circle`` COPY rows; with the CPU seconds of each step."""
    clock = time.process_time
    t0 = clock()
    if job.method == "exact":
        lines = shapely.linestrings(ch.xy, indices=ch.piece)
        multi = shapely.multilinestrings(lines, indices=ch.circle)
        polys, spent = circle_polygons(multi, job.buffer_m, job.quad_segs, job.barrier)
    else:
        assert ch.start is not None
        polys = raster_polygons(ch.xy, ch.start, job.cell_m, job.buffer_m, job.cell_m / 5)
        t1 = clock()
        if job.barrier is not None:
            c = ch.corner if ch.corner is not None else slice(None)
            cut_barrier(polys, PieceIndex(ch.xy[c], ch.piece[c], ch.circle, ch.n).near,
                        job.barrier)
        spent = {"merge_s": 0.0, "buffer_s": t1 - t0, "cut_s": clock() - t1}
    t = clock()
    to_wgs = _to_wgs84(job.srid)
    polys = shapely.transform(polys, lambda p: np.column_stack(to_wgs.transform(*p.T)))
    ok = np.nonzero(~shapely.is_empty(polys))[0]
    wkb = _ewkb(_multi_polygons(polys[ok]))
    s, tm, pc = ch.station[ok], ch.tier[ok], ch.pieces[ok]
    csv = "".join(  # numbers and hex only: no quoting needed
        f"{job.run_id},{s[i]},{float(tm[i])!r},{float(tm[i]) / job.speed!r},{pc[i]},{wkb[i]}\n"
        for i in range(len(ok)))
    spent["store_s"] = clock() - t
    return csv, len(ok), spent


@functools.lru_cache(maxsize=4)
def _to_wgs84(srid: int) -> Transformer:
    """The run's CRS to EPSG:4326 (x = lon), made once per process (~ms each)."""
    return Transformer.from_crs(srid, 4326, always_xy=True)


@contextlib.contextmanager
def process_pool(workers: int, circles: int) -> Iterator[ProcessPoolExecutor | None]:
    """``workers`` processes (forked: they inherit the imports, the network and numba's
    loaded code, start in milliseconds) when there is more than one worker and at least
    ``POOL_MIN_CIRCLES`` circles; None: the caller draws the chunks itself. The raster and GEOS
    steps do not release the GIL, so threads would share one core. (The caller drawing chunks
    too, with ``workers - 1`` helpers, measured no better: its helper waits while it draws.)"""
    if workers <= 1 or circles < POOL_MIN_CIRCLES:
        yield None
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
