"""The application factory: ``uvicorn api.main:create_app --factory``."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine

from api.dependencies import connection_slots
from api.errors import install_error_handlers
from api.policy import document_policy
from api.read_routing import ReadYourWrites
from api.routers import (
    circles,
    console,
    incidents,
    layers,
    lookup,
    maps,
    ogc,
    open311,
    planning,
    planning_history,
    planning_preview,
    security,
)
from api.security import install_security
from geo.auth.accounts import state_dir_secret
from geo.auth.service import AuthSettings
from geo.core.db import make_engine, resolve_read_url, resolve_url
from geo.core.settings import ApiSettings, DatabaseSettings
from geo.incidents import ReportWriter
from geo.scale.listener import start_lookup_listener
from geo.scale.settings import ScaleSettings
from web import pages as web_pages

log = logging.getLogger(__name__)

# Routes are matched one by one in this order (FastAPI's matching is linear and costs ~10 µs a
# route), so the hot paths come first: lookups, then reports. No two routers share a path.
ROUTERS = (lookup, open311, incidents, layers, circles, maps, planning,
           planning_history, planning_preview, security, ogc, console)


def create_app(
    db_settings: DatabaseSettings | None = None,
    api_settings: ApiSettings | None = None,
    *,
    engine: Engine | None = None,
    read_engine: Engine | None = None,
    auth_settings: AuthSettings | None = None,
) -> FastAPI:
    """Build the app. Pass ``engine`` to reuse one (tests); else one is made from settings.
    Read-only work (``api.dependencies.READ_CONNECTION``) goes to ``read_engine`` (a standby;
    tests), else to ``WANGGE_READ_DATABASE_URL`` or the embedded standby when ``engine`` is
    made from settings, else to the primary's engine."""
    db_settings = db_settings or DatabaseSettings()
    api_settings = api_settings or ApiSettings()
    auth_settings = auth_settings or AuthSettings()
    if not auth_settings.jwt_secret:  # one secret for every worker: kept in the state directory
        auth_settings = auth_settings.model_copy(
            update={"jwt_secret": state_dir_secret(db_settings.state_dir)})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owns_engine = engine is None
        url = None if engine else resolve_url(db_settings)
        app.state.engine = engine or make_engine(url, pool_size=db_settings.pool_size)
        # read-only work may go to a hot standby (WANGGE_READ_DATABASE_URL); writes never do
        read_url = resolve_read_url(db_settings) if url and read_engine is None else None
        owns_read = read_url is not None and read_url != url
        app.state.read_engine = read_engine or app.state.engine
        if read_url is not None and owns_read:
            app.state.read_engine = make_engine(read_url, pool_size=db_settings.pool_size)
        for module in ROUTERS:
            startup = getattr(module, "on_startup", None)
            if startup:
                startup(app)
        # Everything alive now (routes, models, the warmed lookup index) leaves the cyclic
        # collector's sight: full collections stop walking it, which made parsing a 200k-point
        # batch ~8x slower and put collector pauses into the lookup's p99.
        gc.collect()
        gc.freeze()
        # Reports are filed by a few writer threads of their own, each filing every report
        # waiting in one transaction (one commit, one pooled connection, no thread hop per
        # report); at most half the pool, so that other routes always find a connection.
        incident_settings = app.state.incident_settings
        writers = max(1, min(incident_settings.report_writers, db_settings.pool_size // 2))
        app.state.report_writer = ReportWriter(
            app.state.engine, incident_settings, threads=writers,
            max_batch=incident_settings.report_batch_max)
        app.state.connection_slots = connection_slots(app.state.engine, reserved=writers + 2)
        # a standby's pool has no report writers: two connections kept for the lookup's and
        # the tiles' background refreshes
        app.state.read_connection_slots = app.state.connection_slots \
            if app.state.read_engine is app.state.engine \
            else connection_slots(app.state.read_engine, reserved=2)
        app.state.rate_limiter.start(app.state.engine)  # rate counts shared between workers
        # LISTEN on the primary (a standby gets no NOTIFY); the index is built from the standby
        listener = start_lookup_listener(app.state.engine, app.state.read_engine) \
            if ScaleSettings().lookup_listen else None
        yield
        for module in ROUTERS:  # e.g. the analysis runner of this engine stops with the app
            shutdown = getattr(module, "on_shutdown", None)
            if shutdown:
                shutdown(app)
        if listener:
            listener.stop()
        app.state.rate_limiter.close()
        app.state.report_writer.close()
        if owns_read:
            app.state.read_engine.dispose()
        if owns_engine:
            app.state.engine.dispose()

    app = FastAPI(
        title="wangge 网格",
        summary="Grid-based community governance: lookup, service circles, incidents, planning.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc: web.pages, from the installed assets (no CDN)
        redoc_url=None,
    )
    app.state.db_settings = db_settings
    app.state.api_settings = api_settings
    install_error_handlers(app)
    ogc.install(app)  # first: the innermost layer, inside the request id and body limits
    app.add_middleware(ReadYourWrites)  # a caller's reads after its write: the primary
    install_security(app, api_settings.max_body_bytes, auth_settings)
    open311.install_cors(app)
    for module in ROUTERS:
        app.include_router(module.router)
    app.include_router(web_pages.router)
    web_pages.install(app)
    document_policy(app)
    return app
