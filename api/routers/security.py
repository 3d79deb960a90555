"""HTTP routes for security."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
