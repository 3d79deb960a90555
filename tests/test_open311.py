"""Open311 GeoReport v2 client flow and the own HTTP API, over the real app and database.

The expected shapes are the GeoReport v2 spec's own examples (wiki.open311.org/GeoReport_v2):
the keys of a POST answer and of a request in GET requests.json, status open/closed, and the
error format [{"code", "description"}].
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from factories import AREA_SQL, GRID_E, GRID_W, offset, tiny_png
from fastapi.testclient import TestClient

from api.main import create_app
from geo.auth.service import AuthSettings, create_api_key
from geo.core.db import make_engine

# keys of the spec's example answers
POST_KEYS = {"service_request_id", "service_notice", "account_id"}
REQUEST_KEYS = {
    "service_request_id", "status", "status_notes", "service_name", "service_code",
    "description", "agency_responsible", "service_notice", "requested_datetime",
    "updated_datetime", "expected_datetime", "address", "address_id", "zipcode", "lat", "long",
    "media_url",
}
SERVICE_KEYS = {"service_code", "service_name", "description", "metadata", "type", "keywords",
                "group"}


@pytest.fixture(scope="module")
def client(fresh_database: Any) -> Iterator[tuple[TestClient, str]]:
    eng = make_engine(fresh_database())
    with eng.begin() as c:
        c.exec_driver_sql(AREA_SQL)
        key = create_api_key(c, "wechat-miniprogram", scopes=("open311",))
        bad = create_api_key(c, "lookup-only", scopes=("lookup",))
    app = create_app(engine=eng)
    with TestClient(app) as tc:
        tc.bad_key = bad  # type: ignore[attr-defined]
        yield tc, key
    eng.dispose()


def test_services(client: tuple[TestClient, str]) -> None:
    tc, _ = client
    r = tc.get("/open311/v2/services.json")
    assert r.status_code == 200
    services = r.json()
    assert len(services) == 12 and all(set(s) == SERVICE_KEYS for s in services)
    assert {"snow_ice", "neighbour_dispute"} <= {s["service_code"] for s in services}


def test_client_flow_post_get_list(client: tuple[TestClient, str]) -> None:
    tc, key = client
    form = {"api_key": key, "service_code": "rubbish", "lat": "26.05", "long": "119.305",
            "description": "楼下垃圾堆了三天", "address_string": "测试路 1 号",
            "email": "resident@example.cn", "phone": "13800138000", "first_name": "张"}
    r = tc.post("/open311/v2/requests.json", data=form)
    assert r.status_code == 201, r.text
    body = r.json()
    assert isinstance(body, list) and len(body) == 1 and set(body[0]) == POST_KEYS
    rid = body[0]["service_request_id"]

    one = tc.get(f"/open311/v2/requests/{rid}.json")
    assert one.status_code == 200
    [req] = one.json()
    assert set(req) == REQUEST_KEYS
    assert req["service_request_id"] == rid and req["status"] == "open"
    assert req["service_code"] == "rubbish" and req["lat"] == pytest.approx(26.05)
    assert req["long"] == pytest.approx(119.305) and req["address"] == "测试路 1 号"
    assert "13800138000" not in one.text and "example.cn" not in one.text and "张" not in one.text

    # the own API sees the case routed to the west grid; move it to closed
    case = tc.get(f"/v1/incidents/{rid}").json()
    assert case["grid_code"] == GRID_W
    for step in ("checked_in", "consulting", "in_progress", "feedback"):
        assert tc.post(f"/v1/incidents/{rid}/transitions",
                       json={"to": step, "actor": "dept"}).status_code == 200
    assert tc.post(f"/v1/incidents/{rid}/transitions",
                   json={"to": "rated", "rating": 5, "actor": "resident"}).status_code == 200

    r2 = tc.post("/open311/v2/requests.json", data={**form, "lat": "26.045", "long": "119.315",
                                                    "service_code": "noise"})
    rid2 = r2.json()[0]["service_request_id"]
    assert tc.get(f"/v1/incidents/{rid2}").json()["grid_code"] == GRID_E
    assert tc.post(f"/v1/incidents/{rid}/transitions",
                   json={"to": "closed", "actor": "centre"}).status_code == 200

    closed = {x["service_request_id"] for x in
              tc.get("/open311/v2/requests.json", params={"status": "closed"}).json()}
    opened = {x["service_request_id"] for x in
              tc.get("/open311/v2/requests.json", params={"status": "open"}).json()}
    assert rid in closed and rid not in opened and rid2 in opened and rid2 not in closed
    by_code = tc.get("/open311/v2/requests.json", params={"service_code": "noise"}).json()
    assert {x["service_code"] for x in by_code} == {"noise"}
    both = tc.get("/open311/v2/requests.json",
                  params={"service_request_id": f"{rid},{rid2}"}).json()
    assert {x["service_request_id"] for x in both} == {rid, rid2}


def test_duplicate_over_open311(client: tuple[TestClient, str]) -> None:
    tc, key = client
    lon, lat = 119.302, 26.042
    a = tc.post("/open311/v2/requests.json", data={"api_key": key, "service_code": "parking",
                                                   "lat": lat, "long": lon})
    lo2, la2 = offset(lon, lat, 30)
    b = tc.post("/open311/v2/requests.json", data={"api_key": key, "service_code": "parking",
                                                   "lat": la2, "long": lo2})
    [req] = tc.get(f"/open311/v2/requests/{b.json()[0]['service_request_id']}.json").json()
    assert req["status"] == "closed"
    assert req["status_notes"] == f"duplicate of request {a.json()[0]['service_request_id']}"


def test_errors_in_spec_format(client: tuple[TestClient, str]) -> None:
    tc, key = client
    cases = [
        (tc.post("/open311/v2/requests.json", data={"service_code": "rubbish", "lat": 26.05,
                                                    "long": 119.305}), 403),
        (tc.post("/open311/v2/requests.json", data={"api_key": tc.bad_key,
                                                    "service_code": "rubbish", "lat": 26.05,
                                                    "long": 119.305}), 403),
        (tc.post("/open311/v2/requests.json", data={"api_key": key, "service_code": "nope",
                                                    "lat": 26.05, "long": 119.305}), 404),
        (tc.post("/open311/v2/requests.json", data={"api_key": key, "service_code": "rubbish"}),
         400),
        (tc.get("/open311/v2/requests/999999.json"), 404),
        (tc.get("/open311/v2/requests.json", params={"status": "pending"}), 400),
    ]
    for resp, status in cases:
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert isinstance(body, list) and body
        assert all(set(e) == {"code", "description"} and e["code"] == status for e in body)


def test_own_api_conflict_photo_stats(client: tuple[TestClient, str]) -> None:
    tc, _ = client
    r = tc.post("/v1/incidents", json={"category": "sewer_blocked", "lon": 119.311,
                                       "lat": 26.059, "actor": "grid-worker-7"})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    bad = tc.post(f"/v1/incidents/{iid}/transitions", json={"to": "closed", "actor": "x"})
    assert bad.status_code == 409
    assert "reported" in bad.json()["problems"][0]["reason"]
    app = tc.app
    app.state.incident_settings = app.state.incident_settings.model_copy(
        update={"photo_max_bytes": 1000})
    ok = tc.post(f"/v1/incidents/{iid}/photos", content=tiny_png(),
                 headers={"content-type": "image/png"})
    assert ok.status_code == 201
    big = tc.post(f"/v1/incidents/{iid}/photos", content=b"0" * 5000,
                  headers={"content-type": "image/png"})
    assert big.status_code == 413
    got = tc.get(f"/v1/incidents/{iid}/photos/{ok.json()['id']}")
    assert got.content.startswith(b"\x89PNG")
    fc = tc.get("/v1/incidents/stats", params={"by": "grid"}).json()
    assert fc["type"] == "FeatureCollection"
    assert {f["id"] for f in fc["features"]} <= {GRID_W, GRID_E}
    assert all(f["geometry"]["type"] == "MultiPolygon" for f in fc["features"])
    assert tc.get("/v1/incidents/overdue", params={"street": "350104001"}).status_code == 200
    assert tc.put("/v1/incident-categories/noise/departments",
                  json={"departments": ["police"]}).json() == ["police"]


def test_form_post_with_the_access_policy_on(fresh_database: Any) -> None:
    """As deployed: the policy reads the form's api_key, and the handler still reads the form."""
    eng = make_engine(fresh_database())
    with eng.begin() as c:
        c.exec_driver_sql(AREA_SQL)
        key = create_api_key(c, "hotline-12345", scopes=("open311",))
    auth = AuthSettings(jwt_secret="open311-test-" + "x" * 32, enforce_access=True)
    with TestClient(create_app(engine=eng, auth_settings=auth)) as tc:
        form = {"service_code": "rubbish", "lat": "26.05", "long": "119.305"}
        assert tc.post("/open311/v2/requests.json", data=form).status_code == 403
        r = tc.post("/open311/v2/requests.json", data={**form, "api_key": key})
        assert r.status_code == 201, r.text
        rid = int(r.json()[0]["service_request_id"])
    with eng.connect() as c:
        row = c.exec_driver_sql("SELECT source, category_code FROM incident WHERE id = %s",
                                (rid,)).one()
    eng.dispose()
    assert tuple(row) == ("open311", "rubbish")


def test_deeply_nested_json_is_a_4xx(client: tuple[TestClient, str]) -> None:
    tc, _ = client
    body = '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"
    r = tc.post("/open311/v2/requests.json", content=body,
                headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
