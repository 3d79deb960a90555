"""The event loop never waits on the database (issue 15 item 11).

A second connection holds an ACCESS EXCLUSIVE lock on the table a request needs (a stalled
database, as far as that request can tell) and releases it after ``HOLD_S``. Meanwhile
``/v1/ping`` (no database) must be answered: the ping's answer has to arrive *before* the lock is
released. A handler that ran its queries on the event loop would block the loop for the whole
hold, so no other answer could arrive until then.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from factories import SCOPED_AREA_SQL
from PIL import Image
from sqlalchemy import text

from api.main import create_app
from geo.auth.service import AuthSettings
from geo.core.db import make_engine

HOLD_S = 2.0


@pytest.fixture(scope="module")
def service(fresh_database):
    eng = make_engine(fresh_database(), pool_size=4)
    with eng.begin() as c:
        c.exec_driver_sql(SCOPED_AREA_SQL)
    app = create_app(engine=eng, auth_settings=AuthSettings(enforce_access=False))
    yield app, eng
    eng.dispose()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _stalled(app, eng, table: str, slow: Callable[[httpx.AsyncClient], object],
             before: Callable[[httpx.AsyncClient], object] | None = None) -> tuple[float, float]:
    """(when the ping was answered, when the lock was released), monotonic seconds."""
    async def run() -> tuple[float, float]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://w",
                                         timeout=30) as c:
                if before is not None:
                    await before(c)
                holder = eng.connect()
                tx = holder.begin()
                holder.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
                released: list[float] = []

                def release() -> None:
                    released.append(time.monotonic())
                    tx.rollback()
                    holder.close()

                timer = threading.Timer(HOLD_S, release)
                timer.start()
                pinged: list[float] = []

                async def ping() -> None:
                    await asyncio.sleep(0.3)  # the slow request is waiting on the lock by now
                    r = await c.get("/v1/ping")
                    assert r.status_code in (200, 204), r.text
                    pinged.append(time.monotonic())

                answers = await asyncio.gather(slow(c), ping())
                timer.join()
                r = answers[0]
                assert isinstance(r, httpx.Response) and r.status_code < 500, r
                return pinged[0], released[0]

    return asyncio.run(run())


def test_photo_upload_does_not_block_the_loop(service):
    app, eng = service

    async def report(c: httpx.AsyncClient) -> None:
        r = await c.post("/v1/incidents", json={"category": "noise", "lon": 119.302,
                                                "lat": 26.05})
        assert r.status_code == 201, r.text
        app.state.test_case = r.json()["id"]

    async def photo(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post(f"/v1/incidents/{app.state.test_case}/photos", content=_png(),
                            headers={"content-type": "image/png"})

    pinged, released = _stalled(app, eng, "incident", photo, before=report)
    assert pinged < released


def test_dated_lookup_does_not_block_the_loop(service):
    app, eng = service

    async def dated(c: httpx.AsyncClient) -> httpx.Response:
        return await c.get("/v1/lookup", params={"lon": 119.302, "lat": 26.05,
                                                 "at": "2026-03-01"})

    pinged, released = _stalled(app, eng, "generation", dated)
    assert pinged < released


def test_batch_rebuild_after_a_grid_change_does_not_block_the_loop(service):
    from geo.lookup import invalidate_index

    app, eng = service

    async def warm(c: httpx.AsyncClient) -> None:
        r = await c.post("/v1/lookup/batch", json=[[119.302, 26.05]])
        assert r.status_code == 200, r.text
        invalidate_index()  # what a grid change does: the next lookup rebuilds

    async def batch(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post("/v1/lookup/batch", json=[[119.302, 26.05]])

    pinged, released = _stalled(app, eng, "lookup_change", batch, before=warm)
    assert pinged < released
