"""HTTP routes for circles."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
