"""Accounts, tokens, API keys, the body limit, request ids and log redaction."""

from __future__ import annotations

import logging

import pytest
from fastapi import APIRouter, Depends, Request
from fastapi.testclient import TestClient

from api.main import create_app
from api.policy import PLANNERS, POLICY, PolicyRoute, Rule
from api.security import current_principal, redact
from geo.auth.service import (
    AuthSettings,
    Principal,
    authenticate,
    create_api_key,
    create_user,
    principal_from_api_key,
)
from geo.core.db import make_engine
from geo.core.errors import Conflict, InvalidInput, Unauthenticated
from geo.core.settings import ApiSettings

AUTH = AuthSettings(jwt_secret="test-secret-" + "x" * 32, enforce_access=True)


def test_password_is_hashed_with_argon2_and_verified(conn):
    create_user(conn, "li", "correct horse battery", "planner", area_code="350104001",
                settings=AUTH)
    stored = conn.exec_driver_sql("SELECT password_hash FROM app_user").scalar()
    assert stored.startswith("$argon2") and "correct horse" not in stored
    assert authenticate(conn, "li", "correct horse battery").role == "planner"
    with pytest.raises(Unauthenticated):
        authenticate(conn, "li", "wrong password!!")
    with pytest.raises(Unauthenticated):
        authenticate(conn, "nobody", "correct horse battery")


def test_bad_accounts_are_refused_with_the_field(conn):
    with pytest.raises(InvalidInput) as exc:
        create_user(conn, "x", "short", "emperor", settings=AUTH)
    fields = {p.field for p in exc.value.problems}
    assert fields == {"role", "password"}
    create_user(conn, "wang", "long enough pw", "resident", settings=AUTH)
    with pytest.raises(Conflict):
        create_user(conn, "wang", "long enough pw", "resident", settings=AUTH)


def test_api_key_is_stored_hashed_and_resolves(conn):
    key = create_api_key(conn, "hotline-12345", scopes=("lookup",))
    assert conn.exec_driver_sql("SELECT count(*) FROM api_key WHERE key_hash = %s",
                                (key,)).scalar() == 0
    principal, rate = principal_from_api_key(conn, key)
    assert principal.name == "hotline-12345" and principal.scopes == ("lookup",)
    with pytest.raises(Unauthenticated):
        principal_from_api_key(conn, key + "x")
    with pytest.raises(Conflict) as err:
        create_api_key(conn, "hotline-12345")
    assert err.value.problems[0].field == "name"
    assert conn.exec_driver_sql("SELECT count(*) FROM api_key WHERE name = 'hotline-12345'"
                                ).scalar() == 1


@pytest.mark.parametrize(
    "scope, code, inside",
    [("350104001", "350104001002003", True), ("350104001", "350104002001001", False),
     ("350104001002003", "350104001002003", True), ("350104001002003", "350104001002", False)],
)
def test_scope_follows_code_prefixes(scope, code, inside):
    assert Principal("user", "u", "grid_worker", area_code=scope).covers(code) is inside


def test_redaction_removes_phones_and_secrets():
    line = "report from 13812345678 password=hunter2 Authorization: Bearer abc.def.ghi"
    clean = redact(line)
    assert "13812345678" not in clean and "hunter2" not in clean and "abc.def" not in clean
    assert "report from" in clean


@pytest.fixture
def client(fresh_database, monkeypatch):
    url = fresh_database()
    eng = make_engine(url)
    app = create_app(engine=eng, auth_settings=AUTH,
                     api_settings=ApiSettings(max_body_bytes=1000))
    # Test routes admitted by the one access mechanism, the POLICY table.
    monkeypatch.setitem(POLICY, "test_planner_only", PLANNERS)
    monkeypatch.setitem(POLICY, "test_raw_body", Rule(key_scopes=frozenset({"lookup"})))
    router = APIRouter(route_class=PolicyRoute)

    @router.get("/_test/planner-only", operation_id="test_planner_only")
    def planner_only(p: Principal = Depends(current_principal)) -> dict:
        return {"name": p.name}

    @router.post("/_test/raw-body", operation_id="test_raw_body")
    async def raw_body(request: Request, p: Principal = Depends(current_principal)) -> dict:
        return {"name": p.name, "bytes": len(await request.body())}

    app.include_router(router)

    with eng.begin() as c:
        create_user(c, "admin", "admin password", "admin", settings=AUTH)
        create_user(c, "plan", "planner password", "planner", area_code="350104001",
                    settings=AUTH)
        create_user(c, "res", "resident password", "resident", settings=AUTH)
    with TestClient(app) as tc:
        yield tc
    eng.dispose()


def _token(client, user, pw):
    r = client.post("/v1/auth/token", data={"username": user, "password": pw})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_password_flow_and_roles(client):
    assert client.get("/_test/planner-only").status_code == 401
    assert client.get("/_test/planner-only",
                      headers=_token(client, "res", "resident password")).status_code == 403
    r = client.get("/_test/planner-only", headers=_token(client, "plan", "planner password"))
    assert r.status_code == 200 and r.json() == {"name": "plan"}
    assert client.get("/_test/planner-only",
                      headers=_token(client, "admin", "admin password")).status_code == 200
    assert client.post("/v1/auth/token",
                       data={"username": "plan", "password": "nope"}).status_code == 401
    assert client.get("/_test/planner-only",
                      headers={"Authorization": "Bearer not.a.jwt"}).status_code == 401


def test_only_admin_creates_keys_and_keys_are_rate_limited(client):
    body = {"name": "wechat-mini", "scopes": ["lookup"], "rate_per_minute": 2}
    planner = _token(client, "plan", "planner password")
    assert client.post("/v1/auth/api-keys", json=body, headers=planner).status_code == 403
    r = client.post("/v1/auth/api-keys", json=body,
                    headers=_token(client, "admin", "admin password"))
    assert r.status_code == 201
    key = r.json()["api_key"]
    codes = [client.get("/v1/auth/me", headers={"X-API-Key": key}).status_code
             for _ in range(3)]
    assert codes == [200, 200, 429]
    limited = client.get("/v1/auth/me", headers={"X-API-Key": key})
    assert int(limited.headers["Retry-After"]) >= 1


def test_form_api_key_leaves_the_raw_body_readable(client):
    r = client.post("/v1/auth/api-keys", json={"name": "csv-client", "scopes": ["lookup"]},
                    headers=_token(client, "admin", "admin password"))
    body = f"api_key={r.json()['api_key']}&lon=119.3&lat=26.05".encode()
    r = client.post("/_test/raw-body", content=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "csv-client", "bytes": len(body)}


def test_body_limit_and_request_id(client):
    r = client.post("/v1/auth/token", content=b"x" * 5000,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and r.json()["problems"][0]["field"] == "body"
    r = client.get("/v1/auth/me", headers={"X-Request-ID": "abc123"})
    assert r.headers["X-Request-ID"] == "abc123"
    assert len(client.get("/v1/auth/me").headers["X-Request-ID"]) == 32


def test_logs_carry_the_request_id_and_no_phone(client, caplog):
    from api.security import RedactingFilter

    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO):
        logging.getLogger("wangge.test").info("caller phone 13912345678")
    record = caplog.records[-1]
    assert "13912345678" not in caplog.text and hasattr(record, "request_id")


def test_unknown_department_is_422_not_a_server_error(conn):
    with pytest.raises(InvalidInput) as err:
        create_user(conn, "wu", "long enough password", "department_staff",
                    department_id=2**31 - 1, settings=AUTH)
    assert [p.field for p in err.value.problems] == ["department_id"]


@pytest.mark.parametrize("role, field", [("commander", "area_code"), ("grid_worker", "area_code"),
                                         ("department_staff", "department_id")])
def test_scoped_roles_need_their_scope(conn, role, field):
    with pytest.raises(InvalidInput) as err:
        create_user(conn, "zhao", "long enough password", role, settings=AUTH)
    assert [p.field for p in err.value.problems] == [field]
