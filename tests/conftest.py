"""Fixtures: a real PostgreSQL + PostGIS + pgRouting, never a stand-in.

The embedded cluster (or ``WANGGE_DATABASE_URL``'s server) is started once. A migrated template
database is made once per session; each ``fresh_database`` is a cheap copy of it, dropped after.
``conn`` is a connection in a transaction that is rolled back after the test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection, make_url

from geo.core.db import make_engine, migrate, resolve_url
from geo.core.settings import DatabaseSettings


def _server_admin(url: str) -> Engine:
    return create_engine(
        make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT", future=True
    )


@pytest.fixture(scope="session")
def db_settings() -> DatabaseSettings:
    return DatabaseSettings()


@pytest.fixture(scope="session")
def server_url(db_settings: DatabaseSettings) -> str:
    """URL of the service database on the test server (the cluster is started if embedded)."""
    return resolve_url(db_settings)


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    """A migrated database that fresh test databases are copied from."""
    name = f"wangge_tmpl_{uuid.uuid4().hex[:10]}"
    admin = _server_admin(server_url)
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    migrate(make_url(server_url).set(database=name).render_as_string(hide_password=False))
    yield name
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def fresh_database(server_url: str, template_database: str) -> Iterator[Callable[[], str]]:
    """A factory: each call returns the URL of a new, migrated, empty database."""
    admin = _server_admin(server_url)
    made: list[str] = []

    def make() -> str:
        name = f"wangge_test_{uuid.uuid4().hex[:10]}"
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
        made.append(name)
        return make_url(server_url).set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as c:
        for name in made:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url(fresh_database: Callable[[], str]) -> str:
    """One migrated database shared by the session's tests (use ``conn`` to stay isolated)."""
    return fresh_database()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that is rolled back after the test."""
    with engine.connect() as connection:
        tx = connection.begin()
        try:
            yield connection
        finally:
            tx.rollback()


# Tests of other concerns call the API without credentials; the access policy itself is tested
# with enforcement on (tests/test_access.py passes AuthSettings(enforce_access=True)).
os.environ.setdefault("WANGGE_ENFORCE_ACCESS", "false")
