"""Faults: the database restarts during a burst of reports; nothing acknowledged is lost.

A private cluster (its own state dir) so that the shared test cluster is never touched; the
service runs under uvicorn in a subprocess and is NOT restarted.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from shapely import Point
from sqlalchemy import text

from bench.common import uvicorn_server
from geo.core import embedded
from geo.core.db import make_engine, migrate
from geo.core.embedded import free_port
from geo.core.settings import DatabaseSettings
from geo.data.store import write_layers
from geo.samples.synth import generate_city

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def private_cluster():
    if os.environ.get("WANGGE_DATABASE_URL"):
        pytest.skip("needs the embedded cluster to restart it")
    state = Path("/tmp") / f"wangge-fault-{os.getpid()}"
    settings = DatabaseSettings(state_dir=state, db_port=free_port())
    embedded.start(settings)
    url = embedded.url(settings)
    migrate(url)
    city = generate_city(grids=12, buildings=120, stations=4, seed=7)
    eng = make_engine(url, pool_size=2)
    with eng.begin() as conn:
        write_layers(conn, city)
    yield settings, url, city
    eng.dispose()
    embedded.stop(settings, mode="immediate")
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def service(private_cluster):
    settings, url, city = private_cluster
    env = {**os.environ, "WANGGE_DATABASE_URL": url, "WANGGE_ENFORCE_ACCESS": "false"}
    with uvicorn_server(env, start_seconds=60) as base:
        yield base


def _points_inside(city, n: int, seed: int) -> list[tuple[float, float]]:
    """Points well inside grids (shapely, independent of the service)."""
    rng = random.Random(seed)
    utm = int(city["district"].metric_srid.iloc[0])
    grids = city["grid"].to_crs(utm).geometry.buffer(-30).to_crs(4326)
    pts = []
    while len(pts) < n:
        g = grids.iloc[rng.randrange(len(grids))]
        minx, miny, maxx, maxy = g.bounds
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if g.contains(Point(x, y)):
            pts.append((x, y))
    return pts


def test_restart_during_a_burst_loses_no_acknowledged_report(private_cluster, service):
    settings, url, city = private_cluster
    points = _points_inside(city, 4000, seed=1)
    acked: dict[str, int] = {}
    outcomes: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(10**9))

    def worker() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                i = next(counter)
                lon, lat = points[i % len(points)]
                tag = f"fault-{uuid.uuid4().hex}"
                body = {"category": ["rubbish", "snow_ice", "noise", "parking"][i % 4],
                        "lon": lon, "lat": lat, "description": tag}
                try:
                    r = client.post(f"{service}/v1/incidents", json=body)
                except httpx.HTTPError:
                    with lock:
                        outcomes.append((0, None))
                    continue
                with lock:
                    outcomes.append((r.status_code, r.headers.get("retry-after")))
                    if r.status_code == 201:
                        acked[tag] = r.json()["id"]
                if r.status_code == 503:
                    time.sleep(0.05)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    before_restart = len(acked)
    embedded.stop(settings, mode="fast")
    time.sleep(1.5)
    embedded.start(settings)
    time.sleep(3.0)
    stop.set()
    for t in threads:
        t.join()

    codes = [c for c, _ in outcomes]
    assert before_restart > 0, "no report was acknowledged before the restart"
    assert 503 in codes, "no request saw the outage"
    assert all(ra for c, ra in outcomes if c == 503), "a 503 without Retry-After"
    assert not [c for c in codes if c >= 500 and c != 503], f"other server errors: {set(codes)}"
    # the service recovered by itself: reports after the restart were acknowledged
    assert len(acked) > before_restart

    eng = make_engine(url, pool_size=1)
    with eng.connect() as conn:
        rows = conn.execute(
            text("SELECT description, id FROM incident WHERE description LIKE 'fault-%'")
        ).all()
    eng.dispose()
    stored: dict[str, list[int]] = {}
    for desc, iid in rows:
        stored.setdefault(desc, []).append(iid)
    assert all(len(ids) == 1 for ids in stored.values()), "a report was stored twice"
    missing = [tag for tag in acked if tag not in stored]
    assert missing == []
    assert all(stored[tag] == [iid] for tag, iid in acked.items())
