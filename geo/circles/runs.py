"""Settings and run bookkeeping shared by circles, coverage and siting.

Every analysis is an ``analysis_run`` row: its kind, parameters, the generation it read, start
and finish times and status. Results are read back by run id.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
from pydantic import Field
from sqlalchemy import text
from sqlalchemy.engine import Connection

from geo.core.errors import InvalidInput, NotFound, Problem
from geo.core.settings import WanggeSettings


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
        default=2, description="Threads that buffer and cut circles and join coverage (1: one)."
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
        default=None, description="Clip circles to the station's 'community' or 'street', or not."
    )
    coverage_tier_m: float = Field(
        default=300.0, description="Tier (m) whose circles define coverage (5-minute circle)."
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


def metric_srid(conn: Connection) -> int:
    """The district's metric SRID, or the UTM zone of the stations' centre when none is stored."""
    srid = conn.execute(
        text("SELECT metric_srid FROM area_current WHERE level = 'district' ORDER BY code LIMIT 1")
    ).scalar()
    if srid:
        return int(srid)
    lon = conn.execute(
        text(
            "SELECT ST_X(ST_Centroid(ST_Extent(geom))::geometry) FROM ("
            " SELECT geom FROM walk_edge UNION ALL SELECT location FROM station) g"
        )
    ).scalar()
    if lon is None:
        raise InvalidInput("no walk network", [Problem("walk_edge is empty", field="walk_edge")])
    return 32600 + int((float(lon) + 180) // 6) + 1


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


def finish_run(conn: Connection, run_id: int, summary: dict[str, Any]) -> None:
    conn.execute(
        text(
            "UPDATE analysis_run SET status = 'done', finished_at = clock_timestamp(), "
            "summary = CAST(:s AS jsonb) WHERE id = :id"
        ),
        {"s": json.dumps(summary), "id": run_id},
    )


def get_run(conn: Connection, run_id: int, kind: str | None = None) -> dict[str, Any]:
    """One run as a dict; NotFound if absent (or of another kind)."""
    row = conn.execute(
        text(
            "SELECT id, kind, params, generation_id, source_run_id, started_at, finished_at, "
            "status, summary FROM analysis_run WHERE id = :id"
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
            "status, summary FROM analysis_run WHERE (CAST(:k AS text) IS NULL OR kind = :k) "
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


def latest_run(conn: Connection, kind: str) -> int:
    rid = conn.execute(
        text("SELECT max(id) FROM analysis_run WHERE kind = :k AND status = 'done'"), {"k": kind}
    ).scalar()
    if rid is None:
        raise NotFound(f"no finished {kind} run yet: run `wangge {kind}` first")
    return int(rid)


def read_copy(conn: Connection, query: str, columns: list[str]) -> pd.DataFrame:
    """Rows of ``query`` (no bind parameters) as a DataFrame, through ``COPY ... TO STDOUT``
    in the caller's transaction (so temp tables are visible): ~10x faster than fetching rows."""
    buf = io.StringIO()
    with conn.connection.driver_connection.cursor() as cur:
        cur.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", buf)
    if buf.tell() == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    buf.seek(0)
    return pd.read_csv(buf, header=None, names=columns)
