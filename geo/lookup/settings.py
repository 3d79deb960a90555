"""Settings of the point-lookup index and its HTTP endpoints."""

from __future__ import annotations

from pydantic import Field

from geo.core.settings import WanggeSettings


class LookupSettings(WanggeSettings):
    """The point-lookup index and its HTTP endpoints."""

    cells_per_grid: int = Field(
        default=1600,
        description="Target lattice cells per grid (more: fewer tree queries, more RAM).",
    )
    max_cells: int = Field(
        default=32_000_000, description="Most lattice cells per index (a city: all its districts"
        " together, 4 bytes a cell, twice).")
    check_interval_ms: int = Field(
        default=500, description="HTTP: check for a new generation at most this often (ms)."
    )
    max_batch_points: int = Field(
        default=1_000_000, description="Most points one POST /v1/lookup/batch may hold (else 413)."
    )
    stream_threshold: int = Field(
        default=10_000, description="Batches with more points than this are streamed back."
    )
    cached_generations: int = Field(
        default=4, description="Dated (at=) indexes kept in memory per database."
    )
    incremental_max_grids: int = Field(
        default=500, description="A new generation changing at most this many grids (added, "
        "removed or reshaped) patches the lattice around them instead of rebuilding it."
    )
