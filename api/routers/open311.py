"""HTTP routes for open311."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
