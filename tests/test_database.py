"""The embedded cluster and the schema's own rules."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from geo.core import embedded
from geo.core.db import schema_revision

SQUARE = "MULTIPOLYGON(((119.30 26.05,119.31 26.05,119.31 26.06,119.30 26.06,119.30 26.05)))"


def test_extensions_and_schema_are_installed(conn):
    exts = set(conn.execute(text("SELECT extname FROM pg_extension")).scalars())
    assert {"postgis", "pgrouting", "btree_gist"} <= exts
    assert schema_revision(conn) is not None
    srid = conn.execute(text("SELECT Find_SRID('public', 'area', 'geom')")).scalar()
    assert srid == 4326


def test_embedded_status_is_idempotent(db_settings, server_url):
    if db_settings.database_url:
        pytest.skip("external database")
    first = embedded.start(db_settings)
    again = embedded.start(db_settings)
    assert first.running and again.running and first.pid == again.pid


def _generation(conn) -> int:
    return conn.execute(text("INSERT INTO generation (kind) VALUES ('test') RETURNING id")).scalar()


def _insert_area(conn, level, code, parent, gen, **extra):
    conn.execute(
        text(
            "INSERT INTO area (level, code, parent_code, name, geom, generation_low,"
            " responsible_body, metric_srid)"
            " VALUES (:level, :code, :parent, 'x', ST_GeomFromText(:wkt, 4326), :gen, :body, :srid)"
        ),
        {"level": level, "code": code, "parent": parent, "wkt": extra.get("wkt", SQUARE),
         "gen": gen, "body": extra.get("body", "某社区居委会"), "srid": extra.get("srid", 32650)},
    )


@pytest.mark.parametrize(
    "level, code, parent, why",
    [
        ("district", "35010", None, "district code must have 6 digits"),
        ("street", "350104400", "350104", "street sequence above 399"),
        ("street", "350104000", "350104", "street sequence 000"),
        ("community", "350104001002", "350104002", "parent is not the code's prefix"),
        ("grid", "35010400100200A", "350104001002", "non-digit code"),
        ("grid", "350104001002000", "350104001002", "grid sequence 000"),
    ],
)
def test_code_rules_are_enforced_by_the_database(conn, level, code, parent, why):
    gen = _generation(conn)
    with pytest.raises(IntegrityError):
        with conn.begin_nested():
            _insert_area(conn, level, code, parent, gen)


def test_grid_must_name_its_responsible_body(conn):
    gen = _generation(conn)
    with pytest.raises(IntegrityError):
        with conn.begin_nested():
            _insert_area(conn, "grid", "350104001002003", "350104001002", gen, body=None)


def test_street_type_follows_the_code_range(conn):
    gen = _generation(conn)
    for code in ("350104001", "350104150", "350104250"):
        _insert_area(conn, "street", code, "350104", gen)
    rows = dict(conn.execute(text("SELECT code, street_type FROM area")).all())
    assert rows == {"350104001": "street", "350104150": "town", "350104250": "township"}


def test_one_version_of_a_code_per_generation(conn):
    g1 = _generation(conn)
    _insert_area(conn, "district", "350104", None, g1)
    with pytest.raises(IntegrityError):
        with conn.begin_nested():
            _insert_area(conn, "district", "350104", None, g1)
    # A new version in a later generation is fine once the old one is closed.
    g2 = _generation(conn)
    conn.execute(text("UPDATE area SET generation_high = :g WHERE code = '350104'"), {"g": g1})
    _insert_area(conn, "district", "350104", None, g2)
    assert conn.execute(text("SELECT count(*) FROM area WHERE code='350104'")).scalar() == 2


def test_invalid_geometry_is_refused(conn):
    gen = _generation(conn)
    bowtie = "MULTIPOLYGON(((119.30 26.05,119.31 26.06,119.31 26.05,119.30 26.06,119.30 26.05)))"
    with pytest.raises(IntegrityError):
        with conn.begin_nested():
            _insert_area(conn, "district", "350104", None, gen, wkt=bowtie)


def test_cli_start_stop_cycle_is_idempotent_and_leaves_no_process(tmp_path, db_settings):
    """A private cluster in a temporary state dir: start twice, stop twice, nothing left."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if db_settings.database_url:
        pytest.skip("external database")
    state = tmp_path / "state"
    if os.geteuid() == 0:  # the postgres user must be able to reach the state dir
        state = Path("/tmp") / f"wangge-cli-test-{os.getpid()}"
    env = {**os.environ, "WANGGE_STATE_DIR": str(state)}
    wangge = [sys.executable, "-m", "cli"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*wangge, *args], env=env, capture_output=True, text=True,
                              timeout=120)

    try:
        assert run("db", "status").returncode == 3
        first, second = run("db", "start"), run("db", "start")
        assert first.returncode == 0 and second.returncode == 0, first.stderr
        assert first.stdout == second.stdout  # same pid and port: the second start did nothing
        pid = int(first.stdout.split("pid ")[1].split("，")[0])
        assert run("db", "url").stdout.strip().endswith("/wangge")
        assert run("db", "stop").returncode == 0 and run("db", "stop").returncode == 0
        assert run("db", "status").returncode == 3
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        leftovers = subprocess.run(["pgrep", "-f", f"-D {state}/pgdata"], capture_output=True)
        assert leftovers.stdout == b""
    finally:
        run("db", "stop")
        shutil.rmtree(state, ignore_errors=True)


def test_prepared_statement_is_planned_once_per_connection(fresh_database):
    from geo.core.db import PreparedStatement, make_engine

    stmt = PreparedStatement(
        "wangge_test_stmt",
        "SELECT CAST(:a AS int) + CAST(:b AS int) AS s, CAST(:a AS int)::text AS a_text,"
        " ':' || 'x' AS colon")
    assert stmt.parameters == ["a", "b"]  # a repeated name is one parameter; `::` is no name
    assert "$1" in stmt.prepare_sql and "$2" in stmt.prepare_sql and "$3" not in stmt.prepare_sql
    eng = make_engine(fresh_database(), pool_size=1)

    def prepared_here(conn) -> int:
        return conn.execute(text("SELECT count(*) FROM pg_prepared_statements"
                                 " WHERE name = 'wangge_test_stmt'")).scalar()

    with eng.connect() as conn:
        row = stmt.execute(conn, {"a": 2, "b": 40, "unused": 1}).one()
        assert (row.s, row.a_text, row.colon) == (42, "2", ":x")
        conn.rollback()  # a prepared statement outlives the transaction
        assert prepared_here(conn) == 1
        assert stmt.execute(conn, {"a": 1, "b": 1}).scalar() == 2
    with eng.connect() as conn:  # the same pooled connection: not prepared again
        assert stmt.execute(conn, {"a": 5, "b": 5}).scalar() == 10
        conn.invalidate()  # a new server session must prepare it anew
    with eng.connect() as conn:
        assert prepared_here(conn) == 0
        assert stmt.execute(conn, {"a": 3, "b": 4}).scalar() == 7
        assert prepared_here(conn) == 1
    eng.dispose()
