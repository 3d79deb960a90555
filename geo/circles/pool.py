"""Polygons of chunks of circles in forked worker processes (raster contour or exact buffer,
then the barrier cut), as ``service_circle`` COPY rows. Metres in the run's metric CRS in,
EPSG:4326 out. ``geo.circles.build`` hands chunks to ``process_pool(...).map(chunk_csv, ...)``.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer

from geo.circles.geometry import circle_polygons, cut_barrier
from geo.circles.raster import raster_polygons
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


def chunk_csv(job: Job, ch: Chunk) -> tuple[str, int, dict[str, float]]:
    """Polygons of one chunk of circles (raster contour or exact buffer, then the barrier
    cut), in EPSG:4326, as ``service_circle`` COPY rows; with the CPU seconds of each step."""
    clock = time.process_time
    t0 = clock()
    lines = shapely.linestrings(ch.xy, indices=ch.piece)
    multi = shapely.multilinestrings(lines, indices=ch.circle)
    if job.method == "exact":
        polys, spent = circle_polygons(multi, job.buffer_m, job.quad_segs, job.barrier)
    else:
        polys = raster_polygons(ch.xy, ch.piece, ch.circle, ch.n, job.cell_m, job.buffer_m)
        polys = shapely.simplify(polys, job.cell_m / 5)
        t1 = clock()
        if job.barrier is not None:
            cut_barrier(polys, multi, job.barrier)
        spent = {"merge_s": 0.0, "buffer_s": t1 - t0, "cut_s": clock() - t1}
    t = clock()
    to_wgs = Transformer.from_crs(job.srid, 4326, always_xy=True)
    polys = shapely.transform(polys, lambda p: np.column_stack(to_wgs.transform(*p.T)))
    ok = np.nonzero(~shapely.is_empty(polys))[0]
    wkb = _ewkb(_multi_polygons(polys[ok]))
    s, tm, pc = ch.station[ok], ch.tier[ok], ch.pieces[ok]
    csv = "".join(  # numbers and hex only: no quoting needed
        f"{job.run_id},{s[i]},{float(tm[i])!r},{float(tm[i]) / job.speed!r},{pc[i]},{wkb[i]}\n"
        for i in range(len(ok)))
    spent["store_s"] = clock() - t
    return csv, len(ok), spent


class _Serial:
    """``pool.map`` in this process (one worker, or one chunk: no process worth forking)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Any, *its: Any) -> Any:
        return map(fn, *its)


def process_pool(workers: int, jobs: int, circles: int) -> Any:
    """Worker processes (forked: they inherit the imports, start in milliseconds) when there is
    more than one worker and chunk and at least ``POOL_MIN_CIRCLES`` circles; the raster and
    GEOS steps do not release the GIL, so threads would share one core."""
    if workers <= 1 or jobs <= 1 or circles < POOL_MIN_CIRCLES:
        return _Serial()
    return ProcessPoolExecutor(min(workers, jobs), mp_context=multiprocessing.get_context("fork"))
