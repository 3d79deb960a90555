"""Fixtures: a real PostgreSQL + PostGIS + pgRouting, never a stand-in.

The embedded cluster (or ``WANGGE_DATABASE_URL``'s server) is started once. A migrated template
database is made once per session; each ``fresh_database`` is a cheap copy of it, dropped after.
``conn`` is a connection in a transaction that is rolled back after the test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from factories import (
    CASES,
    PLANNING_AUTH,
    SCOPED_AREA_SQL,
    SCOPING_AUTH,
    USERS,
    WARN,
    S,
    World,
    bearer_headers,
    locator,
)
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


# ---------------------------------------------------------------- shared worlds (factories.py)

@pytest.fixture(scope="module")
def city_template(fresh_database):
    """The synthetic planning city (factories.py), written once per module; its users."""
    from geo.auth.service import create_user
    from geo.data.store import write_layers
    from geo.samples.synth import generate_city

    url = fresh_database()
    eng = make_engine(url)
    with eng.begin() as c:
        write_layers(c, generate_city(grids=24, buildings=24 * 30, stations=4, seed=5,
                                      team=False), kind="synth")
        for name, role, area in (("planner_in", "planner", S),
                                 ("planner_out", "planner", "350104002"),
                                 ("admin", "admin", None)):
            create_user(c, name, f"{name}-password", role, area_code=area, settings=PLANNING_AUTH)
    eng.dispose()
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    yield url, admin
    admin.dispose()


@pytest.fixture
def api(city_template):
    """(client, engine, headers by user) on a private copy of the city."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    url, admin = city_template
    name = f"wangge_plan_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(url).database}"'))
    eng = make_engine(make_url(url).set(database=name).render_as_string(hide_password=False))
    app = create_app(engine=eng, auth_settings=PLANNING_AUTH)
    app.state.planning_settings = WARN
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, eng, bearer_headers(client, ("planner_in", "planner_out", "admin"))
    eng.dispose()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def scoped_world(fresh_database: Any) -> Iterator[World]:
    """The scoped district (tests/factories.py) with its users signed in and its four cases
    filed, all overdue; access enforced."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from geo.auth.service import create_user

    eng = make_engine(fresh_database(), pool_size=4)
    user_ids = {}
    with eng.begin() as c:
        c.exec_driver_sql(SCOPED_AREA_SQL)
        deps = dict(c.execute(text("SELECT code, id FROM department")).all())
        for name, (role, area, dep) in USERS.items():
            user_ids[name] = create_user(c, name, f"{name}-password", role, area_code=area,
                                         department_id=deps.get(dep), settings=SCOPING_AUTH)
    app = create_app(engine=eng, auth_settings=SCOPING_AUTH)
    app.state.incident_locator = locator
    with TestClient(app, raise_server_exceptions=False) as client:
        w = World(client, eng, bearer_headers(client, USERS), {}, user_ids)
        for letter, cat, lon, lat, who in CASES:
            r = w.post(who, "/v1/incidents", {"category": cat, "lon": lon, "lat": lat})
            assert r.status_code == 201, r.text
            w.ids[letter] = r.json()["id"]
        with eng.begin() as c:  # all four overdue (red), for the overdue lists
            c.execute(text("UPDATE incident SET amber_at = now() - interval '2 hours',"
                           " resolve_due = now() - interval '1 hour' WHERE id = ANY(:i)"),
                      {"i": list(w.ids.values())})
        yield w
    eng.dispose()


# Tests of other concerns call the API without credentials; the access policy itself is tested
# with enforcement on (tests/test_access.py passes AuthSettings(enforce_access=True)).
os.environ.setdefault("WANGGE_ENFORCE_ACCESS", "false")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright (headless; skipped where it is not installed)."""
    from browsers import CHROME_ARGS, CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        yield b
        b.close()
