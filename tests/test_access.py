"""The access matrix: every role and key kind against every operation, allowed and denied."""

from __future__ import annotations

import re

import pytest
from factories import bearer_headers
from fastapi.testclient import TestClient

from api.main import create_app
from api.policy import POLICY, admits
from geo.auth.service import AuthSettings, Principal, create_api_key, create_user
from geo.core.db import make_engine

AUTH = AuthSettings(jwt_secret="access-test-" + "x" * 32, enforce_access=True)
ROLES = ["resident", "grid_worker", "department_staff", "planner", "commander", "admin"]
PATH_VALUES = {"layer": "grid", "code": "snow_ice", "request_id": "1"}


@pytest.fixture(scope="module")
def setup(fresh_database):
    eng = make_engine(fresh_database(), pool_size=4)
    with eng.begin() as c:
        dep = c.exec_driver_sql(
            "INSERT INTO department (code, name) VALUES ('acc-dep', '测试部门') RETURNING id"
        ).scalar()
        for role in ROLES:
            create_user(c, role, f"{role}-password", role,
                        area_code=None if role in ("resident", "admin", "department_staff")
                        else "350104001",
                        department_id=dep if role == "department_staff" else None,
                        settings=AUTH)
        keys = {scope: create_api_key(c, f"sys-{scope}", scopes=(scope,))
                for scope in ("lookup", "open311")}
    app = create_app(engine=eng, auth_settings=AUTH)
    with TestClient(app, raise_server_exceptions=False) as client:
        headers: dict[str, dict[str, str]] = {"anonymous": {}, **bearer_headers(client, ROLES)}
        for scope, key in keys.items():
            headers[f"key:{scope}"] = {"X-API-Key": key}
        yield client, headers, app.openapi()
    eng.dispose()


def _principal(name: str) -> Principal:
    if name == "anonymous":
        return Principal("anonymous", "anonymous")
    if name.startswith("key:"):
        return Principal("api_key", name, scopes=(name[4:],))
    return Principal("user", name, role=name)


def _operations(spec: dict) -> list[tuple[str, str, str]]:
    return [(m.upper(), path, op["operationId"])
            for path, ops in spec["paths"].items() for m, op in ops.items()]


def test_every_operation_is_in_the_policy(setup):
    _, _, spec = setup
    missing = [op for _, _, op in _operations(spec) if op not in POLICY]
    assert missing == []


def test_every_route_enforces_the_policy(setup):
    """A router built without ``route_class=PolicyRoute`` would skip the policy silently."""
    from fastapi.routing import APIRoute

    from api.policy import PolicyRoute

    client, _, _ = setup
    plain = [r.path for r in client.app.routes
             if isinstance(r, APIRoute) and not isinstance(r, PolicyRoute)]
    assert plain == []


def test_openapi_declares_the_credentials_of_each_operation(setup):
    _, _, spec = setup
    schemes = spec["components"]["securitySchemes"]
    assert schemes["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/v1/auth/token"
    assert schemes["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for _, path, op_id in _operations(spec):
        ops = spec["paths"][path]
        op = next(o for o in ops.values() if o["operationId"] == op_id)
        declared = {name for entry in op.get("security", []) for name in entry}
        rule = POLICY[op_id]
        if rule.public:
            assert declared == set(), op_id
        else:
            assert "OAuth2PasswordBearer" in declared, op_id
            assert ("APIKeyHeader" in declared) == bool(rule.key_scopes), op_id


def test_access_matrix(setup):
    client, headers, spec = setup
    wrong = []
    for method, path, op in _operations(spec):
        url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), "1"), path)
        for who, hdrs in headers.items():
            r = client.request(method, url, headers=hdrs, json={} if method != "GET" else None)
            allowed = admits(POLICY[op], _principal(who))
            refused_by_policy = r.status_code in (401, 403) and op in r.text
            anonymous_refusal = r.status_code == 401 and "authentication required" in r.text
            if allowed and (refused_by_policy or (anonymous_refusal and who != "anonymous")):
                wrong.append(f"{who} refused {op}: {r.status_code}")
            if not allowed and r.status_code not in (401, 403):
                wrong.append(f"{who} admitted to {op}: {r.status_code}")
            if r.status_code >= 500:
                wrong.append(f"{who} {op}: server error {r.status_code}")
    assert wrong == []


@pytest.mark.parametrize(
    "who, method, path, status",
    [
        ("anonymous", "GET", "/v1/lookup?lon=119.3&lat=26.05", 401),
        ("resident", "POST", "/v1/circles/runs", 403),
        ("key:lookup", "POST", "/v1/incidents", 403),
        ("key:open311", "GET", "/v1/lookup?lon=119.3&lat=26.05", 403),
        ("grid_worker", "POST", "/v1/auth/users", 403),
        ("department_staff", "GET", "/maps/grids", 403),
        ("resident", "GET", "/v1/incidents/overdue", 403),
        ("resident", "GET", "/v1/incidents/stats", 403),
    ],
)
def test_known_refusals(setup, who, method, path, status):
    client, headers, _ = setup
    r = client.request(method, path, headers=headers[who], json={} if method != "GET" else None)
    assert r.status_code == status


def test_public_open311_reads_need_no_credentials(setup):
    client, _, _ = setup
    assert client.get("/open311/v2/services.json").status_code == 200
