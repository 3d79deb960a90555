"""HTTP routes for layers."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
