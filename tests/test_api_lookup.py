"""HTTP lookup: answers, batch formats and order, per-point errors, 4xx naming the field."""

from __future__ import annotations

import orjson
import pytest
from factories import G11, G21, G22, D, S, seed_hand_made
from fastapi.testclient import TestClient

from api.main import create_app
from geo import lookup
from geo.data.coords import from_wgs84


@pytest.fixture(scope="module")
def client(fresh_database):
    eng = seed_hand_made(fresh_database())
    app = create_app(engine=eng)
    with TestClient(app) as tc:
        app.state.lookup_settings = lookup.LookupSettings(
            max_batch_points=50, stream_threshold=5, check_interval_ms=0)
        yield tc
    eng.dispose()


def test_single_lookup_mapit_shape(client):
    r = client.get("/v1/lookup", params={"lon": 119.31, "lat": 26.01})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["point"] == {"lon": 119.31, "lat": 26.01, "crs": "wgs84"}
    assert [(a["type"], a["code"]) for a in body["areas"]] == [
        ("district", D), ("street", S), ("community", G11[:12]), ("grid", G11)]
    assert body["grid"]["name"] == "SW"
    assert {m["role"] for m in body["grid"]["team"]} == {"grid_leader", "grid_worker"}


def test_single_lookup_gcj02_echoes_wgs84(client):
    x, y = from_wgs84(119.335, 26.0102, "gcj02")
    r = client.get("/v1/lookup", params={"lon": float(x), "lat": float(y), "crs": "gcj02"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["grid"]["code"] == G22
    assert body["point"]["lon"] == pytest.approx(119.335, abs=1e-7)
    assert body["input"]["crs"] == "gcj02"


@pytest.mark.parametrize("params,status,field", [
    ({"lon": "abc", "lat": 26.01}, 422, "lon"),
    ({"lon": 119.31}, 422, "lat"),
    ({"lon": 119.31, "lat": 95}, 422, "lat"),
    ({"lon": 190, "lat": 26.0}, 422, "lon"),
    ({"lon": 26.01, "lat": 119.31}, 422, "lon,lat"),  # swapped
    ({"lon": 119.40, "lat": 26.02}, 422, "lon,lat"),  # outside the district
    ({"lon": 119.306, "lat": 26.006}, 404, "lon,lat"),  # in the hole: no grid
    ({"lon": 119.31, "lat": 26.01, "crs": "utm50"}, 422, "crs"),
    ({"lon": 119.31, "lat": 26.01, "at": "2020-13-01"}, 422, "at"),
])
def test_single_lookup_refusals_name_the_field(client, params, status, field):
    r = client.get("/v1/lookup", params=params)
    assert r.status_code == status, r.text
    assert r.json()["problems"][0]["field"] == field


def test_swapped_and_outside_are_told_apart(client):
    assert client.get("/v1/lookup", params={"lon": 26.01, "lat": 119.31}).json()["error"] == \
        "SwappedCoordinates"
    assert client.get("/v1/lookup", params={"lon": 119.4, "lat": 26.02}).json()["error"] == \
        "OutsideDistrict"


def test_batch_json_pairs_objects_geojson_csv_in_order(client):
    pts = [[119.31, 26.01], [119.33, 26.035], [119.40, 26.02], [26.01, 119.31]]
    expected = [("ok", G11), ("ok", G21), ("outside_district", None), ("swapped", None)]
    bodies = [
        ("application/json", orjson.dumps(pts)),
        ("application/json", orjson.dumps([{"lon": a, "lat": b} for a, b in pts])),
        ("application/geo+json", orjson.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {},
             "geometry": {"type": "Point", "coordinates": p}} for p in pts]})),
        ("text/csv", ("id,lon,lat\n" + "".join(
            f"{i},{a},{b}\n" for i, (a, b) in enumerate(pts))).encode()),
    ]
    for ctype, body in bodies:
        r = client.post("/v1/lookup/batch", content=body, headers={"content-type": ctype})
        assert r.status_code == 200, (ctype, r.text)
        res = r.json()["results"]
        assert [(e["status"], e.get("grid")) for e in res] == expected, ctype


def test_batch_bad_point_does_not_fail_batch(client):
    body = orjson.dumps([{"lon": "x", "lat": 26.0}, {"lon": 119.33, "lat": 26.02}, [300, 26]])
    r = client.post("/v1/lookup/batch", content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [e["status"] for e in res] == ["not_a_number", "ok", "out_of_range"]
    assert res[1]["grid"] == G22


def test_batch_streams_and_limits(client):
    pts = [[119.31, 26.01]] * 20  # above the stream threshold (5), below the limit (50)
    r = client.post("/v1/lookup/batch", content=orjson.dumps(pts),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert r.headers.get("content-length") is None  # streamed (chunked)
    assert r.json()["count"] == 20 and len(r.json()["results"]) == 20
    r = client.post("/v1/lookup/batch", content=orjson.dumps([[119.31, 26.01]] * 51),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["problems"][0]["field"] == "body"
    r = client.post("/v1/lookup/batch?crs=nope", content=b"[]",
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["problems"][0]["field"] == "crs"


def test_ping(client):
    r = client.get("/v1/ping")
    assert r.status_code == 200 and r.json() == {}


def test_new_generation_served_without_restart(fresh_database):
    import time

    from factories import AREAS_GEN1, C1, G12, box, write_generation

    eng = seed_hand_made(fresh_database())
    app = create_app(engine=eng)
    with TestClient(app) as tc:
        app.state.lookup_settings = lookup.LookupSettings(check_interval_ms=0)
        params = {"lon": 119.305, "lat": 26.03}
        assert tc.get("/v1/lookup", params=params).json()["grid"]["code"] == G12
        gen2 = [a for a in AREAS_GEN1 if a[0] != "grid" or a[2] != C1] + [
            ("grid", G11, C1, "W west", box(119.30, 26.00, 119.31, 26.04)),
            ("grid", G12, C1, "W east", box(119.31, 26.00, 119.32, 26.04)),
        ]
        with eng.begin() as c:
            write_generation(c, gen2, "2026-01-01T00:00:00+08:00", close_previous=True)
        deadline = time.monotonic() + 30
        code = None
        while time.monotonic() < deadline:  # rebuilt in the background; old index meanwhile
            r = tc.get("/v1/lookup", params=params)
            assert r.status_code == 200
            code = r.json()["grid"]["code"]
            if code == G11:
                break
            time.sleep(0.1)
        assert code == G11
        old = tc.get("/v1/lookup", params={**params, "at": "2025-06-01"}).json()
        assert old["grid"]["code"] == G12
    eng.dispose()
