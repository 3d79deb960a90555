"""Settings of the scale-out pieces (env prefix ``WANGGE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from geo.core.settings import WanggeSettings


class ScaleSettings(WanggeSettings):
    """Workers behind HAProxy, the lookup listener and the Dask scheduler."""

    lookup_listen: bool = Field(
        default=False,
        description="Each API process LISTENs for grid changes (NOTIFY wangge_lookup) and "
        "refreshes its lookup index at once. `wangge serve` and `wangge proxy` turn it on.",
    )
    haproxy_bin: Path = Field(default=Path("/usr/sbin/haproxy"),
                              description="HAProxy executable (Debian package haproxy).")
    health_interval_ms: int = Field(
        default=500, description="HAProxy checks GET /v1/ping on each worker this often (ms).")
    read_after_write_s: float = Field(
        default=2.0, ge=0, description="After a caller's write (POST, PUT, PATCH, DELETE) "
        "through this process, its read-only requests read the primary, not the standby, for "
        "this many seconds (read-your-writes while the standby replays); 0 turns it off.")
    restart_delay_s: float = Field(
        default=0.5, description="A dead worker is restarted after this many seconds.")
    dask_scheduler: str | None = Field(
        default=None, description="Dask scheduler address (tcp://host:8786) for "
        "`wangge coverage --dask`; unset: a LocalCluster of `--workers` processes.")
    dask_partition_buildings: int = Field(
        default=100_000, gt=0, description="Dask distances: a district of more buildings is "
        "cut into tiles of at most this many (each reads its halo of network: fewer, larger "
        "tiles read less in all, more tiles spread over more workers).")
