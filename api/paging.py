"""Paging of every list in the HTTP API: ``limit``/``offset`` in, ``total`` and links out.

A ``limit`` past a list's maximum is a 400 naming the field (never a quiet cut); a page carries
the total that matched, and ``next``/``prev`` links when there is more (the query string of the
request, with ``offset`` and ``limit`` replaced).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Query, Request
from pydantic import BaseModel, Field

from geo.core.errors import Problem
from geo.ogc.crs import BadParameter


def check_page(limit: int, offset: int, max_limit: int, *, limit_field: str = "limit",
               offset_field: str = "offset") -> None:
    """Refuse (400) a limit outside 1..``max_limit`` or a negative offset."""
    if not 1 <= limit <= max_limit:
        raise BadParameter(f"{limit_field} out of range", [Problem(
            reason=f"must be between 1 and {max_limit}; page with {offset_field}",
            field=limit_field)])
    if offset < 0:
        raise BadParameter(f"{offset_field} out of range",
                           [Problem(reason="must be >= 0", field=offset_field)])


def page_links(request: Request, start: int, limit: int, total: int,
               params: Callable[[int], dict[str, int]] | None = None) -> list[dict[str, str]]:
    """``self``, and ``next``/``prev`` links for the page of ``limit`` items from index
    ``start``; ``params(start)`` are the query parameters of the page starting there (default
    ``offset`` and ``limit``)."""
    at = params or (lambda s: {"offset": s, "limit": limit})
    links = [{"rel": "self", "href": str(request.url)}]
    if start + limit < total:
        links.append({"rel": "next",
                      "href": str(request.url.include_query_params(**at(start + limit)))})
    if start > 0:
        links.append({"rel": "prev", "href": str(request.url.include_query_params(
            **at(max(0, start - limit))))})
    return links


class Paging:
    """A dependency: ``limit`` (default ``default``, at most ``max_limit``) and ``offset``."""

    def __init__(self, default: int, max_limit: int) -> None:
        self.default, self.max_limit = default, max_limit

    def __call__(
        self,
        limit: int | None = Query(None, description="Most items a page holds (past the "
                                  "maximum is a 400, never a silent cut)."),
        offset: int = Query(0, description="Items to skip (follow the next link)."),
    ) -> tuple[int, int]:
        limit = self.default if limit is None else limit
        check_page(limit, offset, self.max_limit)
        return limit, offset


class Page(BaseModel):
    """One page of a list: the items, the total that matched, and links."""

    items: list[dict[str, Any]] = Field(description="This page's items.")
    total: int = Field(description="Items matching the query, on every page.")
    offset: int = Field(description="Index of this page's first item.")
    limit: int = Field(description="Most items a page holds.")
    links: list[dict[str, str]] = Field(description="self, and next/prev when there are more.")


def feature_page(request: Request, fc: dict[str, Any], limit: int,
                 offset: int) -> dict[str, Any]:
    """A FeatureCollection (with its ``total``) as a page: offset, limit and links added."""
    return {**fc, "offset": offset, "limit": limit,
            "links": page_links(request, offset, limit, fc["total"])}


def page(request: Request, items: list[dict[str, Any]], total: int, limit: int,
         offset: int) -> dict[str, Any]:
    """A ``Page`` answer."""
    return {"items": items, "total": total, "offset": offset, "limit": limit,
            "links": page_links(request, offset, limit, total)}
