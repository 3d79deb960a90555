"""Settings and run bookkeeping shared by circles, coverage and siting.

Every analysis is an ``analysis_run`` row: its kind, parameters, the generation it read, start
and finish times and status. Results are read back by run id.
"""

from __future__ import annotations

import io
import json
from typing import Any, Literal, overload

import pandas as pd
from pydantic import Field
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.db import driver_connection
from geo.core.errors import InvalidInput, NotFound, Problem
from geo.core.settings import WanggeSettings
from geo.data.crs import district_metric_srid, utm_epsg


class CircleSettings(WanggeSettings):
    """Walking service circles (GB 50180-2018 life circles) and their coverage and siting."""

    circle_tiers_m: list[float] = Field(
        default=[300.0, 500.0, 1000.0],
        description="Tiers as network walking distances in metres (GB 50180: 5/10/15 minutes).",
    )
    walking_speed_m_per_min: float = Field(
        default=60.0, description="Walking speed (m/min) used to label tiers in minutes."
    )
    circle_buffer_m: float = Field(
        default=30.0, description="Half-width (m) of the band drawn around reached street pieces."
    )
    circle_quad_segs: int = Field(
        default=2, description="Segments per quarter circle in the buffer (fewer is faster)."
    )
    circle_parallel_workers: int = Field(
        default=2, description="Processes that draw and cut circles (threads for the coverage "
        "join); 1: all in the calling process."
    )
    circle_search: Literal["scipy", "pgrouting"] = Field(
        default="scipy", description="Network search of the circles: scipy Dijkstra in memory "
        "(one virtual node per snapped station) or pgRouting's pgr_withPointsDD per batch."
    )
    circle_polygon_method: Literal["raster", "exact"] = Field(
        default="raster", description="raster: contour of the distance to the reached streets "
        "on a grid (fast); exact: shapely buffer of the reached pieces (slow, the reference)."
    )
    circle_raster_cell_m: float = Field(
        default=5.0, gt=0, le=50, description="Cell size (m) of the raster method's grid."
    )
    circle_snap_max_m: float = Field(
        default=300.0, description="Stations farther than this (m) from any walk edge are skipped."
    )
    circle_batch_cell_m: float = Field(
        default=1500.0,
        description="Stations are batched by square cells of this size (m); one pgRouting call "
        "per batch, on the edges inside the batch's box expanded by the largest tier.",
    )
    circle_barrier_kinds: list[str] = Field(
        default=["river", "railway", "arterial"],
        description="Barrier kinds the polygon may not jump (parts beyond them with no reached "
        "street are cut off); walk edges crossing them count only if crossing/bridge/tunnel.",
    )
    circle_clip: str | None = Field(
        default=None, description="Clip circles to the station's 'community', 'street' or "
        "'district', or not (the whole walking network, across district borders)."
    )
    coverage_tier_m: float = Field(
        default=300.0, description="Tier (m) whose circles define coverage (5-minute circle)."
    )
    coverage_method: Literal["distance", "circles"] = Field(
        default="distance", description="distance: walking distance from every building to "
        "the nearest station of every kind (no polygon needed); circles: building points in "
        "the stored circles of a circles run."
    )
    distance_limit_m: float = Field(
        default=2000.0, gt=0, le=20000,
        description="Network searches for per-building distances stop here (m); farther is "
        "stored as NULL (none within reach).",
    )
    life_circle_m: dict[str, float] = Field(
        default={"5": 300.0, "10": 500.0, "15": 1000.0},
        description="Life-circle tiers: minutes -> walking distance (m), GB 50180-2018.",
    )
    life_circle_kinds: dict[str, list[str]] = Field(
        default={
            "5": ["party_service_station", "elder_canteen", "elderly_daycare", "health_station"],
            "10": ["social_work_station"],
            "15": ["party_service_center"],
        },
        description="Station kinds each life-circle tier requires (GB 50180-2018 appendix B "
        "mapped onto wangge kinds: 5 min 社区服务站/社区食堂/老年人日间照料中心/社区卫生服务站; "
        "10 min 社工站; 15 min 街道级党群(社区)服务中心).",
    )
    life_circle_gap_share: float = Field(
        default=0.5, ge=0, le=1,
        description="A community lacks a kind at a tier when fewer than this share of its "
        "residents reach one within the tier's distance.",
    )
    kind_targets: dict[str, dict[str, float]] = Field(
        default={"social_work_station": {"community": 0.7, "street": 1.0}},
        description="Field targets: share of communities/streets that must hold each kind.",
    )
    siting_max_candidates: int = Field(
        default=400, description="Most candidate sites (network nodes) offered to the MCLP."
    )
    siting_candidate_cell_m: float = Field(
        default=100.0, description="Candidates are thinned to the heaviest node per cell (m)."
    )


def metric_srid(conn: Connection, station_ids: list[int] | None = None) -> int:
    """The metric SRID of the district holding most of the stations (``station_ids``, else
    all): a city's districts may lie in different UTM zones. Else the first district's, else
    the UTM zone of the walk network's and stations' centre when no district stores one."""
    srid = conn.execute(text(
        "SELECT d.metric_srid FROM station s JOIN area_current d ON d.level = 'district' "
        "AND d.code = s.district_code WHERE d.metric_srid IS NOT NULL "
        "AND (CAST(:ids AS bigint[]) IS NULL OR s.id = ANY(CAST(:ids AS bigint[]))) "
        "GROUP BY d.metric_srid ORDER BY count(*) DESC, d.metric_srid LIMIT 1"),
        {"ids": list(station_ids) if station_ids else None}).scalar()
    if srid is not None:
        return int(srid)
    try:
        return district_metric_srid(conn)
    except NotFound:
        pass
    centre = conn.execute(
        text(
            "SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Centroid(ST_Extent(geom)::geometry) AS c"
            " FROM (SELECT geom FROM walk_edge UNION ALL SELECT location FROM station) g) e"
        )
    ).first()
    if centre is None or centre[0] is None:
        raise InvalidInput("no walk network", [Problem("walk_edge is empty", field="walk_edge")])
    return utm_epsg(float(centre[0]), float(centre[1]))


def start_run(
    conn: Connection, kind: str, params: dict[str, Any], source_run_id: int | None = None
) -> int:
    """Insert a running ``analysis_run`` and return its id."""
    return int(
        conn.execute(
            text(
                "INSERT INTO analysis_run (kind, params, generation_id, source_run_id) "
                "VALUES (:k, CAST(:p AS jsonb), (SELECT max(id) FROM generation), :s) "
                "RETURNING id"
            ),
            {"k": kind, "p": json.dumps(params), "s": source_run_id},
        ).scalar_one()
    )


def claim_run(
    conn: Connection, run_id: int | None, kind: str, params: dict[str, Any],
    source_run_id: int | None = None,
) -> int:
    """The run to fill: a new running row, or the queued run ``run_id`` (untouched until
    ``finish_run``, so that the runner can report progress on it from another connection)."""
    if run_id is None:
        return start_run(conn, kind, params, source_run_id)
    return run_id


def finish_run(
    conn: Connection, run_id: int, summary: dict[str, Any],
    params: dict[str, Any] | None = None, source_run_id: int | None = None,
) -> None:
    """Mark the run done with its summary; ``params`` (what the computation resolved, e.g.
    the default tier) are merged into the stored ones."""
    conn.execute(
        text(
            "UPDATE analysis_run SET status = 'done', finished_at = clock_timestamp(), "
            "progress = 1, summary = CAST(:s AS jsonb), params = params || CAST(:p AS jsonb), "
            "source_run_id = coalesce(:src, source_run_id), "
            "generation_id = coalesce(generation_id, (SELECT max(id) FROM generation)) "
            "WHERE id = :id"
        ),
        {"s": json.dumps(summary), "p": json.dumps(params or {}), "src": source_run_id,
         "id": run_id},
    )


def get_run(conn: Connection, run_id: int, kind: str | None = None) -> dict[str, Any]:
    """One run as a dict; NotFound if absent (or of another kind)."""
    row = conn.execute(
        text(
            "SELECT id, kind, params, generation_id, source_run_id, started_at, finished_at, "
            "status, progress, requested_by, summary FROM analysis_run WHERE id = :id"
        ),
        {"id": run_id},
    ).mappings().first()
    if row is None or (kind and row["kind"] != kind):
        raise NotFound(f"no {kind or 'analysis'} run {run_id}")
    return dict(row)


def list_runs(conn: Connection, kind: str | None = None, limit: int = 100,
              offset: int = 0) -> list[dict[str, Any]]:
    """Runs (of ``kind``, or all), newest first; ``offset`` runs skipped (paging)."""
    rows = conn.execute(
        text(
            "SELECT id, kind, params, generation_id, source_run_id, started_at, finished_at, "
            "status, progress, requested_by, summary FROM analysis_run "
            "WHERE (CAST(:k AS text) IS NULL OR kind = :k) "
            "ORDER BY id DESC LIMIT :n OFFSET :o"
        ),
        {"k": kind, "n": limit, "o": offset},
    ).mappings()
    return [dict(r) for r in rows]


def count_runs(conn: Connection, kind: str | None = None) -> int:
    """How many runs (of ``kind``, or all) ``list_runs`` pages through."""
    return int(conn.execute(
        text("SELECT count(*) FROM analysis_run WHERE (CAST(:k AS text) IS NULL OR kind = :k)"),
        {"k": kind}).scalar_one())


@overload
def latest_run(conn: Connection, kind: str, *, missing_ok: Literal[False] = False) -> int: ...
@overload
def latest_run(conn: Connection, kind: str, *, missing_ok: Literal[True]) -> int | None: ...
def latest_run(conn: Connection, kind: str, *, missing_ok: bool = False) -> int | None:
    """Id of the newest finished analysis run of ``kind`` (circles|coverage|siting).

    When there is none: ``NotFound`` (naming the command that makes one), or None with
    ``missing_ok``.
    """
    rid = conn.execute(
        text("SELECT max(id) FROM analysis_run WHERE kind = :k AND status = 'done'"), {"k": kind}
    ).scalar()
    if rid is None:
        if missing_ok:
            return None
        raise NotFound(f"no finished {kind} run yet: run `wangge {kind}` first")
    return int(rid)


def read_copy(conn: Connection, query: str, columns: list[str],
              params: dict[str, Any] | None = None) -> pd.DataFrame:
    """Rows of ``query`` as a DataFrame, through ``COPY ... TO STDOUT`` in the caller's
    transaction (so temp tables are visible): ~10x faster than fetching rows. ``params``: the
    values of its ``:name`` bind parameters (bound by the driver, as ``execute`` does)."""
    buf = io.StringIO()
    with driver_connection(conn).cursor() as cur:
        if params is not None:
            query = cur.mogrify(str(text(query).compile(dialect=conn.dialect)),
                                params).decode()
        cur.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", buf)
    if buf.tell() == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    buf.seek(0)
    return pd.read_csv(buf, header=None, names=columns)
