"""Connections and schema migration.

Domain functions take a SQLAlchemy ``Connection`` as their first argument; they never create
engines themselves. The schema changes only through Alembic (``migrations/``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection, CursorResult

from geo.core import embedded
from geo.core.settings import PROJECT_ROOT, DatabaseSettings

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


def resolve_read_url(settings: DatabaseSettings, *, start: bool = True) -> str:
    """The URL for read-only work: ``WANGGE_READ_DATABASE_URL`` if set, else the embedded
    standby when one runs (``wangge db start --standby``), else the primary's URL."""
    if settings.read_database_url:
        return settings.read_database_url
    if not settings.database_url:
        from geo.core.replica import standby_url

        url = standby_url(settings)
        if url:
            return url
    return resolve_url(settings, start=start)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine with pre-ping, so that a restarted server is reconnected transparently.

    ``hide_parameters``: a database error's text never carries the statement's values (they
    can hold a password hash or a resident's phone number, and error text reaches logs)."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,
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


_NAMED_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


class PreparedStatement:
    """A statement with ``:name`` parameters that the server plans once per connection.

    The first use on a connection sends ``PREPARE``; every use sends ``EXECUTE name(...)``, so
    the server skips parsing and planning (psycopg2 has no protocol-level prepare). Parameter
    types are inferred by PostgreSQL from where they are used. A prepared statement outlives a
    rollback and lasts as long as its connection; SQLAlchemy's ``Connection.info`` lives and
    dies with the same DBAPI connection, so it records which names each one holds.
    """

    def __init__(self, name: str, sql: str) -> None:
        self.name = name
        self.parameters: list[str] = list(dict.fromkeys(_NAMED_PARAMETER.findall(sql)))
        position = {p: i + 1 for i, p in enumerate(self.parameters)}
        self.prepare_sql = f"PREPARE {name} AS " + _NAMED_PARAMETER.sub(
            lambda m: f"${position[m.group(1)]}", sql)
        self.execute_sql = f"EXECUTE {name}(" + ", ".join(
            f"%({p})s" for p in self.parameters) + ")"

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> CursorResult[Any]:
        prepared: set[str] = conn.info.setdefault("prepared_statements", set())
        if self.name not in prepared:
            conn.exec_driver_sql(self.prepare_sql)
            prepared.add(self.name)
        return conn.exec_driver_sql(self.execute_sql, {p: params[p] for p in self.parameters})


def driver_connection(conn: Connection) -> Any:
    """The psycopg2 connection under ``conn`` (for ``COPY``), in the caller's transaction."""
    raw = conn.connection.driver_connection
    if raw is None:
        raise RuntimeError("the connection is closed")
    return raw
