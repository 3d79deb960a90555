"""Settings, read from the environment under the ``WANGGE_`` prefix (pydantic-settings).

One class per concern. Build them where the program starts and pass them in; nothing here is
instantiated at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class WanggeSettings(BaseSettings):
    """Base of every settings class: environment variables prefixed WANGGE_."""

    model_config = SettingsConfigDict(env_prefix="WANGGE_", extra="ignore")


class DatabaseSettings(WanggeSettings):
    """Where the database is: an external PostgreSQL + PostGIS, or the embedded cluster."""

    database_url: str | None = Field(
        default=None,
        description="External PostgreSQL+PostGIS+pgRouting URL. Unset: use the embedded cluster.",
    )
    state_dir: Path = Field(
        default=PROJECT_ROOT / ".wangge",
        description="Directory that holds the embedded cluster (data, socket, log).",
    )
    db_port: int = Field(
        default=0, description="Port of the embedded cluster; 0 picks a free one on first start."
    )
    db_name: str = Field(default="wangge", description="Database name inside the embedded cluster.")
    pg_bin_dir: Path | None = Field(
        default=None,
        description="initdb/pg_ctl directory. Unset: newest /usr/lib/postgresql/*/bin.",
    )
    pool_size: int = Field(default=10, description="SQLAlchemy connection pool size.")
    read_database_url: str | None = Field(
        default=None,
        description="A hot standby for read-only work (index builds, maps, statistics, OGC "
        "reads). Unset: the embedded standby if one runs, else the primary.",
    )


class DataSettings(WanggeSettings):
    """Validation rules applied to every import."""

    households_min: int = Field(default=150, description="Balance rule: fewest households a grid.")
    households_max: int = Field(default=500, description="Balance rule: most households a grid.")
    overlap_tolerance_m2: float = Field(
        default=1.0, description="Sibling grids may overlap by at most this many m²."
    )
    gap_tolerance_m2: float = Field(
        default=1.0, description="A community's grids may leave at most this many m² uncovered."
    )
    max_import_features: int = Field(
        default=2_000_000, description="Largest number of features one import may hold."
    )
    containment_tolerance_m2: float = Field(
        default=1.0,
        description="An area (grid, community, street) may stick out of its parent by at most "
        "this many m².",
    )
    sliver_width_m: float = Field(
        default=0.5, ge=0,
        description="Parts sticking out of a parent or overlapping a sibling that are thinner "
        "than this many metres are slivers (a community digitised separately from its street) "
        "and not counted against the m² tolerances; 0 turns it off.",
    )
    district_tolerance_m: float = Field(
        default=1.0,
        description="Features may lie at most this many metres outside the district boundary.",
    )
    demo_grids_per_community: int = Field(
        default=5, description="Demo (OpenStreetMap) district: grids per community."
    )
    demo_communities_per_street: int = Field(
        default=3, description="Demo district: communities per street."
    )
    demo_households_per_grid: int = Field(
        default=300, description="Demo district: target households per grid (balance target)."
    )


class ApiSettings(WanggeSettings):
    """The HTTP service."""

    host: str = Field(default="127.0.0.1", description="Address uvicorn binds.")
    port: int = Field(default=8000, description="Port uvicorn binds.")
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, description="Largest request body accepted (bytes)."
    )
    log_level: str = Field(default="info", description="Log level: debug, info, warning, error.")
    open311_jurisdiction: str = Field(
        default="wangge", description="Open311 jurisdiction_id this service answers for; a "
        "request naming another is a 404.")
    open311_contact: str = Field(
        default="网格化服务管理中心 Grid management centre",
        description="Open311 discovery: who to contact about the endpoint.")
    open311_cors_origins: list[str] = Field(
        default=["*"], description="Origins whose browser clients may call the Open311 paths "
        "(CORS; no cookies are used, the api_key travels in the form).")
