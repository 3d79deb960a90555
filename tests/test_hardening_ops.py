"""Hardening (issue 15, item 15): state directory, access log, CLI migrations, Open311 errors."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.main import create_app
from api.security import RedactingFilter
from geo.auth.service import AuthSettings, create_api_key
from geo.core import embedded
from geo.core.db import make_engine
from geo.core.errors import DatabaseUnavailable
from geo.core.settings import DatabaseSettings

AUTH = AuthSettings(jwt_secret="hardening-ops-" + "x" * 32, enforce_access=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the cluster runs as postgres only under root")
def test_a_state_dir_postgres_cannot_enter_is_named_in_a_clear_message():
    """Today: initdb's traceback (CalledProcessError) instead of which directory and why."""
    locked = Path(tempfile.mkdtemp(prefix="wangge-locked-"))  # mode 0700, owned by root
    try:
        with pytest.raises(DatabaseUnavailable) as err:
            embedded.start(DatabaseSettings(state_dir=locked / "state"))
        assert str(locked) in err.value.message and "cannot enter" in err.value.message
    finally:
        import shutil

        shutil.rmtree(locked, ignore_errors=True)


def test_api_key_in_the_query_does_not_break_the_access_log():
    """Today: the redacting filter collapsed record.args and uvicorn's access formatter raised
    'not enough values to unpack' on every request carrying ?api_key=."""
    from uvicorn.logging import AccessFormatter

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/lookup?lon=1&lat=2&api_key=wg_secretsecretsecretsecret",
         "1.1", 200), None)
    assert RedactingFilter().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s',
                           use_colors=False).format(record)
    assert "api_key=[redacted]" in line and "wg_secret" not in line and "200" in line


def test_a_mistyped_state_dir_is_refused_by_read_commands(tmp_path, monkeypatch):
    """Today: `wangge incident list` with a mistyped WANGGE_STATE_DIR silently made and
    started a new, empty cluster there."""
    from cli.main import app

    typo = tmp_path / "wangeg"
    monkeypatch.delenv("WANGGE_DATABASE_URL", raising=False)
    monkeypatch.setenv("WANGGE_STATE_DIR", str(typo))
    r = CliRunner().invoke(app, ["incident", "list"])
    assert r.exit_code == 2, r.output
    assert str(typo) in r.output and "wangge db start" in r.output
    assert not (typo / "pgdata").exists()


def test_cli_commands_migrate_only_when_needed_and_quietly(fresh_database, monkeypatch, caplog):
    """Today: every command ran Alembic's upgrade and printed its three INFO lines."""
    from cli.main import app

    monkeypatch.setenv("WANGGE_DATABASE_URL", fresh_database())
    with caplog.at_level(logging.INFO):
        r = CliRunner().invoke(app, ["user", "list"])
    assert r.exit_code == 0, r.output
    assert [rec.getMessage() for rec in caplog.records
            if rec.name.startswith("alembic") or "migrating" in rec.getMessage()] == []


@pytest.fixture
def open311(fresh_database):
    eng = make_engine(fresh_database(), pool_size=4)
    with eng.begin() as c:
        key = create_api_key(c, "slow", scopes=("open311",), rate_per_minute=1)
    with TestClient(create_app(engine=eng, auth_settings=AUTH),
                    raise_server_exceptions=False) as client:
        yield client, key
    eng.dispose()


def _georeport(r, status: int) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body, list) and body, body
    assert all(set(e) == {"code", "description"} and e["code"] == status for e in body)


def test_open311_401_and_429_are_in_the_georeport_error_format(open311):
    """Today: {"error": ..., "detail": ...} from the access policy and the rate limiter. A
    missing api_key is GeoReport v2's 403 ("api_key was not provided or is invalid")."""
    client, key = open311
    _georeport(client.post("/open311/v2/requests.json", data={"service_code": "rubbish"}), 403)
    client.get("/open311/v2/services.json", params={"api_key": key})
    _georeport(client.post("/open311/v2/requests.json",
                           data={"api_key": key, "service_code": "rubbish", "lat": "26.05",
                                 "long": "119.3"}), 429)


def test_open311_503_is_in_the_georeport_error_format(open311):
    """The database away: the answer is 503 in GeoReport form."""
    client, _ = open311
    dead = make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/nothing", pool_size=1)
    live = client.app.state.engine
    client.app.state.engine = dead
    try:
        r = client.get("/open311/v2/services.json")
    finally:
        client.app.state.engine = live
        dead.dispose()
    _georeport(r, 503)
    assert r.headers["retry-after"]
