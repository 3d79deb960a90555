"""Many concurrent requests against a small connection pool: all answered, none timing out.

Requests that need a database connection queue for it on the event loop
(``api.dependencies.get_connection``). When they queued inside worker threads instead, the
threads blocked on an exhausted pool starved the requests that held connections of the threads
they needed to finish, and every request waited for the pool timeout, then answered 500.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from sqlalchemy import create_engine

from api.main import create_app
from geo.auth.service import AuthSettings


def test_many_requests_on_a_tiny_pool_all_succeed(fresh_database):
    engine = create_engine(fresh_database(), pool_size=1, max_overflow=1, pool_timeout=3,
                           pool_pre_ping=True)
    app = create_app(engine=engine, auth_settings=AuthSettings(enforce_access=False))

    async def burst() -> tuple[list[int], float]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://wangge") as c:
                t0 = time.perf_counter()
                answers = await asyncio.gather(
                    *(c.get("/v1/incident-categories") for _ in range(120)))
                return [a.status_code for a in answers], time.perf_counter() - t0

    codes, seconds = asyncio.run(burst())
    engine.dispose()
    assert codes == [200] * 120
    assert seconds < 3  # no request waited for the pool timeout
