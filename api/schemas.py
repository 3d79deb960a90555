"""Response shapes shared by the routers: RFC 7946 GeoJSON (lon, lat in WGS 84).

``FeatureCollection[P]`` documents a collection whose features carry properties ``P`` (a
pydantic model), so that ``/docs`` shows what each layer's features hold.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

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


class AnyProperties(BaseModel, extra="allow"):
    """Properties that vary by layer (the layer's columns)."""
