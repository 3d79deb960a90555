"""GET /v1/layers/{layer} (GeoJSON) and POST /v1/layers/import (multipart), real database."""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from shapely.geometry import box, shape
from sqlalchemy import text

from api.main import create_app
from api.routers import layers as layers_router
from geo.auth.service import AuthSettings, create_user
from geo.core.db import make_engine
from geo.data.io import import_file

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "shapefiles"
sys.path.insert(0, str(SAMPLES))
from make_samples import X0, XM, Y1, YM  # noqa: E402

AUTH = AuthSettings(jwt_secret="layers-test-" + "x" * 32)


@pytest.fixture(scope="module")
def client(fresh_database):
    eng = make_engine(fresh_database(), pool_size=2)
    with eng.begin() as conn:
        import_file(conn, SAMPLES / "sample_city.gpkg")
        create_user(conn, "admin", "admin password", "admin", settings=AUTH)
    app = create_app(engine=eng, auth_settings=AUTH)
    with TestClient(app) as tc:
        r = tc.post("/v1/auth/token", data={"username": "admin", "password": "admin password"})
        tc.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        tc.engine = eng
        yield tc
    eng.dispose()


def area_rows(c) -> int:
    with c.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM area")).scalar()


def test_get_layer_geojson_with_bbox_and_limit(client) -> None:
    r = client.get("/v1/layers/grid")
    assert r.status_code == 200
    fc = r.json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 4
    layers_router.FeatureCollection.model_validate(fc)  # sent unvalidated; matches its docs
    f0 = fc["features"][0]
    assert f0["properties"]["code"] == "350104001001001"
    assert shape(f0["geometry"]).equals(box(X0, YM, XM, Y1))  # lon, lat order
    # bbox around the east half only touches the east grids (and the shared edge's west ones)
    r = client.get("/v1/layers/building", params={"bbox": "119.305,26.03,119.32,26.07"})
    assert {f["properties"]["code"] for f in r.json()["features"]} == {"B3", "B4"}
    assert len(client.get("/v1/layers/grid", params={"limit": 2}).json()["features"]) == 2


def test_get_layer_errors(client) -> None:
    assert client.get("/v1/layers/nonsense").status_code == 404
    r = client.get("/v1/layers/grid", params={"bbox": "1,2,3"})
    assert r.status_code == 422 and r.json()["problems"][0]["field"] == "bbox"


def test_import_refused_names_feature_and_db_unchanged(client) -> None:
    before = area_rows(client)
    data = (SAMPLES / "grid_bowtie.geojson").read_bytes()
    r = client.post("/v1/layers/import", files={"file": ("grid.geojson", data)})
    assert r.status_code == 422
    (p,) = r.json()["problems"]
    assert p["field"] == "geometry" and "350104001001001" in p["feature"]
    assert "Self-intersection" in p["reason"]
    assert area_rows(client) == before


def test_import_zipped_shapefile_without_crs_refused(client) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in (SAMPLES / "no_crs").iterdir():
            z.write(f, f.name)
    r = client.post("/v1/layers/import", files={"file": ("grid.zip", buf.getvalue())})
    assert r.status_code == 422 and r.json()["error"] == "UnknownCRS"


def test_import_repair_accepted(client) -> None:
    before = area_rows(client)
    data = (SAMPLES / "grid_bowtie.geojson").read_bytes()
    r = client.post("/v1/layers/import", files={"file": ("grid.geojson", data)},
                    data={"repair": "true"})
    assert r.status_code == 200, r.text
    assert r.json()["layers"] == ["grid"] and r.json()["generation"] >= 2
    assert area_rows(client) == before + 4  # four new grid versions; old ones closed
    # The first generation still serves the original (unrepaired) box.
    old = client.get("/v1/layers/grid", params={"generation": 1}).json()["features"][0]
    assert shape(old["geometry"]).equals(box(X0, YM, XM, Y1))
    new = client.get("/v1/layers/grid").json()["features"][0]
    assert not shape(new["geometry"]).equals(box(X0, YM, XM, Y1))
