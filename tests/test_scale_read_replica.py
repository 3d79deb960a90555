"""Read-only work served by a read database (issue 21 item 2): ``READ_CONNECTION``.

(a) The app's read engine is a *different* database, a copy of the primary (``CREATE DATABASE
... TEMPLATE``) in which one grid is renamed and one more incident filed: OGC items and tiles,
maps, statistics, layers and the lookup answer from the copy; a report filed through the API
lands in the primary only, and its caller's next reads go to the primary (read-your-writes).
(b) A real streaming hot standby (``geo.core.replica``) with the API started from settings
(``WANGGE_READ_DATABASE_URL`` = the standby): OGC items, a tile and statistics come from it; a
report filed through the API is not seen by other callers while the standby's replay is
paused, and is once replay resumes; a grid renamed on the primary reaches the lookup index
(built from the standby) through the listener only once the standby has replayed it; the
standby stopped under the API, reads go to the primary. With ``remote_apply`` a report is
acknowledged only once the paused standby has applied it, and then any caller reads it there.
Expectations are SQL on each database, never the API.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime
from types import SimpleNamespace

import anyio
import morecantile
import pytest
from anyio import CapacityLimiter, to_thread
from factories import G11, seeded_cluster
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from api.dependencies import read_connection
from api.main import create_app
from geo.auth.service import AuthSettings
from geo.core import embedded, replica
from geo.core.db import make_engine
from geo.data.store import write_layers
from geo.incidents import IncidentSettings, report
from geo.samples.synth import generate_city

AUTH = AuthSettings(jwt_secret="replica-reads-" + "x" * 32, enforce_access=False)
TMS = morecantile.tms.get("WebMercatorQuad")
A, B = {"X-Forwarded-For": "10.0.0.1"}, {"X-Forwarded-For": "10.0.0.2"}  # two callers


def _one(eng, sql: str, **params):
    with eng.connect() as c:
        return c.execute(text(sql), params).one()


def _per_grid(eng) -> dict[str, int]:
    with eng.connect() as c:
        return dict(c.execute(text(
            "SELECT grid_code, count(*) FROM incident GROUP BY grid_code")).all())


def _tile(lon: float, lat: float, z: int = 15) -> str:
    t = TMS.tile(lon, lat, z)
    return f"{z}/{t.y}/{t.x}"


# ------------------------------------------------------------------ (a) a copy as the reader


@pytest.fixture(scope="module")
def pair(fresh_database):
    url = fresh_database()
    eng = make_engine(url)
    settings = IncidentSettings()
    with eng.begin() as c:
        write_layers(c, generate_city(grids=8, buildings=80, stations=2, seed=11, team=False),
                     kind="synth")
        pts = c.execute(text("SELECT ST_X(location), ST_Y(location) FROM building "
                             "ORDER BY code LIMIT 4")).all()
        for x, y in pts:
            report(c, category="rubbish", lon=x, lat=y, settings=settings, actor="seed")
    eng.dispose()  # a template now: nobody may stay connected
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    copy_name = f"wangge_r5_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{copy_name}" TEMPLATE "{make_url(url).database}"'))
    copy_url = make_url(url).set(database=copy_name).render_as_string(hide_password=False)
    primary, copy = make_engine(url), make_engine(copy_url)
    grid, lon, lat = _one(primary, "SELECT i.grid_code, ST_X(i.location), ST_Y(i.location) "
                          "FROM incident i ORDER BY id LIMIT 1")
    token = f"R5COPY{uuid.uuid4().hex[:8]}"
    with copy.begin() as c:  # only in the copy: a new name, one more incident
        c.execute(text("UPDATE area SET name = :n WHERE code = :g"), {"n": token, "g": grid})
        report(c, category="noise", lon=lon, lat=lat, settings=settings, actor="copy-only")
    with primary.begin() as c:  # the primary's next case ids are none of the copy's
        c.execute(text("SELECT setval(pg_get_serial_sequence('incident', 'id'), 1000)"))
    app = create_app(engine=primary, read_engine=copy, auth_settings=AUTH)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield SimpleNamespace(client=client, app=app, primary=primary, copy=copy, grid=grid,
                              lon=lon, lat=lat, token=token, copy_name=copy_name)
    primary.dispose()
    copy.dispose()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{copy_name}" WITH (FORCE)'))
    admin.dispose()


def test_read_connection_is_a_read_only_transaction_on_the_read_engine(pair) -> None:
    state = SimpleNamespace(engine=pair.primary, read_engine=pair.copy,
                            connection_slots=CapacityLimiter(2),
                            read_connection_slots=CapacityLimiter(2))

    async def probe() -> tuple[str, str]:
        async with read_connection(state) as c:
            def run() -> tuple[str, str]:
                return (c.execute(text("SHOW transaction_read_only")).scalar(),
                        c.execute(text("SELECT current_database()")).scalar())
            return await to_thread.run_sync(run)

    assert anyio.run(probe) == ("on", pair.copy_name)

    async def write() -> None:
        async with read_connection(state) as c:
            await to_thread.run_sync(lambda: c.execute(text("UPDATE area SET name = name")))

    with pytest.raises(DBAPIError, match="read-only transaction"):
        anyio.run(write)


def test_reads_come_from_the_read_database(pair) -> None:
    client, token, grid = pair.client, pair.token, pair.grid
    primary_name = _one(pair.primary, "SELECT name FROM area WHERE code = :g", g=grid)[0]
    assert primary_name != token  # the two databases really differ
    copy_counts, primary_counts = _per_grid(pair.copy), _per_grid(pair.primary)
    assert copy_counts != primary_counts

    item = client.get(f"/ogc/collections/grids/items/{grid}", headers=B)
    assert item.status_code == 200, item.text
    assert item.json()["properties"]["name"] == token
    page = client.get("/ogc/collections/grids/items", params={"limit": 100}, headers=B).json()
    assert {f["properties"]["code"]: f["properties"]["name"]
            for f in page["features"]}[grid] == token
    tile = client.get(f"/ogc/collections/grids/tiles/WebMercatorQuad/"
                      f"{_tile(pair.lon, pair.lat)}", headers=B)
    assert tile.status_code == 200 and token.encode() in tile.content
    page_html = client.get("/maps/grids", headers=B)
    assert page_html.status_code == 200 and token in page_html.text
    layer = client.get("/v1/layers/grid", params={"limit": 1000}, headers=B).json()
    assert {f["properties"]["code"]: f["properties"]["name"]
            for f in layer["features"]}[grid] == token
    found = client.get("/v1/lookup", params={"lon": pair.lon, "lat": pair.lat}, headers=B)
    assert found.status_code == 200 and found.json()["grid"]["name"] == token

    stats = client.get("/v1/incidents/stats", params={"by": "grid", "format": "json"},
                       headers=B).json()
    assert {s["code"]: s["incidents"] for s in stats} == copy_counts
    rollup = client.get("/v1/incidents/rollup", headers=B).json()
    assert sum(d["incidents"] for d in rollup["district"]) == sum(copy_counts.values())
    points = client.get("/v1/console/points", headers=B).json()
    with pair.copy.connect() as c:
        open_ids = {r[0] for r in c.execute(text("SELECT id FROM incident WHERE is_open"))}
    assert {r[0] for r in points["rows"]} == open_ids


def test_a_report_lands_in_the_primary_and_its_caller_reads_the_primary(pair) -> None:
    client, grid = pair.client, pair.grid
    before_primary, before_copy = _per_grid(pair.primary), _per_grid(pair.copy)
    r = client.post("/v1/incidents", headers=A, json={
        "category": "rubbish", "lon": pair.lon, "lat": pair.lat, "description": "replica"})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert _per_grid(pair.copy) == before_copy  # nothing written to the read database
    after = _per_grid(pair.primary)
    assert after[grid] == before_primary[grid] + 1
    assert _one(pair.primary, "SELECT description FROM incident WHERE id = :i",
                i=rid)[0] == "replica"

    # the writer reads the primary for a moment (its own report is there); others the copy
    primary_name = _one(pair.primary, "SELECT name FROM area WHERE code = :g", g=grid)[0]
    own = client.get(f"/ogc/collections/grids/items/{grid}", headers=A).json()
    assert own["properties"]["name"] == primary_name
    mine = client.get(f"/ogc/collections/incidents/items/{rid}", headers=A)
    assert mine.status_code == 200, mine.text
    other = client.get(f"/ogc/collections/grids/items/{grid}", headers=B).json()
    assert other["properties"]["name"] == pair.token
    assert client.get(f"/ogc/collections/incidents/items/{rid}", headers=B).status_code == 404
    time.sleep(2.2)  # ScaleSettings.read_after_write_s (2 s) later: the copy again
    again = client.get(f"/ogc/collections/grids/items/{grid}", headers=A).json()
    assert again["properties"]["name"] == pair.token


# ------------------------------------------------------------------ (b) a real hot standby


@pytest.fixture(scope="module")
def standby():
    with seeded_cluster("r5") as settings:
        replica.create_standby(settings, synchronous=False)
        yield settings


def _api(standby):
    primary_url, standby_url = embedded.url(standby), replica.standby_url(standby)
    assert standby_url is not None and standby_url != primary_url
    return create_app(standby.model_copy(update={
        "database_url": primary_url, "read_database_url": standby_url}), auth_settings=AUTH)


def test_remote_apply_acknowledges_a_report_once_the_standby_shows_it(standby) -> None:
    replica.set_synchronous(standby, True, apply=True)
    sb = make_engine(replica.standby_url(standby))
    try:
        assert _one(sb, "SELECT pg_is_in_recovery()")[0] is True
        with TestClient(_api(standby), raise_server_exceptions=False) as client:
            assert _one(client.app.state.engine, "SHOW synchronous_commit")[0] == "remote_apply"
            with sb.connect() as c:
                c.execute(text("SELECT pg_wal_replay_pause()"))
            answers: list = []
            post = threading.Thread(target=lambda: answers.append(client.post(
                "/v1/incidents", headers=A, json={"category": "noise", "lon": 119.31,
                                                  "lat": 26.01, "description": "apply"})))
            try:
                post.start()
                post.join(1.5)
                assert post.is_alive() and not answers  # not acknowledged: not applied there
            finally:
                with sb.connect() as c:
                    c.execute(text("SELECT pg_wal_replay_resume()"))
            post.join(20)
            assert answers and answers[0].status_code == 201, answers
            rid = answers[0].json()["id"]
            # acknowledged, so another caller (another worker, for all it knows) reads it there
            assert client.get(f"/ogc/collections/incidents/items/{rid}",
                              headers=B).status_code == 200
    finally:
        replica.set_synchronous(standby, False)
        sb.dispose()


def test_the_api_reads_from_a_streaming_standby(standby, monkeypatch) -> None:
    monkeypatch.setenv("WANGGE_LOOKUP_LISTEN", "true")  # grid changes reach the index by NOTIFY
    monkeypatch.setenv("WANGGE_CHECK_INTERVAL_MS", "600000")  # and not by the version poll
    app = _api(standby)
    standby_url = replica.standby_url(standby)
    sb = make_engine(standby_url)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            assert app.state.read_engine.url.port == make_url(standby_url).port
            with sb.connect() as c:
                assert c.execute(text("SELECT pg_is_in_recovery()")).scalar() is True
                grids = {r[0]: r[1] for r in c.execute(text(
                    "SELECT code, name FROM area_current WHERE level = 'grid'"))}
                lon, lat = c.execute(text(
                    "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p "
                    "FROM area WHERE code = :g) s"), {"g": G11}).one()
            page = client.get("/ogc/collections/grids/items", headers=B).json()
            assert {f["properties"]["code"]: f["properties"]["name"]
                    for f in page["features"]} == grids
            tile = client.get(f"/ogc/collections/grids/tiles/WebMercatorQuad/"
                              f"{_tile(lon, lat, 14)}", headers=B)
            assert tile.status_code == 200 and G11.encode() in tile.content

            def stats() -> dict[str, int]:
                got = client.get("/v1/incidents/stats", params={"format": "json"}, headers=B)
                assert got.status_code == 200, got.text
                return {s["code"]: s["incidents"] for s in got.json()}

            assert stats() == _per_grid(sb)
            before = _per_grid(sb).get(G11, 0)
            with sb.connect() as c:  # the standby stops replaying: its answers stand still
                c.execute(text("SELECT pg_wal_replay_pause()"))
            try:
                r = client.post("/v1/incidents", headers=A, json={
                    "category": "rubbish", "lon": lon, "lat": lat, "description": "standby"})
                assert r.status_code == 201, r.text
                rid = r.json()["id"]
                assert _one(app.state.engine, "SELECT grid_code FROM incident WHERE id = :i",
                            i=rid)[0] == G11  # filed on the primary
                assert stats().get(G11, 0) == before  # another caller: the standby, not yet
                assert client.get(f"/ogc/collections/incidents/items/{rid}",
                                  headers=B).status_code == 404
                assert client.get(f"/ogc/collections/incidents/items/{rid}",
                                  headers=A).status_code == 200  # its writer: the primary
                # the command map's refresh: the next `since` is what the standby has
                # replayed, not the clock, so the case not yet replayed is asked for again
                points = client.get("/v1/console/points", headers=B).json()
                assert rid not in {row[0] for row in points["rows"]}
                updated = _one(app.state.engine,
                               "SELECT updated_at FROM incident WHERE id = :i", i=rid)[0]
                assert datetime.fromisoformat(points["now"]) < updated
            finally:
                with sb.connect() as c:
                    c.execute(text("SELECT pg_wal_replay_resume()"))
            deadline = time.monotonic() + 20
            while client.get(f"/ogc/collections/incidents/items/{rid}",
                             headers=B).status_code != 200:
                assert time.monotonic() < deadline, "the report never reached the standby"
                time.sleep(0.05)
            assert stats() == _per_grid(sb) and _per_grid(sb)[G11] == before + 1
            later = client.get("/v1/console/points", params={"since": points["now"]},
                               headers=B).json()
            assert rid in {row[0] for row in later["rows"]}

            def grid_name() -> str:
                got = client.get("/v1/lookup", params={"lon": lon, "lat": lat}, headers=B)
                assert got.status_code == 200, got.text
                return str(got.json()["grid"]["name"])

            # a grid renamed on the primary: the listener hears it there, waits until the
            # standby has replayed it, and only then rebuilds the index from the standby
            old, new = grid_name(), f"R5-{uuid.uuid4().hex[:6]}"
            assert old == grids[G11]
            with sb.connect() as c:
                c.execute(text("SELECT pg_wal_replay_pause()"))
            try:
                with app.state.engine.begin() as c:
                    c.execute(text("UPDATE area SET name = :n WHERE code = :g"),
                              {"n": new, "g": G11})
                time.sleep(1.0)
                assert grid_name() == old  # not replayed yet: the old index answers
            finally:
                with sb.connect() as c:
                    c.execute(text("SELECT pg_wal_replay_resume()"))
            deadline = time.monotonic() + 15
            while grid_name() != new:
                assert time.monotonic() < deadline, "the index never saw the renamed grid"
                time.sleep(0.05)
            # the standby is lost (or promoted away): read-only work goes to the primary
            embedded.stop(replica.standby_settings(standby), mode="immediate")
            r = client.post("/v1/incidents", headers=A, json={
                "category": "noise", "lon": lon, "lat": lat, "description": "no standby"})
            assert r.status_code == 201, r.text
            assert stats() == _per_grid(app.state.engine)
            assert _per_grid(app.state.engine)[G11] == before + 2
            assert client.get("/ogc/collections/grids/items", headers=B).status_code == 200
    finally:
        sb.dispose()
