"""HTTP routes for lookup."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
