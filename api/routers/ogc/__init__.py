"""OGC API routes: Features (Parts 1-4) and Tiles, under ``/ogc``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.routers.ogc import features, tiles

router = APIRouter()
router.include_router(tiles.router)
router.include_router(features.router)


def on_startup(app: Any) -> None:
    tiles.on_startup(app)


def install(app: Any) -> None:
    """Cached tiles answered before routing (``tiles.TileHits``)."""
    tiles.install(app)
