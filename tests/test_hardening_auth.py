"""Hardening (issue 15, items 7 and 8): sign-in, accounts, keys, shared secret and rate limits.

Over HTTP (TestClient, the whole ASGI app with its lifespan) on a real database, with the
access policy enforced.
"""

from __future__ import annotations

import os
import stat

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from typer.testing import CliRunner

from api.main import create_app
from geo.auth import service
from geo.auth.service import AuthSettings, create_user
from geo.core.db import make_engine
from geo.core.settings import DatabaseSettings

SECRET = "hardening-auth-" + "x" * 32


def _auth(**kw) -> AuthSettings:
    return AuthSettings(jwt_secret=SECRET, enforce_access=True, **kw)


@pytest.fixture
def engine(fresh_database):
    eng = make_engine(fresh_database(), pool_size=4)
    with eng.begin() as c:
        create_user(c, "admin", "admin password", "admin", settings=_auth())
        create_user(c, "li", "li's password", "planner", area_code="350104001", settings=_auth())
        create_user(c, "wang", "wang's password", "resident", settings=_auth())
    yield eng
    eng.dispose()


def _client(engine, **kw) -> TestClient:
    return TestClient(create_app(engine=engine, auth_settings=_auth(**kw)),
                      raise_server_exceptions=False)


def _login(client, user, password):
    return client.post("/v1/auth/token", data={"username": user, "password": password})


def _bearer(client, user, password) -> dict:
    r = _login(client, user, password)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


# ---------------------------------------------------------------- item 7: sign-in


def test_failed_sign_ins_are_throttled_per_account(engine):
    """Today: unlimited guesses. After 5 failures even the right password waits (429)."""
    with _client(engine) as client:
        for _ in range(5):
            assert _login(client, "li", "a wrong guess").status_code == 401
        r = _login(client, "li", "li's password")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert _login(client, "wang", "wang's password").status_code == 200  # others unaffected


def test_failed_sign_ins_are_throttled_per_address(engine):
    """Guessing across many usernames from one address is throttled too."""
    with _client(engine, login_failures_per_address=4) as client:
        for i in range(4):
            assert _login(client, f"user{i}", "a wrong guess").status_code == 401
        assert _login(client, "admin", "admin password").status_code == 429


def _basic(user: str, password: str) -> dict:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_password_guesses_are_throttled_like_the_token_route(engine):
    """Today: HTTP Basic checked passwords without counting failures (unlimited guesses).
    The same per-account and per-address limits and store as /v1/auth/token; 429 answers are
    GeoReport errors on Open311 paths."""
    with _client(engine, login_failures_per_account=3, login_failures_per_address=6) as client:
        for _ in range(3):
            r = client.get("/v1/auth/me", headers=_basic("li", "a wrong guess"))
            assert r.status_code == 401, r.text
        r = client.get("/v1/auth/me", headers=_basic("li", "li's password"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0, r.text
        assert _login(client, "li", "li's password").status_code == 429  # one shared count
        assert client.get("/v1/auth/me", headers=_basic("wang", "wang's password")).json()[
            "name"] == "wang"  # other accounts unaffected
        for i in range(3):  # the address's count reaches 6 across other usernames
            r = client.get("/open311/v2/requests.json", headers=_basic(f"nobody{i}", "guess"))
            assert r.status_code == 403, r.text  # GeoReport's answer to bad credentials
        r = client.get("/open311/v2/requests.json", headers=_basic("admin", "admin password"))
        assert r.status_code == 429, r.text
        body = r.json()
        assert isinstance(body, list) and body[0]["code"] == 429 and body[0]["description"]
    with engine.connect() as c:  # counted in the shared store (rate_counter), not in memory
        from sqlalchemy import text

        counts = dict(c.execute(text("SELECT bucket, count FROM rate_counter "
                                     "WHERE bucket LIKE 'login-%'")).all())
    assert counts["login-user:li"] == 3 and counts["login-addr:testclient"] == 6


def test_unknown_and_known_users_cost_one_password_verification_each(engine, monkeypatch):
    """Today: an unknown username answered in 6 ms and a known one in 160 ms (argon2), which
    told which usernames exist. Now both verify one argon2 hash."""
    calls: list[str] = []
    real = service._hasher

    class Spy:
        def verify(self, hashed, password):
            calls.append(hashed)
            return real.verify(hashed, password)

    monkeypatch.setattr(service, "_hasher", Spy())
    with _client(engine) as client:
        assert _login(client, "nobody-at-all", "some password").status_code == 401
        assert _login(client, "li", "a wrong guess").status_code == 401
    assert len(calls) == 2 and all(h.startswith("$argon2") for h in calls)


@pytest.mark.parametrize("password, reason", [("aaaaaaaaaaaaaa", "different characters"),
                                               ("short", "shorter than"),
                                               ("newuser123", "is the username")])
def test_password_policy(engine, password, reason):
    with _client(engine) as client:
        r = client.post("/v1/auth/users", headers=_bearer(client, "admin", "admin password"),
                        json={"username": "newuser123", "password": password,
                              "role": "resident"})
    assert r.status_code == 422, r.text
    assert any(p["field"] == "password" and reason in p["reason"]
               for p in r.json()["problems"])


def test_a_disabled_account_s_token_stops_at_once_and_can_be_listed(engine):
    """Today: no way to disable an account; its token worked until it expired."""
    with _client(engine) as client:
        admin = _bearer(client, "admin", "admin password")
        li = _bearer(client, "li", "li's password")
        assert client.get("/v1/auth/me", headers=li).json()["name"] == "li"
        assert client.get("/v1/layers/grid", headers=li).status_code == 200
        r = client.post("/v1/auth/users/li/disable", headers=admin)
        assert r.status_code == 200 and r.json()["active"] is False
        assert client.get("/v1/layers/grid", headers=li).status_code == 401
        assert _login(client, "li", "li's password").status_code == 401
        listed = {u["username"]: u for u in client.get("/v1/auth/users", headers=admin).json()}
        assert listed["li"]["active"] is False and "password_hash" not in listed["li"]
        assert client.post("/v1/auth/users/li/enable", headers=admin).status_code == 200
        assert client.get("/v1/layers/grid", headers=li).status_code == 401  # still revoked
        assert client.get("/v1/layers/grid",
                          headers=_bearer(client, "li", "li's password")).status_code == 200


def test_revoking_tokens_refuses_old_ones_only(engine):
    with _client(engine) as client:
        admin = _bearer(client, "admin", "admin password")
        old = _bearer(client, "wang", "wang's password")
        assert client.post("/v1/auth/users/wang/revoke-tokens", headers=admin).status_code == 200
        assert client.get("/v1/incidents", headers=old).status_code == 401
        new = _bearer(client, "wang", "wang's password")
        assert client.get("/v1/incidents", headers=new).status_code == 200


def test_api_keys_list_rotate_revoke_and_carry_a_role(engine):
    """Today: keys could only be created. A planner-role key reads layers (a GIS client)."""
    with _client(engine) as client:
        admin = _bearer(client, "admin", "admin password")
        plain = client.post("/v1/auth/api-keys", headers=admin,
                            json={"name": "hotline"}).json()["api_key"]
        gis = client.post("/v1/auth/api-keys", headers=admin,
                          json={"name": "qgis", "role": "planner", "area_code": "350104001"})
        assert gis.status_code == 201, gis.text
        gis_key = gis.json()["api_key"]
        assert client.get("/v1/layers/grid", headers={"X-API-Key": gis_key}).status_code == 200
        assert client.get("/v1/layers/grid", headers={"X-API-Key": plain}).status_code == 403
        listed = client.get("/v1/auth/api-keys", headers=admin).json()
        assert {k["name"] for k in listed} == {"hotline", "qgis"}
        assert all(k["key_prefix"] and "key_hash" not in k for k in listed)
        rotated = client.post("/v1/auth/api-keys/hotline/rotate", headers=admin).json()["api_key"]
        ping = "/v1/lookup?lon=119.3&lat=26.05"
        assert client.get(ping, headers={"X-API-Key": plain}).status_code == 401
        assert client.get(ping, headers={"X-API-Key": rotated}).status_code != 401
        assert client.post("/v1/auth/api-keys/hotline/revoke", headers=admin).status_code == 200
        assert client.get(ping, headers={"X-API-Key": rotated}).status_code == 401
        assert client.post("/v1/auth/api-keys/nope/revoke", headers=admin).status_code == 404


def test_cli_lists_disables_and_takes_passwords_from_the_environment(engine, monkeypatch):
    """``wangge user add`` takes no --password (it would show in ps and shell history)."""
    from cli.main import app

    monkeypatch.setenv("WANGGE_DATABASE_URL",
                       engine.url.render_as_string(hide_password=False))
    runner = CliRunner()
    r = runner.invoke(app, ["user", "add", "zhao", "--role", "resident",
                            "--password", "zhao password"])
    assert r.exit_code != 0  # no such option
    monkeypatch.setenv("WANGGE_NEW_PASSWORD", "zhao's password")
    r = runner.invoke(app, ["user", "add", "zhao", "--role", "resident"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["user", "disable", "zhao"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["user", "list"])
    assert '"username": "zhao"' in r.output and "argon2" not in r.output
    key = runner.invoke(app, ["apikey", "create", "cad"]).output.strip()
    assert key.startswith("wg_")
    assert runner.invoke(app, ["apikey", "rotate", "cad"]).output.strip() != key
    assert runner.invoke(app, ["apikey", "revoke", "cad"]).exit_code == 0
    assert '"revoked_at": null' not in runner.invoke(app, ["apikey", "list"]).output
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT active FROM app_user WHERE username = 'zhao'"
                                 ).scalar() is False


# ---------------------------------------------------------------- item 8: several workers


def test_workers_on_one_state_directory_share_the_jwt_secret(engine, tmp_path):
    """Today: each worker made its own random secret, so half the requests answered 401. Two
    apps (as two workers) without WANGGE_JWT_SECRET accept each other's tokens."""
    db = DatabaseSettings(state_dir=tmp_path)
    one = create_app(db, engine=engine, auth_settings=AuthSettings(enforce_access=True))
    two = create_app(db, engine=engine, auth_settings=AuthSettings(enforce_access=True))
    secret_file = tmp_path / "jwt_secret"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    with TestClient(one) as a, TestClient(two) as b:
        token = _bearer(a, "li", "li's password")
        assert b.get("/v1/auth/me", headers=token).json()["name"] == "li"
        assert b.get("/v1/layers/grid", headers=token).status_code == 200


def test_rate_limits_are_shared_between_workers_without_a_query_per_request(engine):
    """Today: limits were per process (N workers allowed N× the rate). Two limiters on one
    database, 10 a minute: once their counts are shared, both refuse; counting itself never
    queries the database."""
    from geo.auth.limits import SharedRateLimiter

    one, two = SharedRateLimiter(flush_seconds=3600), SharedRateLimiter(flush_seconds=3600)
    one.start(engine)
    two.start(engine)
    statements: list[str] = []

    def seen(conn, cursor, statement, *rest) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert all(one.hit("sys", 10) is None for _ in range(6))
        assert all(two.hit("sys", 10) is None for _ in range(6))  # each alone is under 10
        assert statements == []
        one.flush()
        two.flush()
        one.flush()
        assert one.hit("sys", 10) is not None and two.hit("sys", 10) is not None
    finally:
        event.remove(engine, "before_cursor_execute", seen)
        one.close()
        two.close()


def test_residents_and_tokens_are_rate_limited(engine):
    """Today: a resident filed 190 reports in 2.4 s; tokens had no limit at all."""
    with _client(engine, resident_rate_per_minute=3, user_rate_per_minute=5) as client:
        wang = _bearer(client, "wang", "wang's password")
        codes = [client.get("/v1/incidents", headers=wang).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        li = _bearer(client, "li", "li's password")
        codes = [client.get("/v1/auth/me", headers=li).status_code for _ in range(6)]
        assert codes[:5] == [200] * 5 and codes[5] == 429
