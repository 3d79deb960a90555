"""Connections and schema migration.

Domain functions take a SQLAlchemy ``Connection`` as their first argument; they never create
engines themselves. The schema changes only through Alembic (``migrations/``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection

from geo import embedded
from geo.settings import PROJECT_ROOT, DatabaseSettings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def resolve_url(settings: DatabaseSettings, *, start: bool = True) -> str:
    """The database URL: ``WANGGE_DATABASE_URL`` if set, else the embedded cluster's.

    With ``start`` the embedded cluster is started (idempotent) when it is the one used.
    """
    if settings.database_url:
        return settings.database_url
    if start:
        embedded.start(settings)
    return embedded.url(settings)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine with pre-ping, so that a restarted server is reconnected transparently."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        future=True,
    )


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` up to ``revision`` with Alembic."""
    log.info("migrating schema to %s", revision)
    command.upgrade(alembic_config(url), revision)


def schema_revision(conn: Connection) -> str | None:
    """The Alembic revision the database is at, or None before the first migration."""
    exists = conn.execute(text("SELECT to_regclass('public.alembic_version')")).scalar()
    if not exists:
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction: committed if the block finishes, rolled back if it raises."""
    with engine.begin() as conn:
        yield conn
