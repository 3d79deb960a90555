"""Response shapes shared by the routers: RFC 7946 GeoJSON (lon, lat in WGS 84).

``FeatureCollection[P]`` documents a collection whose features carry properties ``P`` (a
pydantic model), so that ``/docs`` shows what each layer's features hold.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

import orjson
from fastapi import Response
from pydantic import BaseModel, Field

P = TypeVar("P", bound=BaseModel)


class Geometry(BaseModel):
    """An RFC 7946 geometry: Point, LineString, Polygon, Multi* (lon, lat in WGS 84)."""

    type: str = Field(description="Point, LineString, Polygon, MultiPolygon, ...")
    coordinates: Any = Field(description="Nested [lon, lat] positions (WGS 84 degrees).")


class Feature(BaseModel, Generic[P]):
    type: Literal["Feature"] = "Feature"
    id: int | str | None = None
    geometry: Geometry | None
    properties: P


class FeatureCollection(BaseModel, Generic[P]):
    """An RFC 7946 FeatureCollection (lon, lat in WGS 84)."""

    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[Feature[P]]


class FeaturePage(FeatureCollection[P], Generic[P]):
    """One page of an RFC 7946 FeatureCollection, paged like every list (``api.paging``)."""

    total: int = Field(description="Features matching the query, on every page.")
    offset: int = Field(description="Index of this page's first feature.")
    limit: int = Field(description="Most features a page holds.")
    links: list[dict[str, str]] = Field(description="self, and next/prev when there are more.")


class AnyProperties(BaseModel, extra="allow"):
    """Properties that vary by layer (the layer's columns)."""


class GeoJSONAnswer(Response):
    """A FeatureCollection sent as it comes from PostGIS or geopandas (a dict, or JSON text
    already), serialized by orjson. The route's ``response_model`` documents the shape in /docs;
    validating 10^5 features one by one against it took 8x as long as sending them (16 s
    against 2 s on the shared machine), so the big collections skip it. A ``str`` is sent as is.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, str):
            return content.encode("utf-8")
        return orjson.dumps(content, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY)


def _plain(value: Any) -> Any:
    """What orjson does not know: decimals (PostgreSQL numeric) as floats."""
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
