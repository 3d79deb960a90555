"""Hardening (issue 15, items 4-6): bad input is a clear 4xx, uploads and photos are bounded.

Runs over HTTP (TestClient, the ASGI app in full) on a small synthetic city with the access
policy enforced. Each test names the defect it guards against.
"""

from __future__ import annotations

import io
import logging
import zipfile

import pytest
from factories import bearer_headers
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from geo.auth.service import AuthSettings, create_api_key, create_user
from geo.core.db import make_engine
from geo.data.store import write_layers
from geo.samples.synth import generate_city

AUTH = AuthSettings(jwt_secret="hardening-test-" + "x" * 32, enforce_access=True)


@pytest.fixture(scope="module")
def world(fresh_database):
    eng = make_engine(fresh_database(), pool_size=4)
    with eng.begin() as c:
        write_layers(c, generate_city(grids=12, buildings=150, stations=6, seed=3))
        grid = c.exec_driver_sql(
            "SELECT code FROM area_current WHERE level = 'grid' ORDER BY code LIMIT 1").scalar()
        point = c.exec_driver_sql(
            "SELECT ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom))"
            " FROM area_current WHERE code = %s", (grid,)).first()
        create_user(c, "admin", "admin password", "admin", settings=AUTH)
        create_user(c, "planner", "planner password", "planner", area_code=grid[:6],
                    settings=AUTH)
        create_user(c, "worker", "worker password", "grid_worker", area_code=grid[:6],
                    settings=AUTH)
        create_user(c, "resident", "resident password", "resident", settings=AUTH)
        key = create_api_key(c, "hotline", scopes=("lookup", "open311"))
    app = create_app(engine=eng, auth_settings=AUTH)
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = {"key": {"X-API-Key": key}, **bearer_headers(
            client, ("admin", "planner", "worker", "resident"), lambda who: f"{who} password")}
        yield client, headers, grid, (float(point[0]), float(point[1]))
    eng.dispose()


def _raw(client, path: str, body: bytes, headers: dict) -> object:
    return client.post(path, content=body,
                       headers={**headers, "Content-Type": "application/json"})


# ---------------------------------------------------------------- item 4: one JSON gate


@pytest.mark.parametrize("body, field", [
    (b'{"category": "rubbish", "lon": NaN, "lat": 26.05}', "body.lon"),
    (b'{"category": "rubbish", "lon": 119.3, "lat": -Infinity}', "body.lat"),
    (b'{"category": "rubbish", "lon": 1e999, "lat": 26.05}', "body.lon"),
    (b'{"category": "\\ud800", "lon": 119.3, "lat": 26.05}', "body.category"),
    (b'{"category": "rubbish", "lon": 119.3, "lat": 26.05, "address": "a\\udfff"}',
     "body.address"),
])
def test_non_json_numbers_and_lone_surrogates_are_422_naming_the_field(world, body, field):
    """Today: NaN reached the handler and the 422 echo (or the database) answered 500."""
    client, headers, _, _ = world
    r = _raw(client, "/v1/incidents", body, headers["resident"])
    assert r.status_code == 422, r.text
    assert r.json()["problems"][0]["field"] == field


def test_the_json_gate_covers_every_json_route(world):
    """One mechanism, not per route: transitions, planning, auth and circles alike."""
    client, headers, grid, _ = world
    cases = [
        ("/v1/incidents/1/transitions", b'{"to": "rated", "rating": NaN}', "worker"),
        ("/v1/planning/merge", b'{"codes": ["\\ud800"]}', "planner"),
        ("/v1/auth/users", b'{"username": "ab", "password": "\\udc00xxxxxxxxxx",'
                           b' "role": "resident"}', "admin"),
        ("/v1/circles/runs", b'{"minutes": Infinity}', "planner"),
    ]
    for path, body, who in cases:
        r = _raw(client, path, body, headers[who])
        assert r.status_code == 422, (path, r.status_code, r.text)
        assert "refused JSON value" in r.json()["detail"], path


def test_a_surrogate_pair_and_the_text_nan_are_still_accepted(world):
    """The gate refuses only what JSON/UTF-8 cannot carry: an escaped emoji and the word NaN
    are fine."""
    client, headers, _, (lon, lat) = world
    body = (f'{{"category": "rubbish", "lon": {lon!r}, "lat": {lat!r},'
            ' "description": "NaN \\ud83d\\ude00"}').encode()
    r = _raw(client, "/v1/incidents", body, headers["resident"])
    assert r.status_code == 201, r.text
    got = client.get(f"/v1/incidents/{r.json()['id']}", headers=headers["admin"]).json()
    assert got["description"] == "NaN \U0001F600"


@pytest.mark.parametrize("user, field", [
    ({"username": "staff1", "password": "a long password", "role": "department_staff"},
     "department_id"),
    ({"username": "staff2", "password": "a long password", "role": "department_staff",
      "department_id": 999999}, "department_id"),
])
def test_integrity_errors_are_4xx_naming_the_field_and_log_no_parameters(world, caplog, user,
                                                                         field):
    """Today: a department_staff without (or with an unknown) department answered 500 and the
    log line printed the INSERT's parameters, argon2 hash included."""
    client, headers, _, _ = world
    with caplog.at_level(logging.DEBUG):
        r = client.post("/v1/auth/users", json=user, headers=headers["admin"])
    assert r.status_code == 422, r.text
    assert r.json()["problems"][0]["field"] == field
    assert "$argon2" not in caplog.text and "$argon2" not in r.text


def test_out_of_range_coordinates_in_a_reshape_are_422(world):
    """Today: 1e308 reached PostGIS's transform and answered 500."""
    client, headers, grid, _ = world
    poly = {"type": "Polygon", "coordinates": [[[1e308, 1e308], [1e308, -1e308],
                                                [-1e308, 0], [1e308, 1e308]]]}
    r = client.post("/v1/planning/reshape", json={"geometries": {grid: poly}},
                    headers=headers["planner"])
    assert r.status_code == 422, r.text
    assert "outside WGS 84" in r.text


def test_open311_end_date_at_the_start_of_time_is_not_a_500(world):
    """Today: end_date=0001-01-01 minus the default 90 days overflowed (500)."""
    client, _, _, _ = world
    r = client.get("/open311/v2/requests.json", params={"end_date": "0001-01-01"})
    assert r.status_code == 200 and r.json() == []


def test_a_corrupt_zip_on_planning_import_is_422(world):
    """Today: zipfile.BadZipFile escaped (500)."""
    client, headers, _, _ = world
    r = client.post("/v1/planning/import", files={"file": ("g.zip", b"PK\x03\x04garbage")},
                    headers=headers["admin"])
    assert r.status_code == 422, r.text
    assert r.json()["problems"][0]["field"] == "file"


# ---------------------------------------------------------------- item 5: limits


# Bounded otherwise: files (the body limit, the zip caps), and the batch lookup's points
# (numbers only, at most LookupSettings.max_batch_points, else 413).
_UNBOUNDED_OK = {"lookup_batch"}


def _unbounded(schema: dict, components: dict, where: str, out: list[str]) -> None:
    """Every text in ``schema`` without maxLength, list without maxItems, or open object
    without maxProperties / x-max-vertices (walks $ref, anyOf, properties, items)."""
    if "$ref" in schema:
        schema = components[schema["$ref"].split("/")[-1]]
    for sub in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
        _unbounded(sub, components, where, out)
    kind = schema.get("type")
    if kind == "string" and not ({"maxLength", "enum", "const"} & set(schema)) \
            and schema.get("format") not in ("binary", "date-time", "date") \
            and "contentMediaType" not in schema:
        out.append(f"{where}: text without maxLength")
    if kind == "array":
        if "maxItems" not in schema:
            out.append(f"{where}: list without maxItems")
        _unbounded(schema.get("items") or {}, components, where + "[]", out)
    if kind == "object":
        for name, sub in (schema.get("properties") or {}).items():
            _unbounded(sub, components, f"{where}.{name}", out)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            _unbounded(extra, components, where + ".*", out)
        if not schema.get("properties") and not ({"maxProperties", "x-max-vertices"}
                                                 & set(schema)):
            out.append(f"{where}: open object without maxProperties")


def test_every_submitted_text_and_list_has_a_declared_limit(world):
    """Today: address, reporter_name, reporter_contact, actor and urge notes took 3 MB each.
    Every request body field in the OpenAPI schema now declares its limit."""
    client, _, _, _ = world
    spec = client.app.openapi()
    components = spec["components"]["schemas"]
    out: list[str] = []
    for ops in spec["paths"].values():
        for op in ops.values():
            if op["operationId"] in _UNBOUNDED_OK:
                continue
            for media in op.get("requestBody", {}).get("content", {}).values():
                _unbounded(media.get("schema") or {}, components, op["operationId"], out)
    assert out == []


@pytest.mark.parametrize("path, who, body, field", [
    ("/v1/incidents", "resident", {"category": "rubbish", "lon": 119.3, "lat": 26.05,
                                   "address": "街" * 3_000_000}, "address"),
    ("/v1/incidents", "resident", {"category": "rubbish", "lon": 119.3, "lat": 26.05,
                                   "reporter_contact": "1" * 100_000}, "reporter_contact"),
    ("/v1/incidents/1/urge", "admin", {"note": "催" * 100_000}, "note"),
])
def test_too_long_text_is_refused_naming_the_field(world, path, who, body, field):
    client, headers, _, _ = world
    r = client.post(path, json=body, headers=headers[who])
    assert r.status_code == 422, r.text[:300]
    assert field in r.text[:2000] and len(r.content) < 10_000  # not echoed back whole


def test_open311_form_fields_are_limited(world):
    client, headers, _, (lon, lat) = world
    r = client.post("/open311/v2/requests.json",
                    data={"service_code": "rubbish", "lat": str(lat), "long": str(lon),
                          "address_string": "x" * 100_000}, headers=headers["key"])
    # GeoReport v2 answers bad input with 400 in its own error format
    assert r.status_code == 400 and "address_string" in r.json()[0]["description"]


def _bomb(size: int, members: int = 1) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(members):
            z.writestr(f"grid{i}.shp", b"\0" * size)
    return buf.getvalue()


@pytest.mark.parametrize("path", ["/v1/planning/import", "/v1/layers/import"])
def test_a_zip_bomb_is_refused_before_it_is_written(world, monkeypatch, tmp_path, path):
    """Today: a 1 MB zip holding 1 GB of zeros wrote ~989 MB to /tmp. Here the cap is 1 MB and
    the zip holds 20 MB; nothing of it may reach the temporary directory."""
    client, headers, _, _ = world
    monkeypatch.setenv("WANGGE_MAX_UNCOMPRESSED_BYTES", str(1024 * 1024))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = client.post(path, files={"file": ("g.zip", _bomb(20 * 1024 * 1024))},
                    headers=headers["admin"])
    assert r.status_code == 413, r.text
    assert "uncompressed" in r.text and str(tmp_path) not in r.text
    assert list(tmp_path.iterdir()) == []  # removed, and the bomb was never unpacked


def test_a_zip_with_too_many_members_is_refused(world, monkeypatch):
    client, headers, _, _ = world
    monkeypatch.setenv("WANGGE_MAX_ZIP_MEMBERS", "5")
    r = client.post("/v1/layers/import", files={"file": ("g.zip", _bomb(10, members=6))},
                    headers=headers["admin"])
    assert r.status_code == 413 and "too many files" in r.text


def test_error_text_never_shows_the_temporary_path(world):
    """Today: a zip holding an unreadable .shp answered with '/tmp/tmpXXXX/x/a.shp'."""
    client, headers, _, _ = world
    r = client.post("/v1/planning/import", files={"file": ("g.zip", _bomb(100))},
                    headers=headers["admin"])
    assert 400 <= r.status_code < 500, r.text
    assert "/tmp" not in r.text and "wangge-upload" not in r.text


def test_submitted_geometry_has_a_vertex_cap(world):
    client, headers, grid, (lon, lat) = world
    from api.geojson import MAX_VERTICES

    ring = [[lon + 1e-7 * i, lat] for i in range(MAX_VERTICES + 1)] + [[lon, lat]]
    r = client.post("/v1/planning/reshape",
                    json={"geometries": {grid: {"type": "Polygon", "coordinates": [ring]}}},
                    headers=headers["planner"])
    assert r.status_code == 422 and "vertices" in r.text


# ---------------------------------------------------------------- item 6: photos


@pytest.fixture
def case(world):
    client, headers, _, (lon, lat) = world
    r = client.post("/v1/incidents", json={"category": "rubbish", "lon": lon, "lat": lat},
                    headers=headers["resident"])
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.mark.parametrize("body", [
    b"<html><script>alert(1)</script></html>",
    b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    b"\x89PNG\r\n\x1a\n" + b"0" * 200,  # a PNG signature on junk
])
def test_only_decodable_images_are_accepted(world, case, body):
    """Today: HTML sent as 'image/png; charset=x"><script>' was stored and served as given."""
    client, headers, _, _ = world
    r = client.post(f"/v1/incidents/{case}/photos", content=body,
                    headers={**headers["resident"],
                             "Content-Type": 'image/png; charset=x"><script>'})
    assert r.status_code == 422, r.text
    assert r.json()["problems"][0]["field"] == "photo"


@pytest.mark.parametrize("fmt, ctype", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                        ("WEBP", "image/webp")])
def test_photos_are_served_with_the_decoded_type_nosniff_and_a_csp(world, case, fmt, ctype):
    client, headers, _, _ = world
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, fmt)
    r = client.post(f"/v1/incidents/{case}/photos", content=buf.getvalue(),
                    headers={**headers["resident"], "Content-Type": "text/html"})
    assert r.status_code == 201, r.text
    got = client.get(f"/v1/incidents/{case}/photos/{r.json()['id']}",
                     headers=headers["resident"])
    assert got.status_code == 200 and got.content == buf.getvalue()
    assert got.headers["content-type"] == ctype
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in got.headers["content-security-policy"]



def test_vertex_cap_counts_positions_as_shapely_does():
    """The OGC Part 4 bodies (in any CRS) are capped by ``api.geojson.vertex_count``: it
    counts the positions shapely counts, in a Feature and a FeatureCollection."""
    import shapely
    from shapely.geometry import mapping

    from api.geojson import MAX_VERTICES, check_vertex_cap, vertex_count

    ring = shapely.Point(500000, 2880000).buffer(100, quad_segs=64)
    hole = shapely.Polygon(ring.exterior, [shapely.Point(500000, 2880000).buffer(10).exterior])
    feature = {"type": "Feature", "properties": {"n": [1, 2]}, "geometry": mapping(hole)}
    assert vertex_count(feature) == shapely.get_num_coordinates(hole)
    fc = {"type": "FeatureCollection", "features": [feature, feature]}
    assert vertex_count(fc) == 2 * shapely.get_num_coordinates(hole)
    big = shapely.LineString([(i, i) for i in range(MAX_VERTICES + 1)])
    with pytest.raises(ValueError, match="vertices"):
        check_vertex_cap({"type": "Feature", "geometry": mapping(big)})
